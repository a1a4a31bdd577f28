"""Matched-loss alignment: models that differ only in speed line up exactly when compared at the same loss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.helpers import record
from trajectories import alignment
from trajectories.analysis import AnalysisError
from trajectories.curves import curves_from_units
from trajectories.schema import ModelInfo, TaskResult
from trajectories.suites import PYTHIA_STEPS

# Units learned at different losses to different heights, so their order changes during training: early-low
# units lead at first, late-high ones at the end. (midpoint loss, final accuracy)
UNITS = {"a": (8.0, 0.62), "b": (6.5, 0.75), "c": (5.0, 0.97), "d": (7.2, 0.7), "e": (4.0, 0.99)}


def loss_curve(steps, speed):
    """Held-out loss falling from 10.5 nats: `speed` x faster in steps."""
    return 2.5 + 8 / (1 + np.asarray(steps, float) * speed / 2000) ** 0.5


def acc_at(loss, unit):
    midpoint, top = UNITS[unit]
    return 0.5 + (top - 0.5) / (1 + np.exp((np.asarray(loss) - midpoint) / 0.8))


def speed_suite(models: dict[str, tuple[float, np.ndarray, dict]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Curve and loss tables; models[name] = (speed, steps, {unit name: unit whose curve against loss it has}).
    Accuracies are exact (no sampling noise): the test is of the alignment, not of noise."""
    records, losses = [], []
    for name, (speed, steps, units) in models.items():
        loss = loss_curve(steps, speed)
        losses.append(pd.DataFrame({"model": name, "step": steps, "loss": loss}))
        for step, value in zip(steps, loss, strict=True):
            tasks = {f"unit_{u}": TaskResult(float(acc_at(value, curve)), 0.01, 1000, f"unit_{u}")
                     for u, curve in units.items()}
            records.append(record(ModelInfo(name, name), int(step), tasks))
    return curves_from_units(records), pd.concat(losses, ignore_index=True)


def test_models_differing_only_in_speed_agree_perfectly_at_matched_loss():
    same = dict(zip(UNITS, UNITS, strict=True))
    shuffled = dict(zip(UNITS, ["c", "e", "a", "b", "d"], strict=True))
    curves, loss = speed_suite({
        "fast": (1.0, PYTHIA_STEPS, same),
        "slow": (0.25, PYTHIA_STEPS, same),  # 4x slower: at a step it is where "fast" was 4x earlier
        "other": (1.0, PYTHIA_STEPS, shuffled),
    })
    at_loss = alignment.curves_at_loss(curves, loss, n_levels=30)
    assert tuple(at_loss.columns) == alignment.AT_LOSS_COLUMNS
    wide = at_loss.pivot_table(index=["task", "loss"], columns="model", values="acc").dropna()
    np.testing.assert_allclose(wide.fast, wide.slow, atol=5e-3)  # interpolation between checkpoints
    # Levels where the true accuracies are well apart, so interpolation error cannot swap two units.
    truth = np.array([acc_at(at_loss.loss.unique(), unit) for unit in UNITS])
    spread = np.diff(np.sort(truth, axis=0), axis=0).min(axis=0) > 0.005
    levels = at_loss.loss.unique()[spread]
    agree = alignment.loss_matched_agreement(at_loss).set_index(["model_a", "model_b"])
    matched = agree.loc[("fast", "slow")]
    matched = matched[matched.loss.isin(levels)]
    assert len(matched) >= 8 and np.allclose(matched.kendall_tau, 1) and (matched.n_units == 5).all()
    assert (agree.loc[("fast", "other")].kendall_tau < 1).any()
    # At matched steps, the same two models rank the units differently while training.
    by_step = curves.pivot_table(index="step", columns=["model", "task"], values="acc").dropna()
    taus = [stats.kendalltau(by_step.loc[s, "fast"], by_step.loc[s, "slow"]).statistic for s in by_step.index[1:]]
    assert min(taus) < 0.5


def test_acquisition_loss_is_shared_by_models_differing_only_in_speed():
    same = dict(zip(UNITS, UNITS, strict=True))
    curves, loss = speed_suite({"fast": (1.0, PYTHIA_STEPS, same), "slow": (0.25, PYTHIA_STEPS, same)})
    # Acquired at each unit's midpoint loss, reached 4x later in steps by the slow model.
    acq = []
    for name, speed in (("fast", 1.0), ("slow", 0.25)):
        for unit, (target, _) in UNITS.items():
            step = 2000 * (((8 / (target - 2.5)) ** 2) - 1) / speed
            acq.append({"model": name, "level": "paradigm", "task": f"unit_{unit}", "acquired": np.isfinite(step)
                        and step <= PYTHIA_STEPS[-1], "acq_step": step, "ci_low": step * 0.9, "ci_high": step * 1.1})
    with_loss = alignment.acquisition_loss(pd.DataFrame(acq), loss)
    done = with_loss[with_loss.acquired].pivot_table(index="task", columns="model", values="acq_loss").dropna()
    assert len(done) >= 3
    np.testing.assert_allclose(done.fast, done.slow, rtol=1e-3)
    inside = with_loss.dropna(subset=["acq_loss_low", "acq_loss_high"])
    assert len(inside) >= 6 and (inside.acq_loss_low < inside.acq_loss).all()
    assert (inside.acq_loss < inside.acq_loss_high).all()
    summary = alignment.acquisition_loss_agreement(with_loss).iloc[0]
    assert summary.kendall_tau == pytest.approx(1) and abs(summary.median_loss_diff) < 1e-2


def test_loss_is_made_monotone_and_non_overlapping_losses_are_refused():
    noisy = pd.DataFrame({"model": "m", "step": [0, 10, 20, 30], "loss": [10.0, 8.0, 8.5, 7.0]})
    fitted = alignment.monotone_loss(noisy)
    assert (np.diff(fitted.loss_fit) <= 0).all() and fitted.loss_fit.tolist()[1:3] == [8.25, 8.25]
    assert np.isnan(alignment.loss_at(fitted, "m", [40])[0])
    apart = pd.concat([noisy, pd.DataFrame({"model": "n", "step": [0, 10], "loss": [5.0, 4.0]})])
    with pytest.raises(AnalysisError, match="do not overlap"):
        alignment.shared_levels(alignment.monotone_loss(apart))
