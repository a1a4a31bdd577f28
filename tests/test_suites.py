import json

import pytest

from trajectories.hub import parse_branches
from trajectories.suites import (
    PYTHIA,
    PYTHIA_STEPS,
    LocalSuite,
    SuiteError,
    canonical_pythia_name,
    get_suite,
    resolve_checkpoints,
    select_steps,
)


def test_pythia_schedule_and_models():
    assert len(PYTHIA_STEPS) == 154
    assert PYTHIA_STEPS[:11] == (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    assert PYTHIA_STEPS[11] == 1000 and PYTHIA_STEPS[-1] == 143_000
    assert "14m-deduped" not in PYTHIA.models and "70m-deduped" in PYTHIA.models
    assert "410m-seed9" in PYTHIA.models and "1b-seed1" not in PYTHIA.models
    last = resolve_checkpoints(PYTHIA, ["160m-deduped"], "final")[0]
    assert (last.step, last.revision, last.model.repo) == (143_000, "step143000", "EleutherAI/pythia-160m-deduped")
    assert last.tokens == 143_000 * 2_097_152
    assert PYTHIA.models["1b"].d_head == 256 and PYTHIA.models["12b"].layers == 36


@pytest.mark.parametrize("alias, name", [
    ("19M", "70m"), ("19M Dedup", "70m-deduped"), ("125M", "160m"), ("1.3B", "1.4b"), ("13B", "12b"),
    ("pythia-160m", "160m"), ("EleutherAI/pythia-2.8b-deduped", "2.8b-deduped"), ("350M-deduped", "410m-deduped"),
])
def test_pythia_aliases(alias, name):
    assert canonical_pythia_name(alias) == name
    assert PYTHIA.model(alias).name == name


def test_parse_branches_real_names():
    pythia = ["main", "step0", "step1", "step512", "step143000", "step1000"]
    assert [b.step for b in parse_branches(pythia)] == [0, 1, 512, 1000, 143000]
    olmo = ["main", "step1000-tokens4B", "step556000-tokens2460B", "step20000-tokens84B"]
    parsed = parse_branches(olmo)
    assert [(b.step, b.tokens) for b in parsed] == [(1000, 4 * 10**9), (20000, 84 * 10**9), (556000, 2460 * 10**9)]
    olmo2 = ["stage2-ingredient1-step1000-tokens5B", "stage1-step928646-tokens3896B", "stage1-step0-tokens0B",
             "stage2-step11931-tokens50B"]
    parsed = parse_branches(olmo2)
    assert [(b.stage, b.step, b.name) for b in parsed] == [
        (1, 0, "stage1-step0-tokens0B"), (1, 928646, "stage1-step928646-tokens3896B"),
        (2, 11931, "stage2-step11931-tokens50B"),
    ]


def test_select_steps():
    assert select_steps("log", list(PYTHIA_STEPS), "m") == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert select_steps("final", [5, 1, 3], "m") == [5]
    assert select_steps("every:20000", list(PYTHIA_STEPS), "m") == [0, *range(20000, 143000, 20000)]
    assert select_steps("1000:5000:2000", list(PYTHIA_STEPS), "m") == [1000, 3000, 5000]
    assert select_steps("512, 0", list(PYTHIA_STEPS), "m") == [0, 512]
    with pytest.raises(SuiteError, match=r"has no step 3, 7; it has steps 0, 1, 2, 4"):
        select_steps("3,7", list(PYTHIA_STEPS), "m")
    for bad in ["sometimes", "every:0", "every:x"]:
        with pytest.raises(SuiteError, match="steps"):
            select_steps(bad, [0, 1], "m")


def test_local_suite(tiny_suite):
    suite = get_suite(f"local:{tiny_suite}")
    assert sorted(suite.models) == ["small", "tiny"]
    ckpts = resolve_checkpoints(suite, ["small"], "all")
    assert [(c.step, c.tokens) for c in ckpts] == [(0, 0), (1, 1024), (2, 2048)]
    assert ckpts[1].path == str(tiny_suite / "small" / "step1") and ckpts[1].revision is None
    assert suite.models["small"].params > suite.models["tiny"].params


def test_local_suite_without_metadata(tmp_path):
    (tmp_path / "m-deduped" / "step10").mkdir(parents=True)
    (tmp_path / "m" / "step3").mkdir(parents=True)
    suite = LocalSuite(tmp_path)
    assert suite.models["m-deduped"].deduped and suite.models["m-deduped"].size == "m"
    assert resolve_checkpoints(suite, None, "all")[0].tokens is None


def test_bad_suites_and_models(tmp_path):
    with pytest.raises(SuiteError, match="valid suites: pythia, hf:<org/repo>, local:<dir>"):
        get_suite("pythai")
    with pytest.raises(SuiteError, match="did you mean 160m"):
        PYTHIA.model("16m0")
    with pytest.raises(SuiteError, match="does not exist"):
        get_suite(f"local:{tmp_path / 'nowhere'}")
    with pytest.raises(SuiteError, match="no <model>/step<N>/"):
        get_suite(f"local:{tmp_path}")
    (tmp_path / "m" / "step0").mkdir(parents=True)
    (tmp_path / "suite.json").write_text("{oops")
    with pytest.raises(SuiteError, match="suite.json: not valid JSON"):
        get_suite(f"local:{tmp_path}")
    (tmp_path / "suite.json").write_text(json.dumps({"tokens_per_step": 8}))
    with pytest.raises(SuiteError, match="has no model 'x'.*Models: m"):
        resolve_checkpoints(get_suite(f"local:{tmp_path}"), ["x"])
