"""Sweeps as Slurm job arrays, on a real Slurm: one node on this machine, which .ci/slurm-setup installs and starts."""

import json
import re
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.helpers import TASKS, Shape, build_tiny_suite, local_sweep, sweep_args
from trajectories.cli import main
from trajectories.store import Store

pytestmark = pytest.mark.skipif(shutil.which("sbatch") is None,
                                reason="Slurm is not installed; .ci/slurm-setup installs and starts a one-node Slurm")
SLOW_LIMIT = 50


@pytest.fixture(scope="module", autouse=True)
def slurm_up():
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    assert "UP" in ping.stdout, f"Slurm is installed but not answering; run .ci/slurm-setup\n{ping.stdout}{ping.stderr}"


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
    """One model, six checkpoints: one job's worth of units. All are Pythia-14m-sized (one shape, or the audit fails
    the odd one), so a signal sent once the first unit is stored lands mid-job however fast the machine is."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    suite = build_tiny_suite(tmp_path_factory.mktemp("six"), models={"tiny": Shape(1, 16)}, steps=range(6))
    config = GPTNeoXConfig.from_pretrained(suite / "tiny" / "step0")
    config.update(dict(hidden_size=128, num_hidden_layers=6, num_attention_heads=4, intermediate_size=512,
                       vocab_size=50304))
    for step in range(6):
        torch.manual_seed(step)
        GPTNeoXForCausalLM(config).save_pretrained(suite / "tiny" / f"step{step}")
    return suite


def slurm_args(suite, out, units_per_job: int, limit: int | None = None) -> list[str]:
    args = sweep_args(suite, out, "--executor", "slurm", "--units-per-job", str(units_per_job),
                      "--cpus-per-job", "1", "--time", "10")
    if limit:
        args[args.index("--limit") + 1] = str(limit)
    return args


def wait_for(condition, what: str, timeout: float = 120):
    deadline = time.time() + timeout
    while not (found := condition()):
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def start_sweep(args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trajectories", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def the_job(out) -> dict:
    records = wait_for(lambda: list((out / "jobs").glob("*.units.json")), "the job record")
    return json.loads(records[0].read_text())


def state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def stamps(out) -> dict:
    return {p: p.stat().st_mtime_ns for p in (out / "units").rglob("step*.json")}


def assert_complete_once(out, units: int, limit: int) -> None:
    items = Store(out).items()
    assert len(items) == len(items.drop_duplicates(["model", "step", "task", "item"])) == units * len(TASKS) * limit
    assert not [p for p in out.rglob("*") if p.suffix == ".lock" or ".tmp-" in p.name]


def test_a_slurm_job_array_gives_the_local_curves(tiny_suite, tmp_path, capsys):
    out = tmp_path / "slurm"
    assert main(slurm_args(tiny_suite, out, units_per_job=3)) == 0
    assert "6 evaluated, 0 already done, 0 failed" in capsys.readouterr().out
    assert local_sweep(tiny_suite, tmp_path / "local").ok
    pd.testing.assert_frame_equal(pd.read_parquet(out / "curves.parquet"),
                                  pd.read_parquet(tmp_path / "local" / "curves.parquet"))

    records = [json.loads(p.read_text()) for p in sorted((out / "jobs").glob("*.units.json"))]
    # A job per model, each taking its model's part of the coarse-to-fine order (0, 2, 1), the models in turn.
    assert [r["units"] for r in records] == [[[m, s] for s in (0, 2, 1)] for m in ("small", "tiny")]
    array = records[0]["job"].split("_")[0]
    assert [r["job"] for r in records] == [f"{array}_0", f"{array}_1"]
    evaluated_by = {u.key: u.by["job"] for u in Store(out).records()}
    assert evaluated_by == {tuple(unit): r["job"] for r in records for unit in r["units"]}
    assert_complete_once(out, 6, 12)


def test_a_cancelled_job_leaves_its_units_to_the_next_sweep(six_steps, tmp_path, capsys):
    out = tmp_path / "out"
    args = slurm_args(six_steps, out, units_per_job=6, limit=SLOW_LIMIT)
    first = start_sweep(args)
    job = the_job(out)
    wait_for(lambda: list((out / "units").rglob("*.lock")), "the job to take a unit")
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert re.search(rf"tiny step \d: job {job['job']} RUNNING on \S+ pid \d+, heartbeat \d+ s ago\n"
                     rf"    log {re.escape(job['log'])}\n", status), status
    assert f"{job['job']} RUNNING: 6 of 6 units left; log {job['log']}" in status

    wait_for(lambda: list((out / "units").rglob("step*.json")), "a first unit")
    subprocess.run(["scancel", job["job"]], check=True)
    report = first.communicate(timeout=120)[0]
    assert first.returncode == 1 and "units not evaluated" in report, report
    before = stamps(out)
    assert 1 <= len(before) < 6, "the cancel should land mid-job"
    assert main(["status", str(out)]) == 0
    assert re.search(rf"{job['job']} (CANCELLED|ENDED): {6 - len(before)} of 6 units left", capsys.readouterr().out)

    assert main(args) == 0
    assert f"{6 - len(before)} evaluated, {len(before)} already done, 0 failed" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == t for p, t in before.items()), "completed units were redone"
    assert_complete_once(out, 6, SLOW_LIMIT)


def test_a_preempted_job_is_requeued_and_finishes(six_steps, tmp_path):
    out = tmp_path / "out"
    sweep = start_sweep(slurm_args(six_steps, out, units_per_job=6, limit=SLOW_LIMIT))
    job = the_job(out)["job"]
    wait_for(lambda: list((out / "units").rglob("step*.json")), "a first unit")
    # USR2 is what Slurm sends a job before its time limit and, on most clusters, before preempting it.
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    wait_for(lambda: state(job) == "PENDING", "the job to be requeued")
    before = stamps(out)
    assert len(before) < 6, "the signal should land mid-job"
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)  # skip Slurm's requeue delay
    report = sweep.communicate(timeout=180)[0]
    assert sweep.returncode == 0 and "6 evaluated, 0 already done, 0 failed" in report, report
    assert "Requeued job" in (out / "jobs" / f"{job}_0_log.out").read_text()
    assert all(p.stat().st_mtime_ns == t for p, t in before.items()), "completed units were redone"
    assert_complete_once(out, 6, SLOW_LIMIT)
