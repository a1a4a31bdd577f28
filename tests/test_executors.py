"""Unit locks and the executors that need no Slurm: concurrent sweeps on one OUT, and worker processes."""

import json
import os
import re
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.helpers import LIMIT, TASKS, local_sweep, sweep_args
from trajectories.cli import main
from trajectories.executors import group_units
from trajectories.locks import STALE_S
from trajectories.locks import owner as lock_owner
from trajectories.schema import Checkpoint, ModelInfo, SweepSpec
from trajectories.slurm import SlurmError, minutes
from trajectories.store import Store


def unit(model="tiny", step=1) -> Checkpoint:
    return Checkpoint("local:x", ModelInfo(model, model), step)


@pytest.fixture(scope="module")
def local_curves(tiny_suite, tmp_path_factory):
    """The reference: the standard small sweep in this process; its curves."""
    out = tmp_path_factory.mktemp("local")
    assert local_sweep(tiny_suite, out).ok
    return pd.read_parquet(out / "curves.parquet")


def write_lock(store: Store, ckpt: Checkpoint, age: float = 0, **holder) -> None:
    path = store.units / ckpt.model.name / f"step{ckpt.step}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"job": None, "token": "theirs"} | holder))
    os.utime(path, (time.time() - age, time.time() - age))


def test_a_live_holder_keeps_its_lock_until_its_process_dies(tmp_path, capsys):
    store, ckpt = Store(tmp_path), unit()
    holder = subprocess.Popen(["sleep", "60"])
    write_lock(store, ckpt, host=lock_owner()["host"], pid=holder.pid)
    assert not store.lock(ckpt, lock_owner())
    store.out.joinpath("sweep.json").write_text(json.dumps({
        "spec": SweepSpec("local:x", ("t",)).as_dict(), "requested": [["tiny", 1]]}))
    assert main(["status", str(tmp_path)]) == 0
    assert re.search(rf"tiny step 1: sweep on \S+ pid {holder.pid}, heartbeat \d+ s ago\n", capsys.readouterr().out)

    holder.kill()
    holder.wait()
    me = lock_owner()
    assert store.lock(ckpt, me)
    assert store.locks()[0]["token"] == me["token"]
    store.unlock(ckpt, me)
    assert not store.is_locked(ckpt.key)


def test_a_lock_whose_heartbeat_stopped_is_reclaimed(tmp_path):
    store, ckpt = Store(tmp_path), unit()
    write_lock(store, ckpt, host="another-node", pid=1, age=STALE_S / 2)
    assert not store.lock(ckpt, lock_owner())
    write_lock(store, ckpt, host="another-node", pid=1, age=STALE_S + 1)
    assert store.lock(ckpt, lock_owner())


def test_a_requeued_job_takes_back_its_own_lock(tmp_path):
    store, ckpt = Store(tmp_path), unit()
    write_lock(store, ckpt, host="another-node", pid=1, job="812_3")
    assert not store.lock(ckpt, lock_owner(job="77"))
    assert store.lock(ckpt, lock_owner(job="812_3"))


def test_one_winner_among_processes_reclaiming_one_stale_lock(tmp_path):
    store, ckpt = Store(tmp_path), unit()
    write_lock(store, ckpt, host="another-node", pid=1, age=STALE_S + 1)
    start = time.time() + 10  # after every interpreter has started, so they race
    race = (f"import time; from trajectories.store import Store; from trajectories.locks import owner\n"
            f"from trajectories.schema import Checkpoint, ModelInfo\n"
            f"time.sleep(max(0, {start} - time.time()))\n"
            f"print(Store({str(tmp_path)!r}).lock(Checkpoint('local:x', ModelInfo('tiny', 'tiny'), 1), owner()))")
    racers = [subprocess.Popen([sys.executable, "-c", race], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    results = [r.communicate()[0].strip() for r in racers]
    assert sorted(results) == ["False"] * 3 + ["True"]


def test_concurrent_sweeps_on_one_out_evaluate_each_unit_once(tiny_suite, tmp_path, local_curves):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "trajectories", *sweep_args(tiny_suite, out)]
    sweeps = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    reports = [s.communicate()[0] for s in sweeps]
    assert [s.returncode for s in sweeps] == [0, 0], reports
    evaluated = [int(re.search(r"sweep: (\d+) evaluated", r).group(1)) for r in reports]
    assert sum(evaluated) == 6, reports
    items = Store(out).items()
    assert len(items) == len(items.drop_duplicates(["model", "step", "task", "item"])) == 6 * len(TASKS) * LIMIT
    assert not list(out.rglob("*.lock"))
    pd.testing.assert_frame_equal(pd.read_parquet(out / "curves.parquet"), local_curves)


def test_worker_processes_give_the_local_curves(tiny_suite, tmp_path, local_curves, capsys):
    out = tmp_path / "out"
    assert main(sweep_args(tiny_suite, out, "--executor", "processes", "--workers", "2")) == 0
    assert "6 evaluated, 0 already done, 0 failed" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(out / "curves.parquet"), local_curves)
    records = [json.loads(p.read_text()) for p in (out / "jobs").glob("*.units.json")]
    assert len(records) == 2 and all(len(r["units"]) == 6 and os.path.exists(r["log"]) for r in records)
    done_lines = [line for r in records for line in open(r["log"]) if " INFO: done " in line]
    assert len(done_lines) == 6, "each unit is evaluated by one worker only"


def test_units_of_one_model_share_a_job_and_the_models_take_turns():
    units = [unit(m, s) for m in ("b", "a") for s in range(5)]
    groups = group_units(units, 2)
    assert [[(c.model.name, c.step) for c in g] for g in groups] == [
        [("b", 0), ("b", 1)], [("a", 0), ("a", 1)], [("b", 2), ("b", 3)], [("a", 2), ("a", 3)], [("b", 4)], [("a", 4)]]


@pytest.mark.parametrize("text, expected", [("90", 90), ("1:30", 2), ("2:00:00", 120), ("1-0", 1440),
                                           ("1-2:30", 1590), ("0-0:10:01", 11)])
def test_slurm_time_formats(text, expected):
    assert minutes(text) == expected


def test_bad_slurm_time_is_refused():
    with pytest.raises(SlurmError, match="expected minutes"):
        minutes("two hours")
