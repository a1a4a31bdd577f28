"""Which checkpoints to evaluate, and in what order, when evaluating all of them costs too much.

Acquisition happens in a few places on the step axis, so a sweep need not load every checkpoint:

- `coarse_to_fine`: an order of a model's steps whose every prefix covers the training span evenly on the symlog
  step axis (endpoints, middle, quarters, ...). Cut it anywhere (a budget, a Slurm job's slice) and the curve is
  sampled everywhere, more finely the more is run. `interleave` and `job_slices` spread it over models and jobs;
  `sweep_order` is the order a sweep runs its units in.
- `plan`: adaptive selection. After a coarse first pass (a prefix of that order) it picks, one round at a time, the
  checkpoint inside the gap between evaluated neighbours where some curve moves the most relative to its CI, and
  stops at the budget or once every curve is within tolerance of linear between its neighbours. It is a pure
  function of (results, steps, settings), so a run that crashed makes the same choices when started again, and a
  larger budget continues where a smaller one stopped. Each choice comes with a `Decision` record (JSON lines).
- `acquisition_interval`, `interpolated_spans`: what a subset of checkpoints can say: an acquisition step only
  known to lie between two evaluated steps, and the spans of a curve that are drawn without a checkpoint.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd

from trajectories.analysis import CHANCE, monotone_fit
from trajectories.errors import UserError
from trajectories.schema import Decision
from trajectories.stats import Z95

T = TypeVar("T")
MIN_SE = 1e-3  # floor for standard errors: a curve at exactly 0 or 1 (stderr 0) must not divide by zero
BUDGET_FORMS = "a number of checkpoints per model (e.g. 40) or a percentage of each model's checkpoints (e.g. 30%)"


class PlanningError(UserError):
    """A budget, a setting or the results handed to the planner are unusable; the message says why."""


def symlog(steps) -> np.ndarray:
    """Position on the symlog step axis: linear near 0, logarithmic above (log1p), so step 0 has a place."""
    return np.log1p(np.asarray(steps, float))


# ---------------------------------------------------------------------------------------------------- orders
def _distinct(steps) -> list[int]:
    steps = sorted({int(s) for s in steps})
    if steps and steps[0] < 0:
        raise PlanningError(f"training steps cannot be negative, got {steps[0]}")
    return steps


def _tail_start(steps: list[int]) -> int:
    """Index of the first step of the evenly spaced tail that follows a log-spaced head (Pythia: 1000 after
    0, 1, 2, 4 ... 512), or 0 when the schedule has no such head and tail of at least three steps each.

    The tail starts after the last gap shorter than half the median gap. It is evenly spaced if most of its gaps
    are its median gap (within 10%): longer gaps (missing checkpoints) are allowed, a log-spaced tail is not."""
    gaps = np.diff(steps)
    if len(gaps) < 4:
        return 0
    short = np.flatnonzero(gaps < np.median(gaps) / 2)
    start = int(short[-1]) + 1 if len(short) else 0
    tail = gaps[start:]
    even = np.mean(np.abs(tail - np.median(tail)) <= 0.1 * np.median(tail)) >= 0.5 if len(tail) else False
    return start if start >= 3 and len(steps) - start >= 3 and even else 0


def coarse_to_fine(steps: Sequence[int]) -> list[int]:
    """The distinct steps reordered so that every prefix covers the training span evenly on the symlog axis.

    First the two endpoints and, where the schedule has a log-spaced head, the first step after it: the head is a
    region of its own, bisected level by level alongside the evenly spaced tail rather than all first or all last
    (on Pythia its 11 steps come among the first 20, interleaved with the tail's). Then breadth-first bisection: at
    each level every gap gets the step nearest its symlog midpoint, widest gaps first; ties go to the smaller step."""
    steps = _distinct(steps)
    if len(steps) <= 2:
        return steps
    x, tail = symlog(steps), _tail_start(steps)
    anchors = [0, len(steps) - 1, *([tail] if tail else [])]
    order = [steps[i] for i in anchors]
    bounds = sorted(anchors)
    gaps = list(zip(bounds, bounds[1:]))
    while gaps:
        level = []
        for lo, hi in sorted(gaps, key=lambda g: (x[g[0]] - x[g[1]], g[0])):
            if hi - lo < 2:
                continue
            mid = lo + 1 + int(np.argmin(np.abs(x[lo + 1:hi] - (x[lo] + x[hi]) / 2)))
            order.append(steps[mid])
            level += [(lo, mid), (mid, hi)]
        gaps = level
    return order


def interleave(orders: Mapping[str, Sequence[T]]) -> list[tuple[str, T]]:
    """(model, item) pairs, round-robin: every model's k-th item comes before any model's (k+1)-th, so any prefix
    (a budget, the first jobs) covers every model. Models keep the mapping's order."""
    rounds = max((len(order) for order in orders.values()), default=0)
    return [(model, order[k]) for k in range(rounds) for model, order in orders.items() if k < len(order)]


def sweep_order(keys: Sequence[tuple[str, T]], order: str = "coarse-to-fine",
                budget: Budget | int | str | None = None) -> list[tuple[str, T]]:
    """(model, step) units in the order a sweep evaluates them (schema.ORDERS): "sequential" as given;
    "coarse-to-fine" each model's steps in `coarse_to_fine` order, the models interleaved, so that any prefix of the
    run covers every model's training span. `budget` (coarse-to-fine only): each model's first so many."""
    if order == "sequential":
        if budget is not None:
            raise PlanningError("a budget cuts a coarse-to-fine order; a sequential sweep runs every step given")
        return list(keys)
    steps: dict[str, list] = {}
    for model, step in keys:
        steps.setdefault(model, []).append(step)
    orders = {model: coarse_to_fine(found) for model, found in steps.items()}
    if budget is not None:
        orders = {model: found[:parse_budget(budget).of(len(found))] for model, found in orders.items()}
    return interleave(orders)


def job_slices(order: Sequence[T], per_job: int | None = None, jobs: int | None = None) -> list[list[T]]:
    """Cut an order into contiguous slices, one per job: `per_job` items each (the last may hold fewer), or `jobs`
    slices whose sizes differ by at most one (earlier slices larger). Run the slices in order and every finished
    prefix of jobs is a coarse-to-fine prefix. To keep a model's checkpoints in one job, slice each model's order
    and `interleave` the slices."""
    if (per_job is None) == (jobs is None):
        raise PlanningError("give exactly one of per_job (items per job) or jobs (number of jobs)")
    size = per_job if per_job is not None else jobs
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise PlanningError(f"{'per_job' if per_job is not None else 'jobs'} must be a positive integer, not {size!r}")
    order = list(order)
    if per_job is not None:
        return [order[i:i + per_job] for i in range(0, len(order), per_job)]
    jobs = min(jobs, len(order))
    size, extra = divmod(len(order), jobs) if jobs else (0, 0)
    cuts = np.cumsum([0] + [size + (i < extra) for i in range(jobs)])
    return [order[a:b] for a, b in zip(cuts, cuts[1:])]


# ---------------------------------------------------------------------------------------------------- budget
@dataclass(frozen=True)
class Budget:
    """Checkpoints per model: a count, or a percentage of the model's checkpoints (rounded up)."""

    count: int | None = None
    percent: float | None = None

    def of(self, n_steps: int) -> int:
        want = self.count if self.count is not None else math.ceil(round(self.percent * n_steps / 100, 9))
        return min(n_steps, max(1, want))

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


def parse_budget(spec: Budget | int | str) -> Budget:
    """`40` or "40": 40 checkpoints per model; "30%": 30% of each model's checkpoints (0 < p <= 100)."""
    if isinstance(spec, Budget):
        return spec
    text = str(spec).strip() if isinstance(spec, int | str) and not isinstance(spec, bool) else ""
    if re.fullmatch(r"\d+", text) and int(text) > 0:
        return Budget(count=int(text))
    found = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*%", text)
    if found and 0 < float(found[1]) <= 100:
        return Budget(percent=float(found[1]))
    raise PlanningError(f"bad budget {spec!r}: expected {BUDGET_FORMS}")


# ---------------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Curve:
    """One curve the user asked about (a paradigm or phenomenon of one model) at its evaluated steps."""

    name: str
    steps: tuple[int, ...]
    acc: tuple[float, ...]
    se: tuple[float, ...]  # standard error of acc; a bootstrap's: the replicates' standard deviation

    def __post_init__(self):
        if not len(self.steps) == len(self.acc) == len(self.se):
            raise PlanningError(f"curve {self.name!r}: steps, acc and se differ in length")
        if not np.isfinite(np.asarray(self.acc, float)).all():
            raise PlanningError(f"curve {self.name!r}: accuracies must be finite numbers")
        se = np.asarray(self.se, float)
        if not (np.isfinite(se) & (se >= 0)).all():
            raise PlanningError(f"curve {self.name!r}: every step needs a standard error (finite, >= 0) to plan by")

    @classmethod
    def from_replicates(cls, name: str, steps, acc, reps) -> Curve:
        """From bootstrap replicates (steps x replicates) around the point estimates `acc`."""
        se = np.nanstd(np.asarray(reps, float), axis=1)
        return cls(name, tuple(int(s) for s in steps), tuple(map(float, acc)), tuple(map(float, se)))


def curves_from_table(table: pd.DataFrame) -> dict[str, list[Curve]]:
    """Curves per model from rows of the curve table (schema.CURVE_COLUMNS): one per (model, task), the standard
    error taken from the 95% CI (a bootstrap's where collect made one), else from acc_stderr. Filter the rows to
    the curves the user asked about first."""
    se = ((table.ci_high - table.ci_low) / (2 * Z95)).fillna(table.acc_stderr)
    table = table.assign(se=se)[table.acc.notna()].sort_values("step")
    out: dict[str, list[Curve]] = {}
    for (model, task), rows in table.groupby(["model", "task"], sort=True):
        out.setdefault(model, []).append(Curve(task, tuple(int(s) for s in rows.step), tuple(rows.acc.astype(float)),
                                               tuple(rows.se.astype(float))))
    return out


# ---------------------------------------------------------------------------------------------------- adaptive
def _matrix(curves: Sequence[Curve], known: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """acc and se of every curve at every known step (curves x steps). A step a curve lacks (not evaluated yet,
    or a task that failed there) gets the value interpolated on the symlog axis from the curve's own steps."""
    acc, se, names = [], [], []
    for curve in curves:
        if not curve.steps:
            continue
        order = np.argsort(curve.steps)
        x = symlog(np.asarray(curve.steps)[order])
        err = np.asarray(curve.se, float)[order]
        acc.append(np.interp(symlog(known), x, np.asarray(curve.acc, float)[order]))
        se.append(np.maximum(np.interp(symlog(known), x, err), MIN_SE))
        names.append(curve.name)
    return np.array(acc).reshape(len(names), len(known)), np.array(se).reshape(len(names), len(known)), names


def gap_scores(acc: np.ndarray, se: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per gap between neighbouring known steps (columns of acc, se: curves x steps): how far the curves move
    across it in CI half-widths (1.96 se), the most of any curve, and which curve that is.

    A curve monotone within a gap stays between its values at the ends, so linear interpolation there is off by at
    most the change. The change is read two ways and the larger counts: the change of the curve's monotone fit
    (isotonic, weighted by 1/se^2, rising or falling as the curve does from end to end), where noise pools over
    neighbours, so a flat curve scores near 0 while a steady rise shows even when each step is within noise; and
    the raw change beyond its own noise (|change| - 1.96 sd(change)), for a dip or bump a monotone fit flattens."""
    half = Z95 * (se[:, :-1] + se[:, 1:]) / 2
    sign = np.where(acc[:, -1] >= acc[:, 0], 1.0, -1.0)
    fit = np.array([monotone_fit(a * g, 1 / e**2)[:, 0] * g for a, e, g in zip(acc, se, sign)]).reshape(acc.shape)
    raw = np.abs(np.diff(acc, axis=1)) - Z95 * np.sqrt(se[:, :-1] ** 2 + se[:, 1:] ** 2)
    score = np.maximum(np.abs(np.diff(fit, axis=1)), raw) / half
    return score.max(axis=0), score.argmax(axis=0)


def plan(model: str, steps: Sequence[int], curves: Sequence[Curve], budget: Budget | int | str, *,
         pending: Sequence[int] = (), first_pass: Budget | int | str = "10%", tolerance: float = 1.0,
         batch: int = 1) -> list[Decision]:
    """The next checkpoints of one model to evaluate, as decisions; the last is a stop record when it is done.

    steps: every step the model has. curves: results at the evaluated steps. pending: steps chosen before that
    have no result (running, or failed): they count against the budget and are not chosen again.
    While the first pass (the first `first_pass` steps of `coarse_to_fine(steps)`, at least 2) is incomplete,
    returns all its missing steps. Then up to `batch` steps, each in the open gap (one with an unevaluated step
    inside) of highest `gap_scores`, at the step nearest the gap's symlog midpoint; a step chosen in this call
    counts as known with interpolated values, so a batch spreads over gaps. Stops (a record with step None) at
    the budget, when no gap is open, or once no gap scores above `tolerance` on results alone: while steps are
    pending that is not judged, and the list may be empty (nothing to choose until their results are in)."""
    steps = _distinct(steps)
    limit, tolerance = parse_budget(budget).of(len(steps)), float(tolerance)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise PlanningError(f"batch must be a positive integer, not {batch!r}")
    if not tolerance >= 0:
        raise PlanningError(f"tolerance must be a non-negative number of CI half-widths, not {tolerance!r}")
    evaluated = {s for c in curves for s in c.steps}
    known = evaluated | {int(s) for s in pending}
    if not known <= set(steps):
        raise PlanningError(f"{model}: results or pending steps {sorted(known - set(steps))[:5]} are not its steps")
    first = [s for s in coarse_to_fine(steps)[:max(2, parse_budget(first_pass).of(len(steps)))] if s not in known]
    out: list[Decision] = []

    def decide(step, left, right, score, curve, rule, left_after=None) -> Decision:
        return Decision(model, step, left, right, score, curve, left_after, rule, len(known))

    for step in first:
        if len(known) >= limit:
            break
        points = sorted(known)
        at = np.searchsorted(points, step)
        known.add(step)
        out.append(decide(step, points[at - 1] if at else None, points[at] if at < len(points) else None,
                          None, None, "coarse"))
    if out:
        return out

    candidates = np.array(sorted(set(steps) - known), int)
    gaps = _gaps(np.array(sorted(known)), candidates, curves)
    while True:
        top = gaps.best()
        if len(known) >= limit or top is None:
            rule = "stop-budget" if len(known) >= limit else "stop-exhausted"
            args = (None, None, None, None) if top is None else gaps.row(top)
            return out + [decide(None, *args, rule, args[2])]
        left, right, score, curve = gaps.row(top)
        if score <= tolerance:
            # Steps without results only look linear because they were interpolated: judge again once they are in.
            if out or known - evaluated:
                return out
            return [decide(None, left, right, score, curve, "stop-converged", score)]
        if len(out) == batch:
            return out
        inside = candidates[(candidates > left) & (candidates < right)]
        step = int(inside[np.argmin(np.abs(symlog(inside) - (symlog(left) + symlog(right)) / 2))])
        known.add(step)
        candidates = candidates[candidates != step]
        gaps = _gaps(np.array(sorted(known)), candidates, curves)
        after = gaps.best()
        out.append(decide(step, left, right, score, curve, "change", None if after is None else gaps.row(after)[2]))


@dataclass(frozen=True)
class _Gaps:
    """The gaps between neighbouring known steps: their ends, how many unevaluated steps lie inside, the score."""

    left: np.ndarray
    right: np.ndarray
    inside: np.ndarray
    score: np.ndarray
    curve: list[str]

    def best(self) -> int | None:
        """The open gap (one with a step to choose) of highest score, then widest on the symlog axis, then first."""
        width = symlog(self.right) - symlog(self.left)
        open_gaps = np.flatnonzero(self.inside > 0)
        return int(max(open_gaps, key=lambda i: (self.score[i], width[i], -i))) if len(open_gaps) else None

    def row(self, i: int) -> tuple[int, int, float, str]:
        return int(self.left[i]), int(self.right[i]), float(self.score[i]), self.curve[i]


def _gaps(points: np.ndarray, candidates: np.ndarray, curves: Sequence[Curve]) -> _Gaps:
    acc, se, names = _matrix(curves, points)
    if not names:
        raise PlanningError("no curve has results to plan by: run the first pass, then plan again")
    score, which = gap_scores(acc, se)
    inside = np.searchsorted(candidates, points[1:]) - np.searchsorted(candidates, points[:-1], side="right")
    return _Gaps(points[:-1], points[1:], inside, score, [names[i] for i in which])


def adaptive_sweep(model: str, steps: Sequence[int], measure: Callable[[int], Mapping[str, tuple[float, float]]],
                   budget: Budget | int | str, **settings) -> list[Decision]:
    """The loop an engine runs, for one model: `plan`, evaluate what it chose (`measure(step)` gives
    {curve: (acc, se)}), repeat until a stop record. Returns every decision, the stop record last."""
    results: dict[str, dict[int, tuple[float, float]]] = {}
    log: list[Decision] = []
    while True:
        curves = [Curve(name, tuple(sorted(r)), tuple(r[s][0] for s in sorted(r)), tuple(r[s][1] for s in sorted(r)))
                  for name, r in sorted(results.items())]
        decisions = plan(model, steps, curves, budget, **settings)
        log += decisions
        if decisions[-1].stopped:
            return log
        for d in decisions:
            for name, value in measure(d.step).items():
                results.setdefault(name, {})[d.step] = value


# ---------------------------------------------------------------------------------------------------- subsets
def acquisition_interval(steps: Sequence[int], acc, fraction: float = 0.5, available: Sequence[int] | None = None,
                         weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Per column of acc (evaluated steps x curves): the closed range [low, high] of steps in which the acquisition
    step lies, judged from the evaluated steps only. high is the first evaluated step at which the monotone fit
    reaches `fraction` of the way from chance to its final value (`analysis.acquisition_steps`); low is the first
    step after the evaluated step before it (the first of `available` after it, if given). Both inf where the
    final value is not above chance."""
    steps = np.asarray(steps, int)
    fit = monotone_fit(acc, weights)
    final = fit[-1]
    at = (fit >= CHANCE + fraction * (final - CHANCE)).argmax(axis=0)
    high = steps[at].astype(float)
    before = np.where(at > 0, steps[np.maximum(at - 1, 0)], -1)
    if available is None:
        low = (before + 1).astype(float)
    else:
        grid = np.array(sorted(available))
        low = grid[np.minimum(np.searchsorted(grid, before, side="right"), len(grid) - 1)].astype(float)
    acquired = final > CHANCE
    return np.where(acquired, low, np.inf), np.where(acquired, high, np.inf)


@dataclass(frozen=True)
class Span:
    """Between two evaluated steps, `skipped` checkpoints were not evaluated, the first at step `first`: the curve
    there is interpolated, and a change seen at `right` is only known to happen at `first` or later."""

    left: int
    right: int
    skipped: int
    first: int


def interpolated_spans(evaluated: Sequence[int], available: Sequence[int]) -> list[Span]:
    """The spans between consecutive evaluated steps that hold available checkpoints not evaluated (draw them
    dashed, and expect an acquisition step inside one to be known only to lie in it). Available steps outside the
    evaluated range are not spans: nothing is drawn there."""
    done, grid = np.array(sorted(set(evaluated)), int), np.array(sorted(set(available)), int)
    after = np.searchsorted(grid, done[:-1], side="right")
    inside = np.searchsorted(grid, done[1:]) - after
    return [Span(int(a), int(b), int(k), int(grid[i])) for a, b, k, i in zip(done[:-1], done[1:], inside, after)
            if k > 0]
