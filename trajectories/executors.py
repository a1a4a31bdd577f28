"""Where a sweep's pending units are evaluated: in this process (`local`), in N worker processes on this machine
(`processes`), or as a Slurm job array (`slurm`). Every way runs a UnitWorker, which takes each unit's lock in the
store before evaluating it, so any mix of them can work on one OUT at once without evaluating a unit twice.

Worker processes and Slurm jobs are started through submitit; their job files and logs are in OUT/jobs/, and the
store records which units each job was given, for `trajectories status`.
"""

from __future__ import annotations

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

from trajectories import locks, slurm
from trajectories.planning import interleave, job_slices
from trajectories.schema import MEMORIZATION, Checkpoint, EvalSettings, MemorizationSpec, SweepSpec, UnitState
from trajectories.store import Store

log = logging.getLogger(__name__)

# Settings a job must see as the submitting shell did (offline mode, caches, BLiMP folder), even where a cluster's
# sbatch does not export the environment; secrets are left out of the job files.
CARRIED_ENV = ("HF_", "TRANSFORMERS_", "TRAJECTORIES_")


def new_evaluator(spec: SweepSpec | MemorizationSpec, settings: EvalSettings, store: Store):
    """The unit evaluator of the spec's experiment. Imported here: jobs set their environment before transformers
    loads."""
    if spec.kind == MEMORIZATION:
        from trajectories.memorization import MemorizationEvaluator

        return MemorizationEvaluator(spec, settings, store.rows())
    from trajectories.evaluate import Evaluator

    return Evaluator(spec, settings)


def by_sweep(record, sweep: str) -> bool:
    """Whether a unit's record (done or failed) was written by the sweep with this id."""
    return record is not None and (record.by or {}).get("sweep") == sweep


def unit_finished(store: Store, ckpt: Checkpoint, sweep: str, force: bool, since: float = math.inf) -> bool:
    """Done (when forcing: by this sweep, or since `since` by a sweep forcing it beside this one), or failed in this
    sweep or since `since`. A damaged unit is not finished."""
    unit = store.unit(ckpt.key)
    if unit.state is UnitState.DONE:
        return not force or by_sweep(unit.record, sweep) or unit.written_at >= since
    if unit.state is UnitState.FAILED:
        return by_sweep(unit.failure, sweep) or unit.failure.at >= since
    return False


class UnitWorker:
    """Evaluates units in this process, each under its lock, for the sweep `owner["sweep"]`.

    A unit is skipped when done (when forcing: done by this sweep, or by another since the worker started), or when
    it failed since the worker started. A damaged unit's files are moved to OUT/damaged/ and it is evaluated again.
    A unit another live process holds is waited for, and taken over if that process dies, so when `run` returns each
    unit is done or failed."""

    def __init__(self, spec: SweepSpec | MemorizationSpec, out: str | Path, settings: EvalSettings, owner: dict,
                 force: bool = False, poll_s: float = 2):
        self.spec, self.settings, self.owner, self.force, self.poll_s = spec, settings, owner, force, poll_s
        self.store, self.started = Store(out), time.time()
        self.evaluator = None  # built on the first unit that needs it: a resume that evaluates nothing loads nothing

    @property
    def model_loads(self) -> int:
        return self.evaluator.model_loads if self.evaluator else 0

    def finished(self, ckpt: Checkpoint) -> bool:
        return unit_finished(self.store, ckpt, self.owner["sweep"], self.force, since=self.started)

    def run(self, units: list[Checkpoint], progress: bool = False) -> None:
        with tqdm(total=len(units), desc="checkpoints", unit="ckpt", disable=not progress, dynamic_ncols=True) as bar:
            todo = list(units)
            while todo:
                busy = []
                for i, ckpt in enumerate(todo):
                    if self.finished(ckpt):
                        bar.update()
                        continue
                    if not self.store.lock(ckpt, self.owner):
                        busy.append(ckpt)
                        continue
                    bar.set_postfix_str(f"{ckpt.model.name} step {ckpt.step}")
                    try:
                        if not self.finished(ckpt):  # another process may have finished it before we took the lock
                            self.set_aside_if_damaged(ckpt)
                            self.evaluate(ckpt, self.next_free(todo[i + 1:]))
                    finally:
                        self.store.unlock(ckpt, self.owner)
                        bar.update()
                todo = busy
                if todo:
                    bar.set_postfix_str(f"waiting for {len(todo)} units another process is evaluating")
                    time.sleep(self.poll_s)

    def next_free(self, rest: list[Checkpoint]) -> Checkpoint | None:
        """The unit to prefetch: the next one nobody has finished or holds."""
        return next((c for c in rest if not self.finished(c) and not self.store.is_locked(c.key)), None)

    def set_aside_if_damaged(self, ckpt: Checkpoint) -> None:
        unit = self.store.unit(ckpt.key)
        if unit.state is UnitState.DAMAGED:
            moved = self.store.set_aside(ckpt.key)
            log.warning("damaged %s step %s: %s; moved to %s", *ckpt.key, unit.damage, ", ".join(map(str, moved)))

    def evaluate(self, ckpt: Checkpoint, next_ckpt: Checkpoint | None) -> None:
        """Evaluate and store one unit we hold. A failed evaluation is stored as the unit's failure, and the worker
        goes on; a unit that cannot be stored (a full disk, a read-only OUT) stops it: so would every other."""
        try:
            self.evaluator = self.evaluator or new_evaluator(self.spec, self.settings, self.store)
            result = self.evaluator.evaluate(ckpt, next_ckpt)
        except Exception as err:  # noqa: BLE001 - a failed unit is recorded and the sweep goes on
            log.warning("FAILED %s step %s: %s: %s", ckpt.model.name, ckpt.step, type(err).__name__, err)
            self.store.save_failure(ckpt, f"{type(err).__name__}: {err}", self.owner)
            return
        self.store.save_unit(ckpt, result, self.spec, self.owner)
        log.info("done %s step %s", ckpt.model.name, ckpt.step)


