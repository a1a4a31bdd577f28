"""The sweep engine end to end on real lm-eval, real transformers checkpoints and real BLiMP data."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from tests.helpers import LIMIT, TASKS, TEST_PARADIGMS, load_checkpoint, local_sweep, reference_logprobs, sweep_args
from trajectories.cli import main
from trajectories.schema import CURVE_COLUMNS, ITEM_COLUMNS
from trajectories.store import Store


@pytest.fixture(scope="module")
def swept(tiny_suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    assert main(sweep_args(tiny_suite, out)) == 0
    return out


def test_items_equal_an_independent_transformers_computation(swept, tiny_suite, blimp_dir):
    items = Store(swept).items()
    assert list(items.columns) == list(ITEM_COLUMNS)
    assert len(items) == 2 * 3 * len(TASKS) * LIMIT
    for model_name, step in [("tiny", 0), ("small", 2)]:
        model, tokenizer = load_checkpoint(tiny_suite / model_name / f"step{step}")
        for paradigm in TEST_PARADIGMS:
            pairs = [json.loads(line) for line in (blimp_dir / f"{paradigm}.jsonl").read_text().splitlines()[:LIMIT]]
            got = items[(items.model == model_name) & (items.step == step) & (items.task == f"blimp_{paradigm}")]
            assert list(got.item) == list(range(LIMIT))
            good = reference_logprobs(model, tokenizer, [("", " " + p["sentence_good"]) for p in pairs])
            bad = reference_logprobs(model, tokenizer, [("", " " + p["sentence_bad"]) for p in pairs])
            assert got.logp_good.tolist() == pytest.approx(good, abs=1e-4)
            assert got.logp_bad.tolist() == pytest.approx(bad, abs=1e-4)
            assert got.correct.tolist() == [g > b for g, b in zip(good, bad)]


def test_curves_table_matches_lm_eval_and_items(swept):
    curves = pd.read_parquet(swept / "curves.parquet")
    assert list(curves.columns) == list(CURVE_COLUMNS)
    assert len(curves[curves.level == "paradigm"]) == 2 * 3 * len(TASKS)
    items = Store(swept).items()
    for unit in Store(swept).records():
        for task, result in unit.tasks.items():
            row = curves[(curves.model == unit.model.name) & (curves.step == unit.step)
                         & (curves.task == task) & (curves.level == "paradigm")].iloc[0]
            mine = items[(items.model == row.model) & (items.step == row.step) & (items.task == task)]
            assert row.acc == result.lm_eval["acc,none"] == pytest.approx(mine.correct.mean())
            assert row.acc_stderr == result.lm_eval["acc_stderr,none"]
            assert row.n == LIMIT and row.phenomenon
    assert set(curves.tokens[curves.step == 2]) == {2048}
    assert json.loads((swept / "units" / "tiny" / "step1.json").read_text())["versions"]["lm_eval"]


def test_resume_evaluates_nothing(swept, tiny_suite):
    stamps = {p: p.stat().st_mtime_ns for p in (swept / "units").rglob("*")}
    summary = local_sweep(tiny_suite, swept)
    assert (len(summary.done), len(summary.skipped), summary.model_loads) == (0, 6, 0)
    assert stamps == {p: p.stat().st_mtime_ns for p in (swept / "units").rglob("*")}


def test_another_spec_is_refused(swept, tiny_suite, capsys):
    before = (swept / "sweep.json").read_text()
    args = sweep_args(tiny_suite, swept)
    args[args.index("--limit") + 1] = "5"
    assert main(args) == 2
    assert "limit: 12 there, 5 now" in capsys.readouterr().err
    assert (swept / "sweep.json").read_text() == before


def test_killed_sweep_loses_nothing_and_duplicates_nothing(tiny_suite, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "trajectories", *sweep_args(tiny_suite, out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((out / "units").glob("*/step*.json")) and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_before = {p.name for p in (out / "units").rglob("step*.json")}
    assert 1 <= len(finished_before) < 6, "the kill should land mid-sweep"
    stamps = {p: p.stat().st_mtime_ns for p in (out / "units").rglob("step*.json")}

    assert main(sweep_args(tiny_suite, out)) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items()), "completed units were redone"
    items = Store(out).items()
    assert len(items) == len(items.drop_duplicates(["model", "step", "task", "item"])) == 6 * len(TASKS) * LIMIT
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_broken_checkpoints_fail_alone(tiny_suite, tmp_path, capsys):
    suite = tmp_path / "suite"
    shutil.copytree(tiny_suite, suite)
    weights = suite / "tiny" / "step1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated download
    from safetensors.torch import load_file, save_file

    nan_weights = suite / "small" / "step2" / "model.safetensors"
    tensors = load_file(nan_weights)
    tensors = {k: torch.full_like(v, float("nan")) if "embed_out" in k else v for k, v in tensors.items()}
    save_file(tensors, nan_weights, metadata={"format": "pt"})

    out = tmp_path / "out"
    assert main(sweep_args(suite, out)) == 1
    printed = capsys.readouterr().out
    assert "4 evaluated, 0 already done, 2 failed" in printed
    assert "FAILED tiny step 1: EvaluationError: could not load" in printed
    assert "FAILED small step 2: EvaluationError" in printed and "NaN" in printed
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "failed tiny step 1" in status and "failed small step 2" in status
    curves = pd.read_parquet(out / "curves.parquet")
    assert len(curves.groupby(["model", "step"])) == 4


def test_checkpoints_command_runs_nothing(tiny_suite, capsys):
    assert main(["checkpoints", "--suite", f"local:{tiny_suite}", "--models", "tiny", "--steps", "1,2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "model\tstep\ttokens\tsource"
    assert lines[1:] == [f"tiny\t{s}\t{1024 * s}\t{tiny_suite / 'tiny' / f'step{s}'}" for s in (1, 2)]


@pytest.mark.parametrize("args, message", [
    (["--suite", "nope"], "unknown suite 'nope'; valid suites"),
    (["--models", "huge"], "has no model 'huge'"),
    (["--steps", "7"], "has no step 7; it has steps 0, 1, 2"),
    (["--tasks", "adjunct_islnd"], "Did you mean: adjunct_island"),
    (["--blimp-dir", "/nonexistent"], "missing task data files in --blimp-dir /nonexistent"),
])
def test_bad_input_errors(tiny_suite, tmp_path, capsys, args, message):
    full = sweep_args(tiny_suite, tmp_path / "out")
    for option, value in zip(args[::2], args[1::2]):
        if option in full:
            full[full.index(option) + 1] = value
        else:
            full += [option, value]
    assert main(full) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_status_and_collect_on_missing_out(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "not a sweep folder" in capsys.readouterr().err
