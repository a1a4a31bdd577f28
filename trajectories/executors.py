"""Where a sweep's pending units are evaluated: in this process (`local`), in N worker processes on this machine
(`processes`), or as a Slurm job array (`slurm`). Every way runs `evaluate_units`, which takes each unit's lock in
the store before evaluating it, so any mix of them can work on one OUT at once without evaluating a unit twice.

Worker processes and Slurm jobs are started through submitit; their job files and logs are in OUT/jobs/, and
OUT/jobs/<job>.units.json records which units each job was given, for `trajectories status`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import submitit
from tqdm.auto import tqdm

from trajectories.errors import UserError
from trajectories.schema import Checkpoint, EvalSettings, SweepSpec
from trajectories.store import SLURM_ENDED, Store, lock_owner, pid_alive, slurm_states, write_json

log = logging.getLogger(__name__)

# Settings a job must see as the submitting shell did (offline mode, caches, BLiMP folder), even where a cluster's
# sbatch does not export the environment; secrets are left out of the job files.
CARRIED_ENV = ("HF_", "TRANSFORMERS_", "TRAJECTORIES_")


class ExecutorError(UserError):
    """The executor cannot run here (e.g. no Slurm) or was given bad options."""


def evaluate_units(
    spec: SweepSpec, units: list[Checkpoint], out: str | Path, settings: EvalSettings, owner: dict,
    force: bool = False, progress: bool = False, poll_s: float = 2,
) -> int:
    """Evaluate `units` in this process, each under its lock, for the sweep `owner["sweep"]`; return how many
    checkpoints were loaded.

    A unit is skipped when done (when forcing: done by this sweep), or when it failed since we started. A unit
    another live process holds is waited for, and taken over if that process dies, so on return each unit is done
    or failed."""
    from trajectories.evaluate import Evaluator  # here: jobs set their environment before transformers loads

    store, started = Store(out), time.time()
    evaluator = None

    def finished(ckpt: Checkpoint) -> bool:
        return unit_finished(store, ckpt, owner["sweep"], force, failed_since=started)

    bar = tqdm(total=len(units), desc="checkpoints", unit="ckpt", disable=not progress, dynamic_ncols=True)
    todo = list(units)
    while todo:
        busy = []
        for i, ckpt in enumerate(todo):
            if finished(ckpt):
                bar.update()
                continue
            if not store.lock(ckpt, owner):
                busy.append(ckpt)
                continue
            try:
                if finished(ckpt):  # another process finished it between our check and our lock
                    continue
                bar.set_postfix_str(f"{ckpt.model.name} step {ckpt.step}")
                evaluator = evaluator or Evaluator(spec, settings)
                upcoming = (c for c in todo[i + 1:] if not finished(c) and not store.is_locked(c))
                try:
                    store.save_unit(ckpt, evaluator.evaluate(ckpt, next(upcoming, None)), spec, owner)
                    log.info("done %s step %s", ckpt.model.name, ckpt.step)
                except Exception as err:  # noqa: BLE001 - a failed unit is recorded and the sweep goes on
                    store.save_failure(ckpt, f"{type(err).__name__}: {err}", owner)
                    log.warning("FAILED %s step %s: %s: %s", ckpt.model.name, ckpt.step, type(err).__name__, err)
            finally:
                store.unlock(ckpt, owner)
                bar.update()
        todo = busy
        if todo:
            bar.set_postfix_str(f"waiting for {len(todo)} units another process is evaluating")
            time.sleep(poll_s)
    bar.close()
    return evaluator.model_loads if evaluator else 0


def by_sweep(record: dict | None, sweep: str) -> bool:
    """Whether a unit's record (done or failed) was written by the sweep with this id."""
    return record is not None and (record.get("by") or {}).get("sweep") == sweep


def unit_finished(store: Store, ckpt: Checkpoint, sweep: str, force: bool, failed_since: float = math.inf) -> bool:
    """Done (when forcing: done by this sweep), or failed in this sweep or since `failed_since`."""
    if store.is_done(ckpt) and (not force or by_sweep(store.record(ckpt), sweep)):
        return True
    failure = store.failure(ckpt)
    return failure is not None and (by_sweep(failure, sweep) or failure["at"] >= failed_since)


