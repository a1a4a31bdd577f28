"""The sweep engine: evaluate every pending (model, step) unit and store it; resumable, one failure never stops the
rest. Both experiments run through it: grammar sweeps and memorization runs (the spec's kind selects the unit
evaluator, executors.new_evaluator).

The units are evaluated by an executor (executors.py): in this process by default, or in worker processes or Slurm
jobs. Whichever ran them, the outcome is read back from the store, so the summary and curves are the same."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from trajectories.curves import collect
from trajectories.executors import LocalExecutor, by_sweep
from trajectories.schema import GRAMMAR, Checkpoint, EvalSettings, MemorizationSpec, SweepSpec
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
    kind: str = GRAMMAR

    @property
    def ok(self) -> bool:
        return not self.failed and not self.left

    def report(self) -> str:
        what = "sweep" if self.kind == GRAMMAR else self.kind
        lines = [
            f"{what}: {len(self.done)} evaluated, {len(self.skipped)} already done, {len(self.failed)} failed "
            f"in {self.seconds:.1f} s"
        ]
        lines += [f"  FAILED {ckpt.model.name} step {ckpt.step}: {reason}" for ckpt, reason in self.failed]
        if self.left:
            lines.append(f"  {len(self.left)} units not evaluated (their job was cancelled, died or is still "
                         f"running): `trajectories status {self.out}` shows which; run the same sweep to finish")
        if self.jobs:
            lines.append(f"jobs:    {' '.join(self.jobs)} (logs in {Store(self.out).jobs_dir})")
        store = Store(self.out)
        lines.append(f"results: {store.units}")
        if self.kind == GRAMMAR:
            lines.append(f"curves:  {store.curves_path} (and .csv)")
        else:
            lines.append(f"rows:    {store.rows_path}; analyse with `trajectories analyze {self.out}`")
        return "\n".join(lines)


def run_sweep(
    spec: SweepSpec | MemorizationSpec, checkpoints: list[Checkpoint], out: str | Path, settings: EvalSettings,
    force: bool = False, suite_description: str = "", progress: bool = True, executor=None,
    rows: pd.DataFrame | None = None,
) -> SweepSummary:
    """rows: a memorization run's training rows to score (schema.ROW_COLUMNS), recorded in OUT."""
    started = time.perf_counter()
    store = Store(out)
    store.open(spec, checkpoints, suite_description, rows)
    summary = SweepSummary(store.out, kind=spec.kind)
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
    if spec.kind == GRAMMAR and store.records():  # a memorization folder has no curves: `analyze` reads its rows
        collect(store.out)
    summary.seconds = time.perf_counter() - started
    return summary
