"""The sweep engine: evaluate every pending (model, step) unit and store it; resumable, one failure never stops the
rest.

The units are evaluated by an executor (executors.py): in this process by default, or in worker processes or Slurm
jobs. Whichever ran them, the outcome is read back from the store, so the summary and curves are the same."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from trajectories.curves import collect
from trajectories.executors import LocalExecutor, by_sweep
from trajectories.schema import Checkpoint, EvalSettings, SweepSpec
from trajectories.store import Store


@dataclass
class SweepSummary:
    out: Path
    done: list[Checkpoint] = field(default_factory=list)
    skipped: list[Checkpoint] = field(default_factory=list)
    failed: list[tuple[Checkpoint, str]] = field(default_factory=list)
    left: list[Checkpoint] = field(default_factory=list)  # neither done nor failed: a job died or was cancelled
    jobs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    model_loads: int = 0
    wandb_run: str | None = None  # the W&B run's URL (or folder, offline) when the curves were logged there

    @property
    def ok(self) -> bool:
        return not self.failed and not self.left

    def report(self) -> str:
        lines = [
            f"sweep: {len(self.done)} evaluated, {len(self.skipped)} already done, {len(self.failed)} failed "
            f"in {self.seconds:.1f} s"
        ]
        lines += [f"  FAILED {ckpt.model.name} step {ckpt.step}: {reason}" for ckpt, reason in self.failed]
        if self.left:
            lines.append(f"  {len(self.left)} units not evaluated (their job was cancelled, died or is still "
                         f"running): `trajectories status {self.out}` shows which; run the same sweep to finish")
        if self.jobs:
            lines.append(f"jobs:    {' '.join(self.jobs)} (logs in {Store(self.out).jobs_dir})")
        store = Store(self.out)
        lines += [f"results: {store.units}", f"curves:  {store.curves_path} (and .csv)"]
        lines += [f"W&B:     {self.wandb_run}"] if self.wandb_run else []
        return "\n".join(lines)


def run_sweep(
    spec: SweepSpec, checkpoints: list[Checkpoint], out: str | Path, settings: EvalSettings, force: bool = False,
    suite_description: str = "", progress: bool = True, executor=None,
) -> SweepSummary:
    started = time.perf_counter()
    store = Store(out)
    store.open(spec, checkpoints, suite_description)
    summary = SweepSummary(store.out)
    sweep = uuid.uuid4().hex[:12]  # each unit's record names the sweep that evaluated it
    pending = []
    for ckpt in checkpoints:
        (pending if force or not store.is_done(ckpt.key) else summary.skipped).append(ckpt)
    if pending:
        executor = executor or LocalExecutor()
        summary.model_loads, summary.jobs = executor.run(spec, pending, store.out, settings, sweep, force, progress)
    for ckpt in pending:
        if record := store.record(ckpt.key):
            # Done by a sweep running beside this one counts as already done; forced, only our own result counts.
            (summary.done if by_sweep(record, sweep) else summary.left if force else summary.skipped).append(ckpt)
        elif by_sweep(failure := store.failure(ckpt.key), sweep):
            summary.failed.append((ckpt, failure.reason))
        else:
            summary.left.append(ckpt)
    if store.records():
        collect(store.out)
    summary.seconds = time.perf_counter() - started
    return summary
