"""Sigmoid and isotonic onsets on curves with planted midpoints, plateaus and gaps between checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares

from tests.helpers import TOKENS_PER_STEP, answers, logistic_acc, replicates
from tests.helpers import planted_tables as tables
from trajectories import onsets
from trajectories.analysis import AnalysisError
from trajectories.stats import Replicates
from trajectories.suites import PYTHIA_STEPS as SCHEDULE

PYTHIA_STEPS = np.array(SCHEDULE)

N = np.full(len(PYTHIA_STEPS), 1000.0)


def planted(midpoint, top=0.85, scale=0.25, n_items=1000, n_boot=100, seed=0):
    rng = np.random.default_rng(seed)
    return replicates(PYTHIA_STEPS, answers(logistic_acc(PYTHIA_STEPS, midpoint, top, scale), n_items, rng),
                      n_boot, rng)


@pytest.mark.parametrize("midpoint", [40, 3000, 60000])
def test_sigmoid_recovers_a_planted_midpoint_within_its_ci(midpoint):
    onset = onsets.sigmoid_onset(planted(midpoint), N)
    assert onset.acquired and onset.note == ""
    assert onset.ci_low <= midpoint <= onset.ci_high
    assert abs(np.log10(onset.acq_step / midpoint)) < 0.1
    assert onset.asymptote == pytest.approx(0.85, abs=0.03) and onset.floor == pytest.approx(0.5, abs=0.03)
    assert onset.gap_low <= onset.acq_step <= onset.gap_high
    assert 0.5 < onset.chi2_dof < 2 and onset.r2 > 0.9


def test_sigmoid_estimates_the_asymptote_of_a_unit_still_rising_at_the_last_checkpoint():
    # Halfway at 100k steps with a slow rise: at step 143000 it is only about 60% of the way to 0.9.
    midpoint, top, scale = 100_000, 0.9, 0.35
    final_share = (logistic_acc(143_000, midpoint, top, scale) - 0.5) / (top - 0.5)
    assert final_share < 0.65
    rep = planted(midpoint, top, scale, seed=1)
    sigmoid, isotonic = onsets.sigmoid_onset(rep, N), onsets.isotonic_onset(rep, N)
    assert sigmoid.ci_low <= midpoint <= sigmoid.ci_high
    # The isotonic method's halfway-to-final lands far too early, and its CI misses the midpoint.
    assert isotonic.acq_step < 0.7 * midpoint and isotonic.ci_high < midpoint


def test_logistic_fit_reaches_scipys_least_squares_optimum():
    rep = planted(2000, n_items=100, seed=2)
    x, y, w = onsets.log_step(rep.steps), rep.acc, np.ones(len(rep.steps))
    theta, sse, converged = onsets.fit_curve(x, y, w)
    lower, upper = onsets._bounds(x)
    reference = least_squares(lambda t: onsets.logistic(t[None], x)[0] - y, theta * [1, 1, 1.05, 0.8],
                              bounds=(lower, upper), xtol=1e-12, ftol=1e-12)
    assert converged and sse <= 2 * reference.cost * (1 + 1e-6)


def jump(steps, at_index, low=0.5, high=0.9):
    """Accuracy that jumps between evaluated checkpoints at_index - 1 and at_index."""
    return np.where(np.arange(len(steps)) >= at_index, high, low)


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_a_jump_between_checkpoints_gets_a_ci_spanning_the_gap(method):
    rng = np.random.default_rng(3)
    steps = PYTHIA_STEPS
    at = int(np.searchsorted(steps, 9000))
    rep = replicates(steps, answers(jump(steps, at), 1000, rng), 100, rng)
    onset = onsets.ESTIMATORS[method](rep, N)
    assert onset.acquired
    assert onset.ci_low <= steps[at - 1] and onset.ci_high >= steps[at]
    assert onset.gap_low == steps[at - 1] and onset.gap_high == steps[at]
    assert steps[at - 1] <= onset.acq_step <= steps[at]


def test_isotonic_ci_is_never_zero_width_and_contains_the_isotonic_target():
    rng = np.random.default_rng(4)
    rep = replicates(PYTHIA_STEPS, answers(logistic_acc(PYTHIA_STEPS, 9000), 1000, rng), 100, rng)
    onset = onsets.isotonic_onset(rep, N)
    assert onset.ci_high > onset.ci_low
    assert onset.ci_low <= 9000 <= onset.ci_high
    assert onset.definition == "final@0.5"


@pytest.mark.parametrize(("level", "note"), [(0.5, "no fit"), (0.8, "no significant rise")])
def test_flat_curves_are_not_acquired(level, note):
    rng = np.random.default_rng(5)
    rep = replicates(PYTHIA_STEPS, answers(np.full(len(PYTHIA_STEPS), level), 300, rng), 100, rng)
    onset = onsets.sigmoid_onset(rep, np.full(len(PYTHIA_STEPS), 300.0))
    assert not onset.acquired and note in onset.note
    assert np.isnan(onset.acq_step) and np.isnan(onset.ci_low)


def test_a_fall_is_not_an_onset():
    rng = np.random.default_rng(6)
    p = 1.35 - logistic_acc(PYTHIA_STEPS, 2000)  # from 0.85 down to 0.5
    rep = replicates(PYTHIA_STEPS, answers(p, 1000, rng), 100, rng)
    assert not onsets.sigmoid_onset(rep, N).acquired


def test_a_crossing_after_the_last_checkpoint_is_reported_but_not_acquired():
    onset = onsets.sigmoid_onset(planted(400_000, top=0.95, scale=0.3, seed=7), N)
    assert not onset.acquired and "after" not in onset.note and "by the last checkpoint" in onset.note
    assert onset.acq_step > PYTHIA_STEPS[-1] and onset.ci_high > PYTHIA_STEPS[-1]


def test_fraction_of_the_way_to_the_asymptote_moves_the_step():
    rep = planted(5000, seed=8)
    early, mid, late = (onsets.sigmoid_onset(rep, N, fraction) for fraction in (0.2, None, 0.8))
    assert early.acq_step < mid.acq_step < late.acq_step
    assert (early.definition, mid.definition) == ("asymptote@0.2", "midpoint")
    # The planted curve starts at chance, so halfway from chance to the asymptote is the midpoint.
    half = onsets.sigmoid_onset(rep, N, 0.5)
    assert half.acq_step == pytest.approx(mid.acq_step, rel=0.05)


def test_stderr_draws_without_items():
    rng = np.random.default_rng(9)
    acc = logistic_acc(PYTHIA_STEPS, 3000)
    se = np.sqrt(acc * (1 - acc) / 1000)
    observed = acc + se * rng.standard_normal(len(acc))
    draws = observed[:, None] + se[:, None] * rng.standard_normal((len(acc), 200))
    rep = Replicates(PYTHIA_STEPS, observed, draws, np.zeros(len(acc), bool))
    onset = onsets.sigmoid_onset(rep, np.full(len(acc), np.nan))
    assert onset.ci_method == "stderr" and onset.ci_low <= 3000 <= onset.ci_high


def test_onset_table_has_both_methods_side_by_side():
    steps = PYTHIA_STEPS[::4]
    planted_curves = {"m": {f"{phen}_{k}": (phen, logistic_acc(steps, mid)) for phen, mid in
                            (("early", 50), ("late", 20000)) for k in range(2)}}
    planted_curves["m"]["flat_0"] = ("flat", np.full(len(steps), 0.5))
    curves, items = tables(planted_curves, steps=steps, n_items=300, n_boot=50)
    table = onsets.onsets(curves, items, n_boot=100)
    assert tuple(table.columns) == onsets.ONSET_COLUMNS
    assert set(table.method) == {"sigmoid", "isotonic"} and len(table) == 2 * 8  # 5 paradigms, 3 phenomena
    phen = table[table.level == "phenomenon"].set_index(["method", "task"])
    for method in ("sigmoid", "isotonic"):
        assert phen.loc[(method, "phenomenon:early"), "acq_step"] < phen.loc[(method, "phenomenon:late"), "acq_step"]
        assert not phen.loc[(method, "phenomenon:flat"), "acquired"]
    done = table[table.acquired]
    np.testing.assert_allclose(done.acq_tokens, done.acq_step * TOKENS_PER_STEP, rtol=1e-9)
    assert (table.ci_method == "bootstrap-items").all()
    wide = onsets.side_by_side(table)
    assert len(wide) == 8 and {"sigmoid_acq_step", "isotonic_ci_high"} <= set(wide.columns)


def test_bad_arguments_are_refused():
    curves, items = tables({"m": {"a_0": ("a", logistic_acc(PYTHIA_STEPS[::10], 100))}}, steps=PYTHIA_STEPS[::10])
    with pytest.raises(AnalysisError, match="unknown onset method"):
        onsets.onsets(curves, items, methods=("loess",))
    with pytest.raises(AnalysisError, match="fraction"):
        onsets.onsets(curves, items, fraction=1.5)


def test_isotonic_gap_ends_at_the_step_analysis_acquisition_reports():
    from trajectories import analysis

    steps = PYTHIA_STEPS[::6]
    curves, items = tables({"m": {f"p_{k}": ("p", logistic_acc(steps, mid)) for k, mid in enumerate((30, 800, 9000))}},
                           steps=steps, n_items=300, n_boot=20)
    ours = onsets.onsets(curves, items, methods=("isotonic",), n_boot=50).set_index("task")
    theirs = analysis.acquisition(curves, items, n_boot=50).set_index("task")
    assert ours.acquired.equals(theirs.acquired.loc[ours.index])
    done = ours[ours.acquired]
    assert (done.gap_high == theirs.acq_step.loc[done.index]).all()
    assert ((done.gap_low < done.acq_step) & (done.acq_step <= done.gap_high)).all()