@dataclass
class UnitsJob(submitit.helpers.Checkpointable):
    """What a worker process or Slurm job runs: a UnitWorker on its units. When Slurm preempts or times out the job,
    submitit requeues it with the same units (checkpoint()); done units are skipped on the rerun."""

    spec: SweepSpec | MemorizationSpec
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
        owner = locks.owner(self.sweep, job.job_id, str(job.paths.stdout), os.environ.get("SUBMITIT_EXECUTOR"))
        UnitWorker(self.spec, self.out, self.settings, owner, self.force).run(units)


class LocalExecutor:
    """Evaluate every unit in this process. The worker is kept between calls of one sweep (an adaptive sweep's
    rounds), so lm-eval's tasks and the model are built once."""

    worker: UnitWorker | None = None

    def run(self, spec, units, out, settings, sweep, force=False, progress=True) -> tuple[int, list[str]]:
        if self.worker is None or self.worker.owner["sweep"] != sweep:
            self.worker = UnitWorker(spec, out, settings, locks.owner(sweep), force)
        loads = self.worker.model_loads
        self.worker.run(units, progress)
        return self.worker.model_loads - loads, []

    @staticmethod
    def batch(models: int) -> int:
        """Checkpoints per model an adaptive round chooses: one at a time, each choice seeing every result before."""
        return 1


class _JobsExecutor:
    """Submit units as jobs through submitit, record them and wait for them to end."""

    name = ""
    poll_s = 2

    def run(self, spec, units, out, settings, sweep, force=False, progress=True) -> tuple[int, list[str]]:
        store = Store(out)
        env = {k: v for k, v in os.environ.items() if k.startswith(CARRIED_ENV) and "TOKEN" not in k}
        job = UnitsJob(spec, str(store.out.resolve()), settings, sweep, force, env)
        jobs = self.submit(store.jobs_dir.resolve(), job, units)
        for submitted, job_units in jobs:
            store.save_job(submitted.job_id, {
                "executor": self.name, "job": submitted.job_id, "host": socket.gethostname(),
                "log": str(submitted.paths.stdout), "units": [list(c.key) for c in job_units],
            })
        ids = [j.job_id for j, _ in jobs]
        print(f"{len(ids)} {self.name} jobs for {len(units)} units: {' '.join(ids)}; logs in {store.jobs_dir}",
              file=sys.stderr)
        self.wait(store, [j for j, _ in jobs], units, sweep, force, progress)
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

    def submit(self, folder: Path, job: UnitsJob, units: list[Checkpoint]) -> list[tuple]:
        raise NotImplementedError

    @staticmethod
    def alive(jobs) -> bool:
        raise NotImplementedError


class ProcessesExecutor(_JobsExecutor):
    """N worker processes on this machine, one per GPU where the device is `cuda` and there are several. Every
    worker is given all units: worker i first every N-th unit from the i-th, then the others, so together they
    work along the order from its start; the locks share the units out as they go."""

    name = "processes"

    def __init__(self, workers: int):
        self.workers = workers

    def batch(self, models: int) -> int:
        """An adaptive round gives every worker a checkpoint."""
        return math.ceil(self.workers / models)

    def submit(self, folder, job, units):
        import torch

        executor = submitit.LocalExecutor(folder)
        executor.update_parameters(timeout_min=10**7, stderr_to_stdout=True)  # submitit's default is 2 minutes
        gpus = torch.cuda.device_count() if job.settings.device == "cuda" else 0
        jobs = []
        for i in range(self.workers):
            mine = units[i::self.workers] + [c for j, c in enumerate(units) if j % self.workers != i]
            settings = replace(job.settings, device=f"cuda:{i % gpus}") if gpus > 1 else job.settings
            jobs.append((executor.submit(replace(job, settings=settings), mine), mine))
        return jobs

    @staticmethod
    def alive(jobs) -> bool:
        return not all(j.done() for j in jobs)


class SlurmExecutor(_JobsExecutor):
    """A Slurm job array: units of one model together (weights swap cheaply), `units_per_job` per job. Each job
    takes a contiguous slice of its model's part of the order, and the jobs of the models are interleaved, so the
    array (run in index order, `array_parallelism` at a time) works along the order in waves."""

    name = "slurm"

    def __init__(self, options: slurm.ArrayOptions, units_per_job: int = 16):
        slurm.check_available()
        slurm.minutes(options.time)  # a bad --time fails before anything is submitted
        self.options, self.units_per_job = options, units_per_job

    def submit(self, folder, job, units):
        groups = group_units(units, self.units_per_job)
        return list(zip(slurm.submit_array(folder, job, groups, self.options), groups))

    def batch(self, models: int) -> int:
        """An adaptive round is one job array of a job per model: `units_per_job` checkpoints each."""
        return self.units_per_job

    @staticmethod
    def alive(jobs) -> bool:
        states = slurm.job_states([j.job_id for j in jobs])
        return states is None or any(s not in slurm.ENDED for s in states.values())


def group_units(units: list[Checkpoint], per_job: int) -> list[list[Checkpoint]]:
    """Runs of at most `per_job` consecutive units of one model (planning.job_slices of each model's units, in
    their order), interleaved: every model's first job, then every model's second, ..."""
    by_model: dict[str, list[Checkpoint]] = {}
    for ckpt in units:
        by_model.setdefault(ckpt.model.name, []).append(ckpt)
    slices = {model: job_slices(group, per_job=per_job) for model, group in by_model.items()}
    return [job for _, job in interleave(slices)]
