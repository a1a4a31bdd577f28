"""Coarse-to-fine and adaptive sweeps through the engine and the command: the order units run in, budgets, the
decisions file, resume after kill -9, `plan`, the options' errors, and what collect and analyze make of gaps."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from tests.helpers import TINY_MODELS, build_tiny_suite, local_sweep, logistic_acc, sweep_args
from trajectories.analysis import acquisition
from trajectories.cli import main
from trajectories.curves import with_skipped
from trajectories.planning import coarse_to_fine, sweep_order
from trajectories.schema import Decision
from trajectories.store import Store

STEPS = (0, 1, 2, 4, 8, 16, 32, 64, 96, 128)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Two random-init models of ten steps each."""
    return build_tiny_suite(tmp_path_factory.mktemp("suite"), steps=STEPS)


def evaluation_order(out) -> list[tuple[str, int]]:
    """The units of OUT in the order their records were written."""
    records = sorted((out / "units").glob("*/step*.json"), key=lambda p: p.stat().st_mtime_ns)
    return [(p.parent.name, int(p.name.removeprefix("step").removesuffix(".json"))) for p in records]


def stamps(out) -> dict:
    return {p: p.stat().st_mtime_ns for p in (out / "units").rglob("*.json")}


def test_units_run_coarse_to_fine_interleaved_and_a_budget_cuts_the_order(suite, tmp_path):
    out = tmp_path / "out"
    summary = local_sweep(suite, out, budget=4)
    keys = [(m, s) for m in sorted(TINY_MODELS) for s in STEPS]  # a local suite lists its models by name
    assert evaluation_order(out) == sweep_order(keys, budget=4)
    assert evaluation_order(out)[:4] == [("small", 0), ("tiny", 0), ("small", 128), ("tiny", 128)]
    assert len(summary.done) == 8
    before = stamps(out)
    # A larger budget continues the same order; nothing evaluated twice.
    assert len(local_sweep(suite, out, budget=6).done) == 4
    assert evaluation_order(out) == sweep_order(keys, budget=6)
    assert all(stamps(out)[p] == t for p, t in before.items())
    # The curves say where they are interpolated; a complete sweep has no gaps, and no column for them.
    curves = pd.read_parquet(out / "curves.parquet")
    taken = set(coarse_to_fine(STEPS)[:6])
    first_skipped = {right: min(s for s in STEPS if left < s < right and s not in taken)
                     for left, right in zip(sorted(taken), sorted(taken)[1:])
                     if any(left < s < right for s in STEPS)}
    rows = curves[curves.model == "tiny"].drop_duplicates("step").set_index("step").skipped_from
    assert rows.dropna().to_dict() == first_skipped
    local_sweep(suite, out)
    assert "skipped_from" not in pd.read_parquet(out / "curves.parquet")


def test_sequential_order_runs_step_by_step(suite, tmp_path):
    out = tmp_path / "out"
    local_sweep(suite, out, models="tiny", steps="0,1,2,4,8", order="sequential")
    assert evaluation_order(out) == [("tiny", s) for s in (0, 1, 2, 4, 8)]


