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
from trajectories.schema import Checkpoint, EvalSettings, SweepSpec, UnitState
from trajectories.store import Store


@dataclass
class SweepSummary:
    out: Path
    done: list[Checkpoint] = field(default_factory=list)
    skipped: list[Checkpoint] = field(default_factory=list)
    failed: list[tuple[Checkpoint, str]] = field(default_factory=list)
    left: list[Checkpoint] = field(default_factory=list)  # neither done nor failed: a job died or was cancelled
    damaged: list[tuple[Checkpoint, str]] = field(default_factory=list)  # found damaged, set aside, evaluated again
    jobs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    model_loads: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.left

    def report(self) -> str:
        store = Store(self.out)
        lines = [
            f"sweep: {len(self.done)} evaluated, {len(self.skipped)} already done, {len(self.failed)} failed "
            f"in {self.seconds:.1f} s"
        ]
        lines += [f"  damaged {ckpt.model.name} step {ckpt.step}: {reason}; its files were moved to "
                  f"{store.damaged_dir / ckpt.model.name} and it was evaluated again" for ckpt, reason in self.damaged]
        lines += [f"  FAILED {ckpt.model.name} step {ckpt.step}: {reason}" for ckpt, reason in self.failed]
        if self.left:
            lines.append(f"  {len(self.left)} units not evaluated (their job was cancelled, died or is still "
                         f"running): `trajectories status {self.out}` shows which; run the same sweep to finish")
        if self.jobs:
            lines.append(f"jobs:    {' '.join(self.jobs)} (logs in {store.jobs_dir})")
        lines.append(f"results: {store.units}")
        if store.curves_path.exists():
            lines.append(f"curves:  {store.curves_path} (and .csv)")
        return "\n".join(lines)


def run_sweep(
    spec: SweepSpec, checkpoints: list[Checkpoint], out: str | Path, settings: EvalSettings, force: bool = False,
    suite_description: str = "", progress: bool = True, executor=None,
) -> SweepSummary:
    started, started_at = time.perf_counter(), time.time()
    store = Store(out)
    store.open(spec, checkpoints, suite_description)
    summary = SweepSummary(store.out)
    sweep = uuid.uuid4().hex[:12]  # each unit's record names the sweep that evaluated it
    pending = []
    for ckpt in checkpoints:
        unit = store.unit(ckpt.key)
        if unit.state is UnitState.DAMAGED:
            summary.damaged.append((ckpt, unit.damage))
        (pending if force or unit.state is not UnitState.DONE else summary.skipped).append(ckpt)
    if pending:
        executor = executor or LocalExecutor()
        summary.model_loads, summary.jobs = executor.run(spec, pending, store.out, settings, sweep, force, progress)
    for ckpt in pending:
        unit = store.unit(ckpt.key)
        if unit.state is UnitState.DONE:
            # Done by a sweep beside this one counts as already done; forced, only what was done since we started.
            ours, meanwhile = by_sweep(unit.record, sweep), unit.written_at >= started_at
            (summary.done if ours else summary.skipped if meanwhile or not force else summary.left).append(ckpt)
        elif unit.state is UnitState.FAILED and by_sweep(unit.failure, sweep):
            summary.failed.append((ckpt, unit.failure.reason))
        else:
            summary.left.append(ckpt)
    summary.damaged = [(ckpt, why) for ckpt, why in summary.damaged if ckpt not in summary.left]
    if store.records():
        collect(store.out)
    summary.seconds = time.perf_counter() - started
    return summary
