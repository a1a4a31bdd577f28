"""`trajectories memorization` end to end, through the sweep engine: a suite trained to memorize known rows is
scored by the command, and the stored results, their analysis and report are checked against the truth and against
transformers' own `generate`; resume, refusals, worker processes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPTNeoXForCausalLM

import trajectories as tj
from tests.helpers import PLANTED_BATCH, PLANTED_CHECKPOINTS, PLANTED_ROW, PLANTED_STEPS, build_planted_suite
from trajectories.cli import main
from trajectories.schema import MEMORIZATION_COLUMNS, ROW_COLUMNS, SweepSpec
from trajectories.store import Store
from trajectories.trainingdata import open_training_data

SAMPLE, STRATA = 40, 20


def memorization_args(suite, out, *extra: str) -> list[str]:
    return ["memorization", "--suite", f"local:{suite}", "--sample", str(SAMPLE), "--strata", str(STRATA),
            "--generate", "--out", str(out), "--device", "cpu", "--batch-size", "16", *extra]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted_suite(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="module")
def scored(planted, tmp_path_factory):
    suite, _ = planted
    out = tmp_path_factory.mktemp("memorization")
    assert main(memorization_args(suite, out)) == 0
    return out


def hf_generate(model, tokens: np.ndarray) -> np.ndarray:
    """EleutherAI's generate call: greedy, exactly 32 new tokens (so EOS is banned)."""
    x = torch.as_tensor(tokens[:, :32])
    out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=32,
                         min_new_tokens=32, pad_token_id=0)
    return out[:, 32:].numpy()