@pytest.mark.parametrize("extra, message", [
    (["--adaptive"], "--adaptive needs --budget"),
    (["--adaptive", "--budget", "0"], "bad budget '0'"),
    (["--adaptive", "--budget", "120%"], "bad budget '120%'"),
    (["--budget", "3", "--order", "sequential"], "--budget with --order sequential"),
    (["--tolerance", "2"], "--tolerance is for adaptive sweeps"),
    (["--adaptive", "--budget", "3", "--tolerance", "-1"], "--tolerance -1.0: expected a number >= 0"),
    (["--adaptive", "--budget", "3", "--force"], "--force would evaluate them again"),
])
def test_bad_planning_options_are_one_line_and_write_nothing(suite, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(sweep_args(suite, out, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_an_unknown_order_lists_the_orders(suite, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(sweep_args(suite, tmp_path / "out", "--order", "random"))
    assert exit_.value.code == 2
    assert "choose from 'coarse-to-fine', 'sequential'" in capsys.readouterr().err


def test_plan_shows_what_a_sweep_takes_first_and_runs_nothing(suite, tmp_path, capsys):
    assert main(["plan", "--suite", f"local:{suite}", "--budget", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["position", "model", "step", "tokens", "source", "why"]
    rows = [line.split("\t") for line in lines[1:]]
    keys = [(m, s) for m in sorted(TINY_MODELS) for s in STEPS]
    assert [(r[1], int(r[2])) for r in rows] == sweep_order(keys, budget=3)
    assert rows[0][5] == "coarse-to-fine 1 of 10" and rows[0][4] == str(suite / "small" / "step0")
    assert main(["plan", "--suite", f"local:{suite}", "--models", "tiny", "--adaptive", "--budget", "50%"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()[1:]]
    assert [int(r[2]) for r in rows] == coarse_to_fine(STEPS)[:2] and "coarse first pass" in rows[0][5]


ADAPTIVE = ("--models", "tiny", "--adaptive", "--budget", "7", "--tolerance", "0")


def test_adaptive_sweep_killed_and_rerun_continues_to_the_same_checkpoints(suite, tmp_path, capsys):
    reference = tmp_path / "reference"
    assert main(sweep_args(suite, reference, *ADAPTIVE)) == 0
    assert "adaptive: tiny: stop (budget) after 7 checkpoints" in capsys.readouterr().out
    chosen = [d for d in Store(reference).decisions() if not d.stopped]
    assert [d.rule for d in chosen] == ["coarse"] * 2 + ["change"] * 5
    assert {d.step for d in chosen} == {s for _, s in evaluation_order(reference)}
    assert Store(reference).decisions()[-1].rule == "stop-budget"

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "trajectories", *sweep_args(suite, out, *ADAPTIVE)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list((out / "units").glob("*/step*.json"))) < 4 and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = stamps(out)
    assert 4 <= len(done_before) < 7, "killed in the middle of the adaptive rounds"
    assert main(sweep_args(suite, out, *ADAPTIVE)) == 0
    report = capsys.readouterr().out
    assert f"sweep: {7 - len(done_before)} evaluated" in report
    assert all(stamps(out)[p] == t for p, t in done_before.items()), "nothing redone"
    assert sorted(evaluation_order(out)) == sorted(evaluation_order(reference))
    assert [d.step for d in Store(out).decisions() if not d.stopped] == [d.step for d in chosen]
    # Run again: nothing to do, and no second stop record for the same stop.
    assert main(sweep_args(suite, out, *ADAPTIVE)) == 0
    assert "sweep: 0 evaluated" in capsys.readouterr().out
    assert [d.rule for d in Store(out).decisions()].count("stop-budget") == 1
    assert main(["status", str(out)]) == 0
    assert "adaptive, last decision: tiny: stop (budget) after 7 checkpoints" in capsys.readouterr().out

    # A larger budget continues from what exists; `plan --out` shows its next choice first.
    assert main(["plan", "--suite", f"local:{suite}", "--models", "tiny", "--adaptive", "--budget", "8",
                 "--tolerance", "0", "--out", str(out)]) == 0
    planned = int(capsys.readouterr().out.splitlines()[1].split("\t")[2])
    more = [*ADAPTIVE[:4], "8", *ADAPTIVE[5:]]
    assert main(sweep_args(suite, out, *more)) == 0
    assert evaluation_order(out)[-1] == ("tiny", planned)
    lines = (out / "adaptive.jsonl").read_text().splitlines()
    assert [Decision.from_json(line).step for line in lines][-2:] == [planned, None]


def test_acquisition_ci_reaches_back_over_skipped_checkpoints():
    """A curve rising between two evaluated steps: the rise is only known to lie after the evaluated step before
    it, so with checkpoints skipped there the CI reaches back over the gap that `skipped_from` marks."""
    steps = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 4000])
    acc = logistic_acc(steps, midpoint=150, scale=0.05)
    full = pd.DataFrame({"model": "m", "size": "m", "params": 1, "deduped": False, "step": steps, "tokens": steps,
                         "level": "paradigm", "task": "t", "phenomenon": "p", "acc": acc, "acc_stderr": 0.01,
                         "ci_low": acc - 0.02, "ci_high": acc + 0.02, "ci_method": "stderr", "n": 1000})
    everything = acquisition(full, n_boot=200)
    assert (everything.ci_low.iloc[0], everything.acq_step.iloc[0], everything.ci_high.iloc[0]) == (128, 256, 256)
    available = [("m", int(s)) for s in steps]
    assert with_skipped(full, available).skipped_from.isna().all()
    subset = with_skipped(full[~full.step.isin([128, 256, 512])], available)
    assert subset.set_index("step").skipped_from.dropna().to_dict() == {1000: 128}
    gapped = acquisition(subset, n_boot=200)
    assert (gapped.ci_low.iloc[0], gapped.acq_step.iloc[0]) == (64, 1000)
