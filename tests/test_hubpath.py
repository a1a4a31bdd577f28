"""The hub path end to end, through the local hub (tests/hubserver.py) and the real huggingface_hub client: the audit
from metadata, sweeps from `hf:` and `pythia` suites (download, prefetch, eviction, duplicates, resume, status,
collect, offline), and every way a checkpoint can fail.

`org/tiny` is Pythia-like: branches step0..step5, steps 0, 1 and 2 byte-identical; `.bin` weights on steps 0, 1, 2
and 4, safetensors on 3 and 5. The same folders form a `local:` suite, the reference its results must equal.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import (
    BLIMP_DIR,
    LIMIT,
    TEST_PARADIGMS,
    TINY_MODELS,
    Shape,
    build_tiny_suite,
    local_sweep,
)
from tests.hubserver import HubServer, use_hub, use_offline
from trajectories.cli import main
from trajectories.store import Store

REPO = "org/tiny"
FAULTY = "org/faulty"
GROUP = (0, 1, 2)
WEIGHTS = (".bin", ".safetensors")


def to_bin(folder: Path) -> None:
    """Old Pythia branches hold pytorch_model.bin (transformers 5 always writes safetensors)."""
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def edit_weights(folder: Path, edit) -> None:
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """`local`: the local suite behind org/tiny; `tiny`, `faulty`: the files of the branches of org/tiny and
    org/faulty (see test_failures), read before any sweep writes beside them."""
    root = tmp_path_factory.mktemp("hubpath")
    tiny = build_tiny_suite(root / "local", {"tiny": TINY_MODELS["tiny"]}, steps=(0, 3, 4, 5)) / "tiny"
    to_bin(tiny / "step0")
    to_bin(tiny / "step4")
    for step in (1, 2):
        shutil.copytree(tiny / "step0", tiny / f"step{step}")
    faulty = build_tiny_suite(root / "faulty", {"tiny": TINY_MODELS["tiny"]}, steps=range(9)) / "tiny"
    edit_weights(faulty / "step1", lambda t: t.pop("gpt_neox.layers.0.mlp.dense_h_to_4h.weight"))
    edit_weights(faulty / "step2", lambda t: t["gpt_neox.layers.0.attention.dense.weight"].fill_(float("nan")))
    edit_weights(faulty / "step3", lambda t: t.update({"embed_out.weight": t["embed_out.weight"][:, :8].clone()}))
    wide = build_tiny_suite(root / "wide", {"tiny": Shape(1, 32)}, steps=(7,)) / "tiny" / "step7"
    shutil.rmtree(faulty / "step7")
    shutil.copytree(wide, faulty / "step7")
    return {"local": tiny.parent, "tiny": {step: files_of(tiny / f"step{step}") for step in range(6)},
            "faulty": {step: files_of(faulty / f"step{step}") for step in range(9)}}


@pytest.fixture
def hub(world, monkeypatch, tmp_path):
    with HubServer() as server:
        for step, files in world["tiny"].items():
            server.add_branch(REPO, f"step{step}", files)
        server.add_branch(REPO, "main", world["tiny"][5])
        use_hub(monkeypatch, server.endpoint, tmp_path / "hf_home")
        yield server


def weight_requests(hub: HubServer, method: str = "GET") -> list[tuple[str, str, str]]:
    return [f for f in hub.fetched(method) if f[2].endswith(WEIGHTS)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hub_sweep_args(out: Path, *extra: str, suite: str = f"hf:{REPO}") -> list[str]:
    return ["sweep", "--suite", suite, "--tasks", ",".join(TEST_PARADIGMS), "--blimp-dir", str(BLIMP_DIR),
            "--limit", str(LIMIT), "--out", str(out), "--device", "cpu", "--batch-size", "8", *extra]


# ---------------------------------------------------------------------------------------------------- audit
def test_audit_names_the_identical_steps_without_downloading_weights(hub, world, capsys):
    assert main(["audit", "--suite", f"hf:{REPO}"]) == 0
    table = capsys.readouterr().out
    assert "duplicate: tiny: steps 0, 1, 2 have identical weights" in table
    assert weight_requests(hub, "GET") == weight_requests(hub, "HEAD") == []

    assert main(["audit", "--suite", f"hf:{REPO}", "--steps", "1,2,3,5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    listed = {c["step"]: c for c in report["checkpoints"]}
    assert sorted(listed) == [1, 2, 3, 5]
    for step, listing in listed.items():
        folder = world["local"] / "tiny" / f"step{step}"
        name = "model.safetensors" if step in (3, 5) else "pytorch_model.bin"
        assert listing["weights"] == [{"path": name, "size": (folder / name).stat().st_size,
                                       "sha256": sha256(folder / name)}]
        assert listing["commit"] == hub.branches(REPO)[f"step{step}"]
    assert [(f["kind"], f["steps"]) for f in report["findings"]] == [("duplicate", [1, 2])]
    assert weight_requests(hub, "GET") == weight_requests(hub, "HEAD") == []


def test_audit_of_a_local_suite_hashes_each_file_once(world, tmp_path, monkeypatch):
    import trajectories as tj
    from trajectories import suites

    suite = tmp_path / "suite"
    shutil.copytree(world["local"], suite)
    hashed = []
    monkeypatch.setattr(suites, "sha256_of", lambda path: hashed.append(path.name) or sha256(path))
    first = tj.audit(f"local:{suite}", progress=False)
    assert hashed.count("pytorch_model.bin") == 4 and hashed.count("model.safetensors") == 2
    assert [(f.kind.value, f.steps) for f in first.findings] == [("duplicate", GROUP)]
    hashed.clear()
    assert tj.audit(f"local:{suite}", progress=False).listings == first.listings and hashed == []
    edit_weights(suite / "tiny" / "step5", lambda t: t["embed_out.weight"].mul_(2))  # changed: hashed again
    assert tj.audit(f"local:{suite}", progress=False).listings != first.listings
    assert hashed == ["model.safetensors"]


def test_pythia_steps_without_a_branch_fail_before_any_download(world, monkeypatch, tmp_path, capsys):
    with HubServer() as server:
        for step in (0, 1):
            server.add_branch("EleutherAI/pythia-14m", f"step{step}", world["tiny"][3])
        use_hub(monkeypatch, server.endpoint, tmp_path / "hf_home")
        assert main(["audit", "--suite", "pythia", "--models", "14m", "--steps", "0,1,2"]) == 0
        table = capsys.readouterr().out
        assert "no-branch: 14m: step 2: EleutherAI/pythia-14m has no branch step2" in table
        assert "duplicate: 14m: steps 0, 1 have identical weights" in table
        server.requests.clear()
        assert main(hub_sweep_args(tmp_path / "out", "--models", "14m", "--steps", "2", suite="pythia")) == 1
        assert "FAILED 14m step 2: audit: step 2: EleutherAI/pythia-14m has no branch step2" in capsys.readouterr().out
        assert server.fetched() == []  # nothing to download, nothing downloaded (not even a config)


# ---------------------------------------------------------------------------------------------------- sweeps
def test_sweep_from_the_hub_equals_the_local_sweep(hub, world, tmp_path, capsys):
    out = tmp_path / "hub_out"
    assert main(hub_sweep_args(out, "--evict", "always")) == 0
    printed = capsys.readouterr().out
    assert "sweep: 4 evaluated, 0 already done, 0 failed, 2 reused (identical weights)" in printed
    assert "tiny steps 1, 2: the weights of step 0, results reused" in printed
    # Each distinct checkpoint was downloaded once; of the identical steps only step 0.
    commits = hub.branches(REPO)
    assert sorted(weight_requests(hub)) == sorted([(REPO, commits["step0"], "pytorch_model.bin"),
                                                   (REPO, commits["step3"], "model.safetensors"),
                                                   (REPO, commits["step4"], "pytorch_model.bin"),
                                                   (REPO, commits["step5"], "model.safetensors")])
    # --evict always: no weights left in the hub cache (blobs are named by their sha256).
    weight_digests = {sha256(p) for p in (world["local"] / "tiny").rglob("*") if p.name.endswith(WEIGHTS)}
    assert not weight_digests & {p.name for p in (tmp_path / "hf_home" / "hub").rglob("*")}

    local = local_sweep(world["local"], tmp_path / "local_out")
    assert (len(local.done), len(local.reused)) == (4, 2)
    hub_items, local_items = Store(out).items(), Store(tmp_path / "local_out").items()
    pd.testing.assert_frame_equal(hub_items, local_items)
    curves = pd.read_parquet(out / "curves.parquet")
    local_curves = pd.read_parquet(tmp_path / "local_out" / "curves.parquet")
    columns = ["model", "step", "level", "task", "acc", "ci_low", "ci_high", "n", "same_weights_as"]
    pd.testing.assert_frame_equal(curves[columns], local_curves[columns])
    paradigms = curves[curves.level == "paradigm"].pivot(index="task", columns="step", values="acc")
    assert (paradigms[1] == paradigms[0]).all() and (paradigms[2] == paradigms[0]).all()
    assert curves.groupby("step").same_weights_as.first().fillna(-1).to_dict() == {0: -1, 1: 0, 2: 0, 3: -1, 4: -1,
                                                                                   5: -1}
    # Provenance: each unit's own commit and the sha256 of the weights it was evaluated with.
    store = Store(out)
    for step in range(6):
        record = store.record(("tiny", step))
        name = "model.safetensors" if step in (3, 5) else "pytorch_model.bin"
        assert record.provenance["commit"] == commits[f"step{step}"]
        assert record.provenance["weights"] == {name: sha256(world["local"] / "tiny" / f"step{step}" / name)}
        assert record.same_weights_as == (0 if step in (1, 2) else None)

    # Resume: nothing evaluated, nothing downloaded; the branches are listed again, every commit's files are known.
    hub.requests.clear()
    assert main(hub_sweep_args(out, "--evict", "always")) == 0
    assert "sweep: 0 evaluated, 6 already done, 0 failed, 0 reused" in capsys.readouterr().out
    assert [(r.method, r.path) for r in hub.requests] == [("GET", f"/api/models/{REPO}/refs")]
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "tiny                         6       0        0" in status
    assert "done tiny steps 1, 2: the weights of step 0 (results reused)" in status
    before = pd.read_parquet(out / "curves.parquet")
    assert main(["collect", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "curves.parquet"), before)


def test_duplicates_evaluate_evaluates_each_and_gets_what_reuse_gives(world, tmp_path):
    suite = tmp_path / "suite"
    shutil.copytree(world["local"], suite)
    each = local_sweep(suite, tmp_path / "each", steps="0,1", duplicates="evaluate")
    reused = local_sweep(suite, tmp_path / "reused", steps="0,1")
    assert (len(each.done), len(each.reused), len(reused.done), len(reused.reused)) == (2, 0, 1, 1)
    evaluated, copied = Store(tmp_path / "each").items(), Store(tmp_path / "reused").items()
    pd.testing.assert_frame_equal(evaluated, copied)
    assert (evaluated[evaluated.step == 1].logp_good.to_numpy() == evaluated[evaluated.step == 0].logp_good.to_numpy()
            ).all()
    assert Store(tmp_path / "each").record(("tiny", 1)).same_weights_as is None


def test_the_next_checkpoint_is_downloaded_while_one_is_evaluated(hub, tmp_path):
    from trajectories.evaluate import Evaluator
    from trajectories.schema import EvalSettings, SweepSpec
    from trajectories.suites import get_suite, resolve_checkpoints

    suite = get_suite(f"hf:{REPO}")
    first, second = resolve_checkpoints(suite, None, "3,5")
    spec = SweepSpec(suite.name, tuple(f"blimp_{p}" for p in TEST_PARADIGMS), limit=2)
    evaluator = Evaluator(spec, EvalSettings(batch_size=8, blimp_dir=str(BLIMP_DIR), evict="never"))
    evaluator.load(first, next_ckpt=second)
    wanted = (REPO, hub.branches(REPO)["step5"], "model.safetensors")
    deadline = time.time() + 120  # the prefetch runs in the background: wait for its download to arrive
    while wanted not in hub.fetched() and time.time() < deadline:
        time.sleep(0.05)
    assert wanted in hub.fetched()
    evaluator.load(second)
    assert hub.fetched().count(wanted) == 1 and evaluator.model_loads == 2


def test_offline_with_a_warm_cache_sends_nothing(hub, tmp_path, monkeypatch, capsys):
    online, offline = tmp_path / "online", tmp_path / "offline"
    assert main(hub_sweep_args(online, "--steps", "0,1,3", "--evict", "never")) == 0
    capsys.readouterr()
    hub.requests.clear()
    use_offline(monkeypatch)
    assert main(hub_sweep_args(offline, "--steps", "0,1,3")) == 0
    assert "sweep: 2 evaluated, 0 already done, 0 failed, 1 reused" in capsys.readouterr().out
    assert hub.requests == []
    pd.testing.assert_frame_equal(Store(offline).items(), Store(online).items())
    assert main(["audit", "--suite", f"hf:{REPO}", "--steps", "0,1,3"]) == 0
    assert "steps 0, 1 have identical weights" in capsys.readouterr().out and hub.requests == []
    assert main(hub_sweep_args(tmp_path / "more", "--steps", "5")) == 1  # never downloaded: a clear failure
    assert "offline (HF_HUB_OFFLINE=1) and org/tiny@step5 is not complete in the local hub cache" in \
        capsys.readouterr().out
    assert hub.requests == []


def test_offline_without_a_listing_is_a_clear_error(monkeypatch, tmp_path, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    use_offline(monkeypatch)
    assert main(["audit", "--suite", f"hf:{REPO}"]) == 2
    assert "offline (HF_HUB_OFFLINE=1) and the local hub cache holds no branches of org/tiny" in \
        capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- failures
def test_failures(world, monkeypatch, tmp_path, capsys):
    """org/faulty: step 1 lacks a tensor, step 2 holds NaN, step 3 has a misshapen tensor, step 4 vanishes once
    listed, step 5's download is cut short and step 6's answered with HTTP 500 (once each), step 7's config is
    wider than the others'; steps 0 and 8 are sound. (transformers names the checkpoint's embed_out lm_head.)"""
    with HubServer() as hub:
        commits = {step: hub.add_branch(FAULTY, f"step{step}", files) for step, files in world["faulty"].items()}
        use_hub(monkeypatch, hub.endpoint, tmp_path / "hf_home")
        hub.vanish_after_listing(FAULTY, "step4")
        hub.truncate(f"*/resolve/{commits[5]}/model.safetensors", keep=100, times=1)
        hub.fail(f"*/resolve/{commits[6]}/model.safetensors", method="GET", times=1)
        out = tmp_path / "out"
        assert main(hub_sweep_args(out, suite=f"hf:{FAULTY}")) == 1
        printed = capsys.readouterr().out
        assert "sweep: 2 evaluated, 0 already done, 7 failed" in printed
        failed = {f.step: f.reason for f in Store(out).failures()}
        assert sorted(failed) == [1, 2, 3, 4, 5, 6, 7]
        assert "the weights do not load fully: missing tensors gpt_neox.layers.0.mlp.dense_h_to_4h.weight" in failed[1]
        assert "weights hold NaN or infinite values in gpt_neox.layers.0.attention.dense.weight" in failed[2]
        assert "tensors of the wrong shape lm_head.weight (" in failed[3] and ", 8) (the model's (" in failed[3]
        assert "branch step4 is gone from org/faulty" in failed[4]
        assert "the download of org/faulty@step5 was cut short (Consistency check failed" in failed[5]
        assert "the hub answered HTTP 500 while org/faulty@step6 was downloading; run the sweep again" in failed[6]
        assert "audit: step 7: config.json differs in shape from the model's other checkpoints: hidden_size 32 " \
               "(others 16)" in failed[7]
        assert not [f for f in weight_requests(hub) if f[1] == commits[7]]  # failed without a download
        curves = pd.read_parquet(out / "curves.parquet")
        assert sorted(curves.step.unique()) == [0, 8]

        # Run again: what failed for a passing reason now completes; broken checkpoints fail again.
        assert main(hub_sweep_args(out, suite=f"hf:{FAULTY}")) == 1
        assert "sweep: 2 evaluated, 2 already done, 4 failed" in capsys.readouterr().out
        assert sorted(pd.read_parquet(out / "curves.parquet").step.unique()) == [0, 5, 6, 8]
        assert main(["status", str(out)]) == 0
        status = capsys.readouterr().out
        assert "faulty                       4       5        0" in status
        assert "failed faulty step 4: EvaluationError: could not load faulty step 4 (org/faulty@step4): " \
               "DownloadError: branch step4 is gone" in status
