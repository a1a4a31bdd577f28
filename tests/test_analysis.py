"""Acquisition analysis on synthetic sweeps whose learning curves, and so acquisition steps, are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.helpers import SYNTHETIC_MIDPOINTS as MIDPOINTS
from tests.helpers import SYNTHETIC_STEPS as STEPS
from tests.helpers import logistic_acc, synthetic_sweep, unit_result
from tests.helpers import synthetic_tables as tables
from trajectories import analysis
from trajectories.analysis import AnalysisError
from trajectories.curves import with_phenomena


def true_acquisition(midpoint, fraction=0.5, steps=STEPS):
    acc = logistic_acc(steps, midpoint)
    return steps[int(np.argmax(acc >= 0.5 + fraction * (acc[-1] - 0.5)))]


@pytest.fixture(scope="module")
def sweep():
    return tables(synthetic_sweep())


def test_phenomenon_rows_average_paradigms_with_item_bootstrap_cis(sweep):
    curves, _ = sweep
    phen = curves[curves.level == "phenomenon"]
    assert sorted(phen.task.unique()) == [f"phenomenon:{p}" for p in sorted(MIDPOINTS)]
    assert (phen.ci_method == "bootstrap-items").all() and (phen.n == 400).all()
    means = curves[curves.level == "paradigm"].groupby(["model", "step", "phenomenon"]).acc.mean()
    np.testing.assert_allclose(phen.set_index(["model", "step", "phenomenon"]).acc.loc[means.index], means)
    assert ((phen.ci_low < phen.acc) & (phen.acc < phen.ci_high)).mean() > 0.95
    # Averaging two paradigms' items narrows the interval by about sqrt(2).
    para = curves[curves.level == "paradigm"]
    ratio = (para.ci_high - para.ci_low).mean() / (phen.ci_high - phen.ci_low).mean()
    assert 1.2 < ratio < 1.7


@pytest.mark.parametrize("with_items", [True, False])
def test_acquisition_recovers_known_steps_within_cis(sweep, with_items):
    curves, items = sweep
    acq = analysis.acquisition(curves, items if with_items else None, n_boot=200)
    assert set(acq.ci_method) == {"bootstrap-items" if with_items else "stderr"}
    assert acq.acquired.all()
    truth = acq.phenomenon.map(lambda p: true_acquisition(MIDPOINTS[p]))
    covered = (acq.ci_low <= truth) & (truth <= acq.ci_high)
    phen = acq.level == "phenomenon"
    assert covered[phen].all(), acq[phen & ~covered]
    assert covered[~phen].mean() >= 0.8
    # The point estimate is the true checkpoint or a neighbour of it.
    index = {s: i for i, s in enumerate(STEPS)}
    assert (abs(acq.acq_step.map(index) - truth.map(index)) <= 1)[phen].all()
    assert (acq.acq_tokens == acq.acq_step * 1000).all()


def test_chance_level_phenomenon_is_not_acquired():
    curves, items = tables(synthetic_sweep(models=["70m"], finals={"70m": {"binding": 0.5}}))
    acq = analysis.acquisition(curves, items, n_boot=100).set_index("task")
    assert not acq.loc["phenomenon:binding", "acquired"]
    assert np.isnan(acq.loc["phenomenon:binding", "acq_step"])
    assert "noise of chance" in acq.loc["phenomenon:binding", "note"]
    assert acq.loc["phenomenon:agreement", "acquired"]


def test_acquisition_fraction_moves_the_step_later(sweep):
    curves, items = sweep
    early, late = (analysis.acquisition(curves, items, fraction=f, n_boot=50).set_index(["model", "task"]).acq_step
                   .sort_index() for f in (0.2, 0.9))
    assert (early <= late).all() and (early < late).mean() > 0.5


def test_order_agreement_is_one_for_a_shared_order_and_minus_one_for_a_reversed_one():
    mids = {"a": 16, "b": 256, "c": 4000, "d": 64000}
    reverse = dict(zip(mids, reversed(mids.values()), strict=True))
    curves, items = tables(synthetic_sweep(models=["70m", "160m", "1b"],
                                           midpoints={"70m": mids, "160m": mids, "1b": reverse}), n_boot=50)
    acq = analysis.acquisition(curves, items, n_boot=50)
    order = analysis.acquisition_order(acq)
    phen = order[(order.model == "70m") & (order.level == "phenomenon")]
    assert phen.task.tolist() == [f"phenomenon:{p}" for p in "abcd"] and phen["rank"].tolist() == [1, 2, 3, 4]
    agree = analysis.order_agreement(acq).set_index(["level", "model_a", "model_b"])
    same, reversed_ = agree.loc[("phenomenon", "160m", "70m")], agree.loc[("phenomenon", "160m", "1b")]
    assert same.kendall_tau == pytest.approx(1) and same.spearman_rho == pytest.approx(1)
    assert reversed_.kendall_tau == pytest.approx(-1) and reversed_.spearman_rho == pytest.approx(-1)
    assert same.n_units == 4 and 0 <= same.kendall_p < 0.1
    assert agree.loc[("paradigm", "160m", "70m")].kendall_tau > 0.8


def test_dedup_differences_find_the_phenomenon_that_differs():
    finals = {"70m-deduped": {"islands": 0.7}}
    curves, items = tables(synthetic_sweep(models=["70m", "70m-deduped", "160m"], finals=finals), n_boot=50)
    acq = analysis.acquisition(curves, items, n_boot=100)
    diff = analysis.dedup_differences(acq, curves).set_index("phenomenon")
    assert list(diff.index.sort_values()) == sorted(MIDPOINTS) and set(diff["size"]) == {"70m"}
    assert diff.loc["islands", "final_diff"] < -0.1 and diff.loc["islands", "final_diff_z"] < -3
    assert diff.drop("islands").final_diff_z.abs().max() < 3
    assert (diff.shared_steps == len(STEPS)).all()


def test_one_dimensionality(sweep):
    curves, _ = sweep
    flat, _ = tables(synthetic_sweep(models=["flat"], finals={"flat": dict.fromkeys(MIDPOINTS, 0.5)}), n_boot=20)
    onedim = analysis.one_dimensionality(pd.concat([curves, flat])).set_index("model")
    assert (onedim.n_paradigms == 6).all() and (onedim.n_steps == len(STEPS)).all()
    assert onedim.loc["70m", "pc1_share"] > 0.6 > onedim.loc["flat", "pc1_share"] > 0


def test_suspicious_checkpoints_find_a_duplicate_and_a_shuffled_step():
    units = synthetic_sweep(models=["70m"], n_items=300)
    by_step = {c.step: (c, r) for c, r in units}
    ckpt, copy_of = by_step[16000][0], by_step[1000][1].items.assign(step=16000)
    by_step[16000] = (ckpt, unit_result(copy_of, {t: r.phenomenon for t, r in by_step[1000][1].tasks.items()}))
    ckpt, result = by_step[4000]
    # Task labels shuffled across the step's items: its accuracy vector no longer follows its neighbours'.
    shuffled = result.items.assign(task=np.random.default_rng(1).permutation(result.items.task.to_numpy()))
    by_step[4000] = (ckpt, unit_result(shuffled, {t: r.phenomenon for t, r in result.tasks.items()}))
    curves, items = tables(list(by_step.values()), n_boot=20)
    found = analysis.suspicious_checkpoints(curves, items)
    dup = found[found.kind == "duplicate"]
    assert dup[["step", "other_step"]].values.tolist() == [[16000, 1000]]
    departures = set(found[found.kind == "departure"].step)
    assert 4000 in departures
    # The copied step departs too (it sits among step-16000 neighbours), and nothing else is flagged.
    assert departures <= {4000, 16000}
    clean, clean_items = tables(synthetic_sweep(models=["70m"], n_items=300, seed=3), n_boot=20)
    assert analysis.suspicious_checkpoints(clean, clean_items).empty


def test_partial_sweeps_work():
    # 160m stops at step 8000 and both models miss two steps.
    units = [(c, r) for c, r in synthetic_sweep(models=["70m", "160m"])
             if not (c.model.name == "160m" and c.step > 8000) and c.step not in (64, 512)]
    curves, items = tables(units, n_boot=50)
    acq = analysis.acquisition(curves, items.sample(frac=0.9, random_state=0), n_boot=50)
    assert set(acq.model) == {"70m", "160m"}
    assert (acq[acq.model == "160m"].last_step == 8000).all()
    assert not acq.set_index(["model", "task"]).loc[("160m", "phenomenon:binding"), "acquired"]
    assert len(analysis.order_agreement(acq)) == 2
    assert not analysis.one_dimensionality(curves).pc1_share.isna().any()


def test_stderr_only_rows_without_items_still_get_phenomena():
    curves, _ = tables(synthetic_sweep(models=["70m"], steps=STEPS[::3]), n_boot=20)
    paradigms = curves[curves.level == "paradigm"].assign(ci_method="stderr")
    rebuilt = with_phenomena(paradigms)
    phen = rebuilt[rebuilt.level == "phenomenon"]
    assert (phen.ci_method == "stderr").all() and len(phen) == 3 * len(STEPS[::3])
    np.testing.assert_allclose(phen.ci_high - phen.acc, 1.959963984540054 * phen.acc_stderr)


def test_clear_errors_for_unusable_tables(sweep):
    curves, _ = sweep
    with pytest.raises(AnalysisError, match="empty"):
        analysis.acquisition(curves.iloc[:0])
    with pytest.raises(AnalysisError, match="lacks columns acc"):
        analysis.acquisition(curves.drop(columns=["acc"]))
    with pytest.raises(AnalysisError, match="no minimal-pair"):
        analysis.acquisition(curves.assign(phenomenon=""))
    with pytest.raises(AnalysisError, match="fraction"):
        analysis.acquisition(curves, fraction=1.5)
