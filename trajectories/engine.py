"""The sweep engine: evaluate every pending (model, step) unit and store it; resumable, one failure never stops the
rest. Both experiments run through it: grammar sweeps and memorization runs (the spec's kind selects the unit
evaluator, executors.new_evaluator).

The units are evaluated by an executor (executors.py): in this process by default, or in worker processes or Slurm
jobs. Whichever ran them, the outcome is read back from the store, so the summary and curves are the same.

Before anything is evaluated the suite's checkpoints are audited (integrity.py) from their listings, and the summary is
printed. Units the audit finds unusable (no branch, a config out of line) fail at once, without a download. Of a
group of byte-identical checkpoints only one is evaluated (by default; `duplicates="evaluate"` evaluates each): the
others get a record with the same results and `same_weights_as`, the step they were taken from.

Units run in coarse-to-fine order by default (planning.sweep_order): any prefix of a sweep, one cut short or still
running, covers every model's training span. An adaptive sweep (`adaptive`) evaluates only what planning.plan
chooses, round by round over the results so far, and records each decision in OUT (adaptive.jsonl)."""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from trajectories import locks
from trajectories.curves import collect, curves_from_units, with_phenomena
from trajectories.executors import LocalExecutor, by_sweep
from trajectories.integrity import Audit, reuse_lines
from trajectories.planning import PlanningError, curves_from_table, plan, sweep_order
from trajectories.schema import (
    GRAMMAR,
    AdaptiveSettings,
    Checkpoint,
    Decision,
    EvalSettings,
    MemorizationSpec,
    SweepSpec,
    UnitRecord,
    UnitResult,
    UnitState,
)
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
    kind: str = GRAMMAR
    plans: dict[str, Decision] = field(default_factory=dict)  # adaptive: each model's stop record
    unplanned: list[str] = field(default_factory=list)  # adaptive: models it could not plan for, and why

    @property
    def ok(self) -> bool:
        return not self.failed and not self.left

    def report(self) -> str:
        what = "sweep" if self.kind == GRAMMAR else self.kind
        store = Store(self.out)
        lines = [
            f"{what}: {len(self.done)} evaluated, {len(self.skipped)} already done, {len(self.failed)} failed, "
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
        lines += [f"  adaptive: {d.describe()}" for d in self.plans.values()]
        lines += [f"  adaptive: not planned further: {why}" for why in self.unplanned]
        if self.plans or self.unplanned:
            lines.append(f"  decisions: {store.decisions_path}")
        if self.jobs:
            lines.append(f"jobs:    {' '.join(self.jobs)} (logs in {store.jobs_dir})")
        lines.append(f"results: {store.units}")
        if self.kind != GRAMMAR:
            lines.append(f"rows:    {store.rows_path}; analyse with `trajectories analyze {self.out}`")
        elif store.curves_path.exists():
            lines.append(f"curves:  {store.curves_path} (and .csv)")
        lines += [f"W&B:     {self.wandb_run}"] if self.wandb_run else []
        return "\n".join(lines)


def run_sweep(
    spec: SweepSpec | MemorizationSpec, checkpoints: list[Checkpoint], out: str | Path, settings: EvalSettings,
    force: bool = False, suite_description: str = "", progress: bool = True, executor=None, suite=None,
    duplicates: str = "reuse", rows: pd.DataFrame | None = None, order: str = "coarse-to-fine",
    budget: str | None = None, adaptive: AdaptiveSettings | None = None,
) -> SweepSummary:
    """`suite`: the checkpoints' suite, to audit them (None: no audit); `duplicates`: "reuse" or "evaluate";
    `rows`: a memorization run's training rows to score (schema.ROW_COLUMNS), recorded in OUT; `order`: one of
    schema.ORDERS; `budget`: evaluate only the first so many of each model's coarse-to-fine order; `adaptive`:
    evaluate only the checkpoints planning.plan chooses."""
    from trajectories.suites import audit_checkpoints

    started, started_at = time.perf_counter(), time.time()
    store = Store(out)
    store.open(spec, checkpoints, suite_description, rows)
    summary = SweepSummary(store.out, kind=spec.kind)
    sweep = uuid.uuid4().hex[:12]  # each unit's record names the sweep that evaluated it
    failing, groups = {}, {}
    if suite is not None:
        summary.audit = audit_checkpoints(suite, checkpoints, progress)
        print(summary.audit.summary(), file=sys.stderr)
        checkpoints = [replace(c, listing=summary.audit.listings.get(c.key)) for c in checkpoints]
        failing = summary.audit.failing()
        groups = summary.audit.groups() if duplicates == "reuse" else {}
    by_key = {c.key: c for c in checkpoints}
    checkpoints = [by_key[key] for key in (list(by_key) if adaptive else sweep_order(list(by_key), order, budget))]
    units = _Units(store, spec, settings, executor or LocalExecutor(), sweep, force, progress, failing, groups,
                   by_key, started_at, summary)
    if adaptive is None:
        units.run(checkpoints)
    else:
        _adaptive(units, checkpoints, adaptive)
    summary.damaged = [(ckpt, why) for ckpt, why in summary.damaged if ckpt not in summary.left]
    if spec.kind == GRAMMAR and store.records():  # a memorization folder has no curves: `analyze` reads its rows
        collect(store.out)
    summary.seconds = time.perf_counter() - started
    return summary


@dataclass
class _Units:
    """Runs lists of units for one sweep: skips those done, fails those the audit fails, gives duplicates the
    results of the step they copy, evaluates the rest on the executor, and tallies every outcome in the summary."""

    store: Store
    spec: SweepSpec
    settings: EvalSettings
    executor: object
    sweep: str
    force: bool
    progress: bool
    failing: dict
    groups: dict
    by_key: dict  # every checkpoint of the sweep, by key
    started_at: float
    summary: SweepSummary

    def run(self, checkpoints: list[Checkpoint]) -> None:
        store, summary, owner = self.store, self.summary, locks.owner(self.sweep)
        pending, followers = [], {}
        for ckpt in checkpoints:
            unit = store.unit(ckpt.key)
            if unit.state is UnitState.DAMAGED:
                summary.damaged.append((ckpt, unit.damage))
            if not self.force and unit.state is UnitState.DONE:
                summary.skipped.append(ckpt)
            elif ckpt.key in self.failing:
                if unit.state is UnitState.DAMAGED:
                    store.set_aside(ckpt.key)
                store.save_failure(ckpt, self.failing[ckpt.key], owner)
                summary.failed.append((ckpt, self.failing[ckpt.key]))
            elif ckpt.key in self.groups and (source := _source(store, ckpt, self.groups[ckpt.key],
                                                                  self.force)) != ckpt.step:
                followers[ckpt] = source
            else:
                pending.append(ckpt)
        # A duplicate's source step is evaluated too, even where the order (or the adaptive plan) left it out.
        sources = {(c.model.name, s) for c, s in followers.items()} - {c.key for c in pending}
        pending += [self.by_key[key] for key in sorted(sources) if self.force or not store.is_done(key)]
        if pending:
            loads, jobs = self.executor.run(self.spec, pending, store.out, self.settings, self.sweep, self.force,
                                            self.progress)
            summary.model_loads += loads
            summary.jobs += jobs
        for ckpt in pending:
            unit = store.unit(ckpt.key)
            if unit.state is UnitState.DONE:
                # Done by a sweep beside this one counts as already done; forced, only what was done since we started.
                ours, meanwhile = by_sweep(unit.record, self.sweep), unit.written_at >= self.started_at
                (summary.done if ours else summary.skipped if meanwhile or not self.force else summary.left
                 ).append(ckpt)
            elif unit.state is UnitState.FAILED and by_sweep(unit.failure, self.sweep):
                summary.failed.append((ckpt, unit.failure.reason))
            else:
                summary.left.append(ckpt)
        for ckpt, source in followers.items():
            _reuse(store, ckpt, source, self.spec, owner, self.force, summary)


def _adaptive(units: _Units, checkpoints: list[Checkpoint], adaptive: AdaptiveSettings) -> None:
    """Rounds of planning.plan over the results so far, each round's choices evaluated together, until every model
    has a stop record. Decisions are recorded in OUT before their checkpoints are evaluated: a run stopped at any
    moment first finishes the checkpoints chosen, then plans on, making the choices it would have made."""
    store, summary = units.store, units.summary
    steps: dict[str, list[int]] = {}
    for ckpt in checkpoints:
        steps.setdefault(ckpt.model.name, []).append(ckpt.step)
    batch = units.executor.batch(len(steps))
    chosen = {(d.model, d.step) for d in store.decisions() if (d.model, d.step) in units.by_key}
    todo = [c for c in checkpoints if c.key in chosen and not store.is_done(c.key)]
    while True:
        left = len(summary.left)
        units.run(todo)
        if len(summary.left) > left or not steps:
            return  # every model stopped; or jobs died or were cancelled: the rerun finishes them and plans on
        todo, decisions = [], []
        for model, plans in next_decisions(store, steps, adaptive, batch, chosen).items():
            if isinstance(plans, str):
                summary.unplanned.append(f"{model}: {plans}")
                del steps[model]
                continue
            if plans and plans[-1].stopped:
                summary.plans[model] = plans[-1]
                del steps[model]
                last = _last_decision(store, model)
                if last is not None and (last.rule, last.chosen) == (plans[-1].rule, plans[-1].chosen):
                    plans = plans[:-1]  # the same stop as the run before: no need to say it again
            decisions += plans
            todo += [units.by_key[(model, d.step)] for d in plans if not d.stopped]
        store.add_decisions(decisions)
        chosen |= {c.key for c in todo}
        if not todo:
            return


def next_decisions(store: Store | None, steps: dict[str, list[int]], adaptive: AdaptiveSettings, batch: int = 1,
                   chosen: set | None = None) -> dict[str, list[Decision] | str]:
    """Each model's next decisions (planning.plan) from OUT's results at its `steps` (store None: no results yet);
    steps chosen before (`chosen`, default: OUT's decisions) that have no result are pending. For a model it cannot
    plan for (its first pass failed), why."""
    if chosen is None:
        chosen = {(d.model, d.step) for d in store.decisions()} if store else set()
    records = store.records() if store else []
    keys = {(model, step) for model, found in steps.items() for step in found}
    curves = curves_from_table(planning_table([r for r in records if r.key in keys]))
    done = {r.key for r in records}
    out: dict[str, list[Decision] | str] = {}
    for model, found in steps.items():
        pending = [s for s in found if (model, s) in chosen and (model, s) not in done]
        try:
            out[model] = plan(model, found, curves.get(model, []), adaptive.budget, pending=pending,
                              first_pass=adaptive.first_pass, tolerance=adaptive.tolerance, batch=batch)
        except PlanningError as err:
            out[model] = str(err)
    return out


def _last_decision(store: Store, model: str):
    return next((d for d in reversed(store.decisions()) if d.model == model), None)


def planning_table(records: list[UnitRecord]) -> pd.DataFrame:
    """The curve rows an adaptive sweep plans by: the units' paradigms, phenomena and metrics, with CIs from
    lm-eval's standard errors (no bootstrap: it is rebuilt after every round), rows without one left out."""
    table = with_phenomena(curves_from_units(records))
    return table[table.acc.notna() & table.acc_stderr.notna()]


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