def test_the_command_finds_exactly_the_planted_rows_and_agrees_with_generate(planted, scored):
    suite, plant = planted
    data = open_training_data(suite / "data" / "standard", PLANTED_ROW, PLANTED_BATCH)
    items = tj.load_items(scored)
    assert list(items.columns) == list(MEMORIZATION_COLUMNS)
    assert set(items.step) == set(PLANTED_CHECKPOINTS) - {0} and (items.seen_at_step < items.step).all()
    assert (items.seen_at_step == items.row // PLANTED_BATCH).all()
    final = items[items.step == PLANTED_STEPS].set_index("row")
    tokens = data.tokens(final.index, 64)
    is_planted = (tokens[:, None] == plant[None]).all(-1).any(-1)
    # EleutherAI's rule bans EOS from the continuation: the planted row with a document boundary there cannot count.
    has_eos = (tokens[:, 32:] == 0).any(1)
    assert np.array_equal(final.memorized.to_numpy(), is_planted & ~has_eos)
    assert is_planted.sum() == 5 and (final.canary.to_numpy() >= is_planted).all()
    # Every scored row at every checkpoint: the teacher-forced verdict is generate's, and match_fraction its score.
    for step, rows in items.groupby("step"):
        model = GPTNeoXForCausalLM.from_pretrained(suite / "planted" / f"step{step}").eval()
        tokens = data.tokens(rows.row, 64)
        generated = hf_generate(model, tokens)
        assert np.array_equal(rows.memorized.to_numpy(), (generated == tokens[:, 32:]).all(1))
        assert np.allclose(rows.match_fraction.to_numpy(), (generated == tokens[:, 32:]).mean(1))

    recorded = Store(scored).rows()
    assert list(recorded.columns) == list(ROW_COLUMNS) and set(recorded.data) == {"standard"}
    sampled = recorded[~recorded.canary]
    # 2 rows from each of 20 strata, less those holding a canary (5 of a batch's 8 rows hold a planted one)
    assert 0 < len(sampled) < SAMPLE and sampled.repetitions.isna().all()
    assert not (data.tokens(sampled.row, 64)[:, None] == plant[None]).all(-1).any()
    assert sampled.seen_at_step.min() < 20 and sampled.seen_at_step.max() >= 60
    canaries = recorded[recorded.canary].sort_values("row")
    assert list(canaries.repetitions) == [1] * 5 + [PLANTED_STEPS] * 5  # the once-seen ones are all before step 79
    assert (canaries[canaries.repetitions == PLANTED_STEPS].seen_at_step == PLANTED_STEPS - 1).all()


def test_allowing_eos_counts_the_row_with_a_document_boundary(planted, tmp_path):
    suite, plant = planted
    summary = tj.measure_memorization(f"local:{suite}", steps="final", out=tmp_path, sample=SAMPLE, strata=STRATA,
                                      ban_eos=False, device="cpu", progress=False)
    assert summary.ok
    items = tj.load_items(tmp_path)
    data = open_training_data(suite / "data" / "standard", PLANTED_ROW, PLANTED_BATCH)
    is_planted = (data.tokens(items.row, 64)[:, None] == plant[None]).all(-1).any(-1)
    assert np.array_equal(items.memorized.to_numpy(), is_planted) and is_planted.sum() == 5


def test_resume_evaluates_nothing_and_another_spec_is_refused(planted, scored, capsys):
    suite, _ = planted
    stamps = {p: p.stat().st_mtime_ns for p in (scored / "units").rglob("*")}
    summary = tj.measure_memorization(f"local:{suite}", out=scored, sample=SAMPLE, strata=STRATA, generate=True,
                                      device="cpu", batch_size=16, progress=False)
    assert (len(summary.done), len(summary.skipped), summary.model_loads) == (0, 3, 0)
    assert stamps == {p: p.stat().st_mtime_ns for p in (scored / "units").rglob("*")}
    assert "memorization: 0 evaluated, 3 already done, 0 failed" in summary.report()

    before = (scored / "sweep.json").read_text()
    args = memorization_args(suite, scored)
    args[args.index("--sample") + 1] = "20"
    assert main(args) == 2
    assert "sample: 40 there, 20 now" in capsys.readouterr().err
    assert (scored / "sweep.json").read_text() == before


def test_status_collect_and_a_grammar_folder(planted, scored, tmp_path, capsys):
    suite, _ = planted
    assert main(["status", str(scored)]) == 0
    printed = capsys.readouterr().out
    assert "memorization, suite local:" in printed and "planted" in printed
    assert main(["collect", str(scored)]) == 2
    assert "has no learning curves; `trajectories analyze" in capsys.readouterr().err
    (tmp_path / "sweep.json").write_text(json.dumps({"spec": SweepSpec("local:x", ("t",)).as_dict(),
                                                     "requested": []}))
    assert main(memorization_args(suite, tmp_path)) == 2
    assert "holds a grammar experiment, not a memorization one" in capsys.readouterr().err


def test_worker_processes_give_the_local_results(planted, scored, tmp_path, capsys):
    suite, _ = planted
    assert main(memorization_args(suite, tmp_path, "--executor", "processes", "--workers", "2")) == 0
    assert "3 evaluated, 0 already done, 0 failed" in capsys.readouterr().out
    key = ["model", "step", "row"]
    pd.testing.assert_frame_equal(tj.load_items(tmp_path).sort_values(key, ignore_index=True),
                                  tj.load_items(scored).sort_values(key, ignore_index=True))
    assert {r.by["job"] for r in Store(tmp_path).records()} <= {j["job"] for j in Store(tmp_path).jobs()[0]}


def test_analysis_detects_the_repetition_effect_and_reports_recency(scored, capsys):
    assert main(["analyze", str(scored)]) == 0
    assert "report:" in capsys.readouterr().out
    analysis = tj.analyze(scored, n_boot=200)
    effect = analysis.tables["repetition_effect"].set_index("step").loc[PLANTED_STEPS]
    # 4 of the 5 rows seen every step are memorized (the fifth holds EOS), none of those seen once.
    assert (effect.most_rate, effect.least_rate) == (0.8, 0.0) and effect.slope_ci_low > 0 and effect.diff_ci_low > 0
    recency = analysis.tables["recency"].set_index(["step", "rows"])
    canaries = recency.loc[(PLANTED_STEPS, "canaries")]
    assert canaries.slope_ci_low <= canaries.slope <= canaries.slope_ci_high and canaries.memorized == 4
    assert recency.loc[(PLANTED_STEPS, "sampled")].memorized == 0
    # Canaries are scored once all their repetitions are seen: at step 40 only the two seen once before it.
    rate = analysis.tables["memorization_rate"].set_index(["step", "rows"])
    assert (rate.loc[(40, "canaries")].n, rate.loc[(PLANTED_STEPS, "canaries")].n) == (2, 10)
    report = analysis.markdown.read_text()
    assert "## Are rows seen later in training more likely to be memorized?" in report
    assert "repetition raises memorization" in report
    assert {p.name for p in analysis.figures} >= {"memorization_by_position.png", "repetitions.png"}
    assert (scored / "report" / "report.html").stat().st_size > 10_000


def test_damaged_units_and_rows_are_reported_and_healed(planted, scored, tmp_path, capsys):
    """A unit whose items lack a row, one whose record is garbage, and then a torn rows file: `status` names what is
    damaged, and one rerun with the same options moves the damaged files aside and scores those units again."""
    suite, _ = planted
    out = tmp_path / "out"
    shutil.copytree(scored, out)
    short, garbage = out / "units" / "planted" / "step40.items.parquet", out / "units" / "planted" / "step80.json"
    n = len(pd.read_parquet(short))
    pd.read_parquet(short).iloc[1:].to_parquet(short)
    garbage.write_text("{not json")
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert f"damaged planted step 40: {short.with_suffix('').with_suffix('.json')}: its items file " \
           f"step40.items.parquet has {n - 1} rows; expected {n}" in status
    assert f"damaged planted step 80: {garbage}: not a unit record" in status
    (out / "rows.parquet").write_bytes(b"PAR1 torn")
    assert main(["status", str(out)]) == 0
    assert "damaged planted step 0:" in (status := capsys.readouterr().out) and "rows.parquet is damaged" in status
    assert main(memorization_args(suite, out)) == 0
    report = capsys.readouterr().out
    assert "memorization: 2 evaluated, 1 already done" in report and "damaged planted step 80:" in report
    assert sorted(p.name for p in (out / "damaged").rglob("*") if p.is_file()) == [
        "rows.parquet", "step40.items.parquet", "step40.json", "step80.items.parquet", "step80.json"]
    key = ["model", "step", "row"]
    pd.testing.assert_frame_equal(tj.load_items(out).sort_values(key, ignore_index=True),
                                  tj.load_items(scored).sort_values(key, ignore_index=True))
    pd.testing.assert_frame_equal(Store(out).rows(), Store(scored).rows())


@pytest.mark.parametrize("extra, message", [
    (["--models", "tiny,small"], "no training data for the standard models: give --data standard=PATH"),
    (["--data", "missing.bin"], "training data file missing.bin does not exist"),
    (["--data", "deduped=x.bin,weird=y.bin"], "--data names data variant 'weird'"),
    (["--prefix", "40"], "prefix + continuation = 72 tokens, but rows are 64 long"),
    (["--sample", "100000"], "--sample 100000 is more rows than"),
    (["--strata", "0"], "--strata 0: expected a whole number >= 1"),
    (["--batch-size", "0"], "--batch-size 0: expected a whole number >= 1, or auto"),
    (["--dtype", "float8"], "--dtype 'float8': expected one of auto, float32"),
    (["--device", "tpu"], "--device 'tpu': expected one of cpu, cuda"),
])
def test_bad_input_errors(planted, tiny_suite, tmp_path, capsys, extra, message):
    suite = tiny_suite if "--models" in extra else planted[0]
    assert main(memorization_args(suite, tmp_path / "out", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