@dataclass
class UnitsJob(submitit.helpers.Checkpointable):
    """What a worker process or Slurm job runs: `evaluate_units` on its units. When Slurm preempts or times out the
    job, submitit requeues it with the same units (checkpoint()); done units are skipped on the rerun."""

    spec: SweepSpec
    out: str
    settings: EvalSettings
    sweep: str
    force: bool
    env: dict

    def __call__(self, units: list[Checkpoint]) -> None:
        os.environ.update(self.env)
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        job = submitit.JobEnvironment()
        owner = lock_owner(self.sweep, job.job_id, str(job.paths.stdout), os.environ.get("SUBMITIT_EXECUTOR"))
        evaluate_units(self.spec, units, self.out, self.settings, owner, self.force)


class LocalExecutor:
    """Evaluate every unit in this process."""

    def run(self, spec, units, out, settings, sweep, force=False, progress=True) -> tuple[int, list[str]]:
        return evaluate_units(spec, units, out, settings, lock_owner(sweep), force, progress), []


class _JobsExecutor:
    """Submit units as jobs through submitit, record them and wait for them to end."""

    poll_s = 2

    def run(self, spec, units, out, settings, sweep, force=False, progress=True) -> tuple[int, list[str]]:
        folder = Path(out).resolve() / "jobs"
        env = {k: v for k, v in os.environ.items() if k.startswith(CARRIED_ENV) and "TOKEN" not in k}
        job = UnitsJob(spec, str(Path(out).resolve()), settings, sweep, force, env)
        jobs = self.submit(folder, job, units)
        for submitted, job_units in jobs:
            write_json(folder / f"{submitted.job_id}.units.json", {
                "executor": self.name, "job": submitted.job_id, "host": socket.gethostname(),
                "log": str(submitted.paths.stdout), "units": [list(c.key) for c in job_units],
            })
        ids = [j.job_id for j, _ in jobs]
        print(f"{len(ids)} {self.name} jobs for {len(units)} units: {' '.join(ids)}; logs in {folder}", file=sys.stderr)
        self.wait(Store(out), [j for j, _ in jobs], units, sweep, force, progress)
        return 0, ids

    def wait(self, store: Store, jobs: list, units: list[Checkpoint], sweep: str, force: bool, progress: bool):
        bar = tqdm(total=len(units), desc="checkpoints", unit="ckpt", disable=not progress, dynamic_ncols=True)
        try:
            while True:
                units = [c for c in units if not unit_finished(store, c, sweep, force)]
                bar.update(bar.total - len(units) - bar.n)
                if not units or not self.alive(jobs):
                    break
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            print(f"stopped waiting; the jobs go on. `trajectories status {store.out}` follows them", file=sys.stderr)
        bar.close()


class ProcessesExecutor(_JobsExecutor):
    """N worker processes on this machine, one per GPU where the device is `cuda` and there are several. Every
    worker is given all units, starting at a different place; the locks share the units out as they go."""

    name = "processes"

    def __init__(self, workers: int):
        self.workers = workers

    def submit(self, folder, job, units):
        import torch

        executor = submitit.LocalExecutor(folder)
        executor.update_parameters(timeout_min=10**7, stderr_to_stdout=True)  # submitit's default is 2 minutes
        gpus = torch.cuda.device_count() if job.settings.device == "cuda" else 0
        jobs = []
        for i in range(self.workers):
            start = i * len(units) // self.workers
            mine = units[start:] + units[:start]
            settings = replace(job.settings, device=f"cuda:{i % gpus}") if gpus > 1 else job.settings
            jobs.append((executor.submit(replace(job, settings=settings), mine), mine))
        return jobs

    @staticmethod
    def alive(jobs) -> bool:
        return not all(j.done() for j in jobs)


