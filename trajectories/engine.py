"""The sweep engine: evaluate every pending (model, step) unit and store it; resumable, one failure never stops the
rest.

The units are evaluated by an executor (executors.py): in this process by default, or in worker processes or Slurm
jobs. Whichever ran them, the outcome is read back from the store, so the summary and curves are the same.

Before anything is evaluated the suite's checkpoints are audited (integrity.py) from their listings, and the summary is
printed. Units the audit finds unusable (no branch, a config out of line) fail at once, without a download. Of a
group of byte-identical checkpoints only one is evaluated (by default; `duplicates="evaluate"` evaluates each): the
others get a record with the same results and `same_weights_as`, the step they were taken from."""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from trajectories import locks
from trajectories.curves import collect
from trajectories.executors import LocalExecutor, by_sweep
from trajectories.integrity import Audit, reuse_lines
from trajectories.schema import Checkpoint, EvalSettings, SweepSpec, UnitResult, UnitState
from trajectories.store import Store


@dataclass
class SweepSummary:
    out: Path
    done: list[Checkpoint] = field(default_factory=list)
    skipped: list[Checkpoint] = field(default_factory=list)
    failed: list[tuple[Checkpoint, str]] = field(default_factory=list)
    left: list[Checkpoint] = field(default_factory=list)  # neither done nor failed: a job died or was cancelled
    damaged: list[tuple[Checkpoint, str]] = field(default_factory=list)  # found damaged, set aside, evaluated again
    reused: dict[Checkpoint, int] = field(default_factory=dict)  # not evaluated: the step whose weights it has
    audit: Audit | None = None
    jobs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    model_loads: int = 0
    wandb_run: str | None = None  # the W&B run's URL (or folder, offline) when the curves were logged there

    @property
    def ok(self) -> bool:
        return not self.failed and not self.left

    def report(self) -> str:
        store = Store(self.out)
        lines = [
            f"sweep: {len(self.done)} evaluated, {len(self.skipped)} already done, {len(self.failed)} failed, "
            f"{len(self.reused)} reused (identical weights) in {self.seconds:.1f} s"
        ]
        lines += [f"  damaged {ckpt.model.name} step {ckpt.step}: {reason}; its files were moved to "
                  f"{store.damaged_dir / ckpt.model.name} and the unit redone" for ckpt, reason in self.damaged]
        lines += [f"  FAILED {ckpt.model.name} step {ckpt.step}: {reason}" for ckpt, reason in self.failed]
        lines += [f"  {line}, results reused (not evaluated again; --duplicates evaluate evaluates them)"
                  for line in reuse_lines({c.key: source for c, source in self.reused.items()})]
        if self.left:
            lines.append(f"  {len(self.left)} units not evaluated (their job was cancelled, died or is still "
                         f"running): `trajectories status {self.out}` shows which; run the same sweep to finish")
        if self.jobs:
            lines.append(f"jobs:    {' '.join(self.jobs)} (logs in {store.jobs_dir})")
        lines.append(f"results: {store.units}")
        if store.curves_path.exists():
            lines.append(f"curves:  {store.curves_path} (and .csv)")
        lines += [f"W&B:     {self.wandb_run}"] if self.wandb_run else []
        return "\n".join(lines)


def run_sweep(
    spec: SweepSpec, checkpoints: list[Checkpoint], out: str | Path, settings: EvalSettings, force: bool = False,
    suite_description: str = "", progress: bool = True, executor=None, suite=None, duplicates: str = "reuse",
) -> SweepSummary:
    """`suite`: the checkpoints' suite, to audit them (None: no audit); `duplicates`: "reuse" or "evaluate"."""
    from trajectories.suites import audit_checkpoints

    started, started_at = time.perf_counter(), time.time()
    store = Store(out)
    store.open(spec, checkpoints, suite_description)
    summary = SweepSummary(store.out)
    sweep = uuid.uuid4().hex[:12]  # each unit's record names the sweep that evaluated it
    owner = locks.owner(sweep)
    failing, groups = {}, {}
    if suite is not None:
        summary.audit = audit_checkpoints(suite, checkpoints, progress)
        print(summary.audit.summary(), file=sys.stderr)
        checkpoints = [replace(c, listing=summary.audit.listings.get(c.key)) for c in checkpoints]
        failing = summary.audit.failing()
        groups = summary.audit.groups() if duplicates == "reuse" else {}
    pending, followers = [], {}
    for ckpt in checkpoints:
        unit = store.unit(ckpt.key)
        if unit.state is UnitState.DAMAGED:
            summary.damaged.append((ckpt, unit.damage))
        if not force and unit.state is UnitState.DONE:
            summary.skipped.append(ckpt)
        elif ckpt.key in failing:
            if unit.state is UnitState.DAMAGED:
                store.set_aside(ckpt.key)
            store.save_failure(ckpt, failing[ckpt.key], owner)
            summary.failed.append((ckpt, failing[ckpt.key]))
        elif ckpt.key in groups and (source := _source(store, ckpt, groups[ckpt.key], force)) != ckpt.step:
            followers[ckpt] = source
        else:
            pending.append(ckpt)
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
    for ckpt, source in followers.items():
        _reuse(store, ckpt, source, spec, owner, force, summary)
    summary.damaged = [(ckpt, why) for ckpt, why in summary.damaged if ckpt not in summary.left]
    if store.records():
        collect(store.out)
    summary.seconds = time.perf_counter() - started
    return summary


def _source(store: Store, ckpt: Checkpoint, group: tuple[int, ...], force: bool) -> int:
    """The step of a duplicate group that is evaluated: one already done, else the group's first."""
    done = [step for step in group if not force and store.is_done((ckpt.model.name, step))]
    return done[0] if done else group[0]


def _reuse(store: Store, ckpt: Checkpoint, source: int, spec: SweepSpec, owner: dict, force: bool,
           summary: SweepSummary) -> None:
    """Store a unit whose weights are identical to step `source`'s with that step's results, once it has them."""
    source_key = (ckpt.model.name, source)
    record = store.record(source_key)
    if record is None:
        failure = store.failure(source_key)
        if failure is None or not by_sweep(failure, owner["sweep"]):
            summary.left.append(ckpt)  # its source is still being evaluated elsewhere: the next sweep reuses it
            return
        reason = f"the weights of step {source}, which failed: {failure.reason}"
        store.save_failure(ckpt, reason, owner)
        summary.failed.append((ckpt, reason))
        return
    if not store.lock(ckpt, owner):
        summary.left.append(ckpt)
        return
    try:
        unit = store.unit(ckpt.key)
        if unit.state is UnitState.DAMAGED:
            store.set_aside(ckpt.key)
        if force or unit.state is not UnitState.DONE:
            items = store.unit_items(source_key).assign(step=ckpt.step)
            commit = ckpt.listing.commit if ckpt.listing else None
            result = UnitResult(record.tasks, items, {}, record.provenance | {"commit": commit})
            store.save_unit(ckpt, result, spec, owner, same_weights_as=source)
    finally:
        store.unlock(ckpt, owner)
    summary.reused[ckpt] = source
