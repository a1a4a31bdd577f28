"""Checkpoint planning: coarse-to-fine orders, budgets, adaptive selection on synthetic curves, subset analysis."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from trajectories.demo.train import checkpoint_steps
from trajectories.errors import UserError
from trajectories.planning import (
    Budget,
    Curve,
    Decision,
    PlanningError,
    Span,
    acquisition_interval,
    adaptive_sweep,
    coarse_to_fine,
    curves_from_table,
    interleave,
    interpolated_spans,
    job_slices,
    parse_budget,
    plan,
    symlog,
)
from trajectories.schema import CURVE_COLUMNS
from trajectories.suites import PYTHIA_STEPS

PYTHIA = list(PYTHIA_STEPS)
EARLY = [s for s in PYTHIA if s <= 512]


SCHEDULES = {
    "pythia": PYTHIA,
    "every-1000": list(range(0, 143_001, 1000)),
    "powers-of-two": [0, *(2**k for k in range(18))],
    "demo": checkpoint_steps(2000, 100),
    "irregular": sorted({int(s) for s in np.random.default_rng(0).integers(0, 10**6, 80)}),
    "missing-checkpoints": [s for s in range(1000, 300_001, 1000) if s % 7000 not in (3000, 4000)],
}


# ---------------------------------------------------------------------------------------------------- orders
def largest_open_gap(prefix: list[int], steps: list[int]) -> float:
    """The widest symlog gap between the prefix's steps and the span's ends that still holds an unchosen step."""
    grid = np.array(sorted(steps))
    points = np.array(sorted(set(prefix) | {grid[0], grid[-1]}))
    holds = np.searchsorted(grid, points[1:]) > np.searchsorted(grid, points[:-1], side="right")
    widths = np.diff(symlog(points))
    return float(widths[holds].max()) if holds.any() else 0.0


def shrinks_geometrically(order: list[int], steps: list[int]) -> bool:
    span = symlog(max(steps)) - symlog(min(steps))
    return all(largest_open_gap(order[:k], steps) <= 3 * span / (k - 1) for k in range(2, len(order) + 1))


@pytest.mark.parametrize("name", SCHEDULES)
def test_order_is_a_permutation_that_starts_with_the_endpoints(name):
    steps = SCHEDULES[name]
    order = coarse_to_fine(steps)
    assert sorted(order) == sorted(steps)
    assert order[:2] == [min(steps), max(steps)]


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_prefix_covers_the_span_with_gaps_shrinking_geometrically(name):
    steps = SCHEDULES[name]
    assert shrinks_geometrically(coarse_to_fine(steps), steps)


def test_the_gap_check_fails_today_s_order():
    assert not shrinks_geometrically(PYTHIA, PYTHIA)


def test_pythia_early_steps_are_spread_through_the_first_picks():
    order = coarse_to_fine(PYTHIA)
    first = order[:10]
    # neither all first nor all last: both regions in the first ten, and the tail between early picks
    assert 3 <= sum(s in EARLY for s in first) <= 7
    positions = [order.index(s) for s in EARLY]
    assert max(positions) < 40 and max(positions) > len(EARLY)
    assert order[2] == 1000  # the first evenly spaced step bounds the early region


def test_order_is_deterministic_and_ignores_input_order_and_duplicates():
    shuffled = list(np.random.default_rng(1).permutation(PYTHIA)) + [1000, 0]
    assert coarse_to_fine(shuffled) == coarse_to_fine(PYTHIA) == coarse_to_fine(tuple(PYTHIA))
    assert coarse_to_fine([5]) == [5] and coarse_to_fine([]) == []
    with pytest.raises(PlanningError, match="negative"):
        coarse_to_fine([-1, 0, 1])


def test_interleave_covers_every_model_in_any_prefix():
    orders = {"70m": coarse_to_fine(PYTHIA), "12b": coarse_to_fine(PYTHIA)[:5], "1b": [0, 143000]}
    mixed = interleave(orders)
    assert len(mixed) == sum(map(len, orders.values()))
    assert {m for m, _ in mixed[:3]} == set(orders)
    assert mixed[:4] == [("70m", 0), ("12b", 0), ("1b", 0), ("70m", 143000)]
    for model, order in orders.items():
        assert [s for m, s in mixed if m == model] == list(order)


def test_job_slices_are_contiguous_pieces_of_the_order():
    order = coarse_to_fine(PYTHIA)
    slices = job_slices(order, per_job=16)
    assert [s for piece in slices for s in piece] == order
    assert [len(p) for p in slices] == [16] * 9 + [10]
    even = job_slices(order, jobs=4)
    assert [len(p) for p in even] == [39, 39, 38, 38] and sum(even, []) == order
    assert job_slices([1, 2], jobs=5) == [[1], [2]]
    per_model = interleave({m: job_slices(coarse_to_fine(PYTHIA), per_job=50) for m in ("a", "b")})
    assert [m for m, _ in per_model] == ["a", "b"] * 4
    for bad in ({}, {"per_job": 0}, {"jobs": -1}, {"per_job": 2, "jobs": 2}, {"per_job": 1.5}):
        with pytest.raises(PlanningError):
            job_slices(order, **bad)


# ---------------------------------------------------------------------------------------------------- budget
def test_budget_counts_and_percentages():
    assert parse_budget(40) == parse_budget(" 40 ") == Budget(count=40)
    assert parse_budget("40").of(154) == 40 and parse_budget(500).of(154) == 154
    assert parse_budget("30%") == Budget(percent=30.0)
    assert [parse_budget(b).of(154) for b in ("20%", "30%", "50%", "100%", "0.1%")] == [31, 47, 77, 154, 1]
    assert parse_budget("12.5%").of(8) == 1 and str(parse_budget("12.5%")) == "12.5%"
    assert parse_budget(Budget(count=3)) == Budget(count=3)


@pytest.mark.parametrize("bad", ["0", 0, -3, "-3", "abc", "", "150%", "0%", "1.5", True, None, 0.3, "%", "30 pc"])
def test_bad_budgets_name_the_valid_forms(bad):
    with pytest.raises(UserError, match=r"e\.g\. 40.*e\.g\. 30%"):
        parse_budget(bad)


# ---------------------------------------------------------------------------------------------------- adaptive
def logistic(mid: float, final: float = 0.9, width: float = 0.1):
    return lambda step: 0.5 + (final - 0.5) / (1 + np.exp(-(np.log10(step + 1) - np.log10(mid + 1)) / width))


def measurer(truth: dict, n_items: int | None = None, seed: int = 0):
    """measure(step) -> {curve: (acc, se)}: binomial noise with n_items, or exact values with se 0.01. Each
    (curve, step) has its own noise seed, so the results do not depend on the order steps are measured in."""
    def measure(step):
        out = {}
        for i, (name, f) in enumerate(truth.items()):
            p = float(f(step))
            if n_items:
                p = np.random.default_rng([seed, i, step]).binomial(n_items, p) / n_items
            out[name] = (p, max(np.sqrt(p * (1 - p) / n_items), 1e-3) if n_items else 0.01)
        return out
    return measure


def curves_at(measure, steps) -> list[Curve]:
    values = {step: measure(step) for step in sorted(steps)}
    names = next(iter(values.values())) if values else {}
    return [Curve(name, tuple(values), tuple(v[name][0] for v in values.values()),
                  tuple(v[name][1] for v in values.values())) for name in names]


def chosen(log: list[Decision]) -> list[int]:
    return [d.step for d in log if not d.stopped]


FLAT = {f"flat{i}": (lambda step: 0.5) for i in range(5)}


def test_first_call_returns_the_whole_coarse_first_pass():
    first = plan("m", PYTHIA, [], "30%")
    assert [d.step for d in first] == coarse_to_fine(PYTHIA)[:16]
    assert {d.rule for d in first} == {"coarse"} and [d.chosen for d in first] == list(range(1, 17))
    assert [d.step for d in plan("m", PYTHIA, [], 5)] == coarse_to_fine(PYTHIA)[:5]
    assert [d.step for d in plan("m", PYTHIA, [], "30%", first_pass=3)] == [0, 143000, 1000]


def test_adaptive_refines_the_gap_with_a_sharp_rise_and_then_stops():
    truth = {**FLAT, "rise": lambda step: 0.5 if step <= 5000 else 0.9}
    log = adaptive_sweep("m", PYTHIA, measurer(truth), "30%")
    picks = [d for d in log if d.rule == "change"]
    assert picks and all(4000 <= d.left < d.step < d.right <= 12000 and d.curve == "rise" for d in picks)
    assert {5000, 6000} <= set(chosen(log))  # the rise is bracketed by neighbouring checkpoints
    assert log[-1].rule == "stop-converged" and log[-1].chosen == len(chosen(log)) < parse_budget("30%").of(154)
    assert picks[0].uncertainty_left < picks[0].score


def test_adaptive_stops_after_the_first_pass_on_flat_noisy_curves():
    for seed in range(3):
        flat = {f"flat{i}": (lambda step: 0.5) for i in range(13)}
        log = adaptive_sweep("m", PYTHIA, measurer(flat, n_items=1000, seed=seed), "50%")
        assert log[-1].rule == "stop-converged" and log[-1].chosen <= 16 + 3
        assert log[-1].score <= 1.0


def test_tolerance_sets_how_close_to_linear_is_enough():
    truth = {"slow": logistic(3000, 0.9, 0.5)}
    runs = {tol: adaptive_sweep("m", PYTHIA, measurer(truth), 154, tolerance=tol) for tol in (0.3, 1.0, 100.0)}
    counts = {tol: log[-1].chosen for tol, log in runs.items()}
    assert counts[100.0] == 16 < counts[1.0] < counts[0.3] < 154
    assert all(log[-1].rule == "stop-converged" and log[-1].score <= tol for tol, log in runs.items())
    with pytest.raises(PlanningError, match="tolerance"):
        plan("m", PYTHIA, [], 10, tolerance=-1)


def moving_curves():
    return {f"c{i}": logistic(mid, 0.6 + 0.03 * i, 0.3) for i, mid in enumerate([20, 300, 2000, 9000, 40000])}


@pytest.mark.parametrize("budget", [20, "25%", 154])
@pytest.mark.parametrize("batch", [1, 3])
def test_adaptive_never_exceeds_the_budget(budget, batch):
    log = adaptive_sweep("m", PYTHIA, measurer(moving_curves(), n_items=100), budget, tolerance=0, batch=batch)
    limit = parse_budget(budget).of(154)
    steps = chosen(log)
    assert len(steps) == len(set(steps)) <= limit and log[-1].stopped
    assert [d.chosen for d in log if not d.stopped] == list(range(1, len(steps) + 1))
    if len(steps) == limit:
        assert log[-1].rule == "stop-budget"


def test_pending_steps_count_against_the_budget_and_are_not_chosen_again():
    measure = measurer(moving_curves(), n_items=100)
    done = coarse_to_fine(PYTHIA)[:16]
    curves = curves_at(measure, done)
    first = plan("m", PYTHIA, curves, 30, batch=4, tolerance=0)
    assert len(first) == 4 and len({d.step for d in first}) == 4 and {d.rule for d in first} == {"change"}
    assert len({(d.left, d.right) for d in first}) == 4  # a batch spreads over gaps
    # the same four, announced as pending (running on other workers), are not proposed again
    later = plan("m", PYTHIA, curves, 30, batch=4, pending=[d.step for d in first], tolerance=0)
    assert len(later) == 4 and not {d.step for d in later} & {d.step for d in first}
    stop = plan("m", PYTHIA, curves, 18, pending=[d.step for d in first])
    assert [d.rule for d in stop] == ["stop-budget"] and stop[0].chosen == 20


def test_convergence_is_judged_on_results_not_on_pending_steps():
    truth = {**FLAT, "rise": lambda step: 0.5 if step <= 5000 else 0.9}
    curves = curves_at(measurer(truth), coarse_to_fine(PYTHIA)[:16])
    batch = plan("m", PYTHIA, curves, 100, batch=10)
    assert 1 <= len(batch) < 10 and not batch[-1].stopped  # the rest looks linear only by interpolation
    assert plan("m", PYTHIA, curves, 100, batch=10, pending=[d.step for d in batch]) == []
    log = adaptive_sweep("m", PYTHIA, measurer(truth), 100, batch=10)
    assert log[-1].rule == "stop-converged" and {5000, 6000} <= set(chosen(log))


def test_a_larger_budget_continues_with_the_same_choices():
    measure = measurer(moving_curves(), n_items=100, seed=3)
    small = adaptive_sweep("m", PYTHIA, measure, 25, tolerance=0)
    large = adaptive_sweep("m", PYTHIA, measure, 40, tolerance=0)
    assert small[-1].rule == "stop-budget" and len(chosen(large)) > 25
    assert chosen(large)[:25] == chosen(small)
    assert large[:25] == small[:25]
    # resuming from what the small run evaluated: the next choice is the large run's 26th
    resumed = plan("m", PYTHIA, curves_at(measure, chosen(small)), 40, tolerance=0)
    assert resumed[0] == large[25]
    # and re-running on the same results (after a crash) makes the same choice
    assert plan("m", PYTHIA, curves_at(measure, chosen(small)), 40, tolerance=0) == resumed


def test_decisions_round_trip_through_json_lines():
    log = adaptive_sweep("m", PYTHIA, measurer(moving_curves(), n_items=100), 24, tolerance=0)
    lines = "\n".join(d.to_json() for d in log)
    assert [Decision.from_json(line) for line in lines.splitlines()] == log
    assert {d.rule for d in log} == {"coarse", "change", "stop-budget"}
    record = json.loads(lines.splitlines()[-1])
    assert record["step"] is None and record["rule"] == "stop-budget" and record["chosen"] == 24
    assert "stop (budget) after 24" in log[-1].describe() and "moves" in log[20].describe()


def test_plan_rejects_results_it_cannot_use():
    with pytest.raises(PlanningError, match="not its steps"):
        plan("m", [0, 10, 20], [Curve("a", (0, 5), (0.5, 0.6), (0.01, 0.01))], 3)
    with pytest.raises(PlanningError, match="standard error"):
        Curve("a", (0, 10), (0.5, 0.6), (0.01, float("nan")))
    with pytest.raises(PlanningError, match="batch"):
        plan("m", [0, 10, 20], [], 3, batch=0)
    with pytest.raises(PlanningError, match="no curve"):
        plan("m", [0, 10, 20], [], 3, pending=[0, 20])


def test_curves_from_the_curve_table_take_the_ci_as_standard_error():
    rows = [{"model": "m", "size": "s", "params": 1, "deduped": False, "step": step, "tokens": step, "level": level,
             "task": task, "phenomenon": "p", "acc": acc, "acc_stderr": 0.02, "ci_low": acc - 0.0392 if ci else None,
             "ci_high": acc + 0.0392 if ci else None, "ci_method": "x", "n": 100}
            for step, acc in ((10, 0.6), (0, 0.5)) for level, task, ci in (("paradigm", "t", False),
                                                                         ("phenomenon", "phenomenon:p", True))]
    curves = curves_from_table(pd.DataFrame(rows, columns=list(CURVE_COLUMNS)))
    assert list(curves) == ["m"]
    by_name = {c.name: c for c in curves["m"]}
    assert by_name["t"].steps == (0, 10) and by_name["t"].acc == (0.5, 0.6) and by_name["t"].se == (0.02, 0.02)
    assert np.allclose(by_name["phenomenon:p"].se, 0.0392 / 1.959963984540054)


def test_curve_from_bootstrap_replicates():
    reps = np.random.default_rng(0).normal([[0.5], [0.7]], [[0.01], [0.05]], (2, 4000))
    curve = Curve.from_replicates("a", [0, 10], [0.5, 0.7], reps)
    assert np.allclose(curve.se, [0.01, 0.05], rtol=0.1) and curve.steps == (0, 10)


# ---------------------------------------------------------------------------------------------------- subsets
def test_acquisition_from_a_subset_is_an_interval_between_evaluated_steps():
    steps = [0, 1000, 4000, 143000]
    acc = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.9], [0.9, 0.49, 0.9], [0.9, 0.48, 0.9]])
    low, high = acquisition_interval(steps, acc)
    assert list(high) == [4000, np.inf, 1000] and list(low) == [1001, np.inf, 1]
    low, high = acquisition_interval(steps, acc, available=PYTHIA)
    assert list(low) == [2000, np.inf, 1] and list(high) == [4000, np.inf, 1000]
    low, high = acquisition_interval(steps, np.full((4, 1), 0.9))
    assert (low[0], high[0]) == (0, 0)


def test_interpolated_spans_are_the_gaps_holding_unevaluated_checkpoints():
    assert interpolated_spans([0, 1000, 143000], PYTHIA) == [Span(0, 1000, 10, 1), Span(1000, 143000, 141, 2000)]
    assert interpolated_spans([0, 1, 2, 4, 512], PYTHIA) == [Span(4, 512, 6, 8)]
    assert interpolated_spans(PYTHIA, PYTHIA) == [] and interpolated_spans([1000], PYTHIA) == []