@dataclass
class SlurmExecutor(_JobsExecutor):
    """A Slurm job array: units of one model together (weights swap cheaply), `units_per_job` per job."""

    name = "slurm"
    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int | None = None
    mem: str | None = None
    time: str = "4:00:00"
    array_parallelism: int = 64
    units_per_job: int = 16

    def __post_init__(self):
        if submitit.SlurmExecutor.affinity() < 0:
            raise ExecutorError("--executor slurm: no Slurm here (srun not found); use local or processes")
        self.minutes = slurm_minutes(self.time)

    def submit(self, folder, job, units):
        executor = submitit.SlurmExecutor(folder, max_num_timeout=20)  # a timed-out job is requeued up to 20 times
        options = {"partition": self.partition, "cpus_per_task": self.cpus_per_job, "mem": self.mem}
        executor.update_parameters(
            job_name="trajectories", time=self.minutes, gpus_per_node=self.gpus_per_job or None,
            array_parallelism=self.array_parallelism, stderr_to_stdout=True,
            **{k: v for k, v in options.items() if v is not None},
        )
        groups = group_units(units, self.units_per_job)
        return list(zip(executor.map_array(job, groups), groups))

    @staticmethod
    def alive(jobs) -> bool:
        states = slurm_states([j.job_id for j in jobs])
        return states is None or any(s not in SLURM_ENDED for s in states.values())


def group_units(units: list[Checkpoint], per_job: int) -> list[list[Checkpoint]]:
    """Runs of at most `per_job` units of one model, models in the order they first appear."""
    by_model: dict[str, list[Checkpoint]] = {}
    for ckpt in units:
        by_model.setdefault(ckpt.model.name, []).append(ckpt)
    return [group[i:i + per_job] for group in by_model.values() for i in range(0, len(group), per_job)]


def slurm_minutes(text: str) -> int:
    """Slurm's --time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) as whole minutes, which submitit needs."""
    days, _, clock = text.strip().rpartition("-")
    try:
        parts = [int(p) for p in clock.split(":")]
        days_n = int(days) if days else 0
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3:
        raise ExecutorError(f"--time {text!r}: expected minutes, H:M:S or D-H:M:S")
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    else:
        hours, minutes, seconds = parts if len(parts) == 3 else [0, *parts, 0][:3]
    return (days_n * 24 + hours) * 60 + minutes + (seconds > 0)


def describe_jobs(store: Store) -> list[str]:
    """`status` lines: who holds each unit being evaluated (job, state, host, heartbeat, log), then each recorded
    job that still has units left, with its state and log."""
    locks = store.locks()
    finished = {(u["model"]["name"], u["step"]) for u in store.done_units()}
    finished |= {(f["model"], f["step"]) for f in store.failures()}
    records = [json.loads(p.read_text()) for p in sorted((store.out / "jobs").glob("*.units.json"))]
    open_jobs = [r | {"left": [u for u in r["units"] if tuple(u) not in finished]} for r in records]
    open_jobs = [r for r in open_jobs if r["left"]]
    slurm_jobs = {r["job"] for r in open_jobs if r["executor"] == "slurm"}
    slurm_jobs |= {h["job"] for h in locks if h.get("executor") == "slurm"}
    states = slurm_states(sorted(slurm_jobs)) or {}
    lines = ["in progress:"] if locks else []
    for h in locks:
        who = f"job {h['job']} {states.get(h['job'], '')}".rstrip() if h.get("job") else "sweep"
        stale = ", STALE: its holder is gone, the next sweep takes the unit over" if h["stale"] else ""
        lines.append(f"  {h['model']} step {h['step']}: {who} on {h.get('host')} pid {h.get('pid')}, "
                     f"heartbeat {h['heartbeat_age']:.0f} s ago{stale}")
        if h.get("log"):
            lines.append(f"    log {h['log']}")
    lines += ["jobs with units left:"] if open_jobs else []
    for r in open_jobs:
        if r["executor"] == "slurm":
            state = states.get(r["job"], "UNKNOWN")
        else:
            state = "RUNNING" if r["host"] == socket.gethostname() and pid_alive(int(r["job"])) else "ENDED"
        lines.append(f"  {r['job']} {state}: {len(r['left'])} of {len(r['units'])} units left; log {r['log']}")
    return lines
