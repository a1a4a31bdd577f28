"""Matched-loss alignment: compare models at the same held-out loss instead of the same step, so a model that
only trains faster (or slower) lines up with the others.

- `monotone_loss`: each model's loss made non-increasing over training (isotonic fit), so loss can index training.
- `loss_at`: a model's (fitted) loss at any step, interpolated in ln(step + 1).
- `curves_at_loss`: every grammar unit's accuracy re-expressed at a grid of losses shared by all models.
- `acquisition_loss`: the loss at each unit's acquisition step and CI ends (from `analysis.acquisition` or
  `onsets.onsets`).
- `loss_matched_agreement`: at each matched loss, Kendall's tau between two models' unit accuracies: do they rank
  the units alike at the same loss? (Kendall's tau between acquisition losses equals the one between acquisition
  steps, as loss is monotone in step within a model: `acquisition_loss_agreement` adds how far apart they are.)

The loss table has columns LOSS_COLUMNS: model, step, loss (e.g. mean per-token cross-entropy on held-out text).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import isotonic_regression

from trajectories.analysis import AnalysisError, grammar_units

LOSS_COLUMNS = ("model", "step", "loss")
# curves_at_loss: one row per (model, unit, loss level): model, level, task, phenomenon, loss, acc (NaN outside the
# losses the model's evaluated checkpoints span).
AT_LOSS_COLUMNS = ("model", "level", "task", "phenomenon", "loss", "acc")
# loss_matched_agreement: one row per (level, loss level, pair of models).
MATCHED_LOSS_COLUMNS = ("level", "loss", "model_a", "model_b", "n_units", "kendall_tau", "kendall_p")
# acquisition_loss_agreement: one row per (level, pair of models) over units both acquired; median_loss_diff is
# the median of acq_loss(model_a) - acq_loss(model_b) (positive: model_a acquires at a higher loss).
ACQ_LOSS_COLUMNS = ("level", "model_a", "model_b", "n_units", "kendall_tau", "kendall_p", "median_loss_diff")


def _check_loss(loss: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in LOSS_COLUMNS if c not in loss.columns]
    if missing:
        raise AnalysisError(f"the loss table lacks columns {', '.join(missing)}")
    loss = loss.dropna(subset=["loss"])
    if loss.empty:
        raise AnalysisError("the loss table has no losses")
    return loss


def monotone_loss(loss: pd.DataFrame) -> pd.DataFrame:
    """The loss table with `loss_fit`: per model, the least-squares non-increasing fit of loss over steps."""
    parts = []
    for _, rows in _check_loss(loss).groupby("model"):
        rows = rows.groupby(["model", "step"], as_index=False).loss.mean().sort_values("step")
        parts.append(rows.assign(loss_fit=isotonic_regression(rows.loss.to_numpy(float), increasing=False).x))
    return pd.concat(parts, ignore_index=True)


def loss_at(fitted: pd.DataFrame, model: str, steps) -> np.ndarray:
    """A model's fitted loss at `steps`, interpolated linearly in ln(step + 1); NaN outside its loss steps."""
    rows = fitted[fitted.model == model]
    if rows.empty:
        return np.full(np.shape(steps), np.nan)
    x = np.log1p(rows.step.to_numpy(float))
    with np.errstate(invalid="ignore"):
        at = np.log1p(np.asarray(steps, float))
    return np.interp(at, x, rows.loss_fit.to_numpy(float), left=np.nan, right=np.nan)


def shared_levels(fitted: pd.DataFrame, n_levels: int = 50) -> np.ndarray:
    """Evenly spaced losses within the range every model's fitted loss covers."""
    spans = fitted.groupby("model").loss_fit.agg(["min", "max"])
    low, high = spans["min"].max(), spans["max"].min()
    if not low < high:
        raise AnalysisError(f"the models' losses do not overlap (the lowest final loss {low:.4g} is not below the "
                            f"highest initial loss {high:.4g}); pass the loss levels to compare at")
    return np.linspace(low, high, n_levels)


def curves_at_loss(curves: pd.DataFrame, loss: pd.DataFrame, levels: np.ndarray | None = None,
                   n_levels: int = 50) -> pd.DataFrame:
    """Every grammar unit's accuracy at each loss level (AT_LOSS_COLUMNS): the unit's checkpoints placed at their
    fitted loss, accuracy interpolated linearly in loss (checkpoints sharing a fitted loss are averaged)."""
    fitted = monotone_loss(loss)
    levels = shared_levels(fitted, n_levels) if levels is None else np.asarray(levels, float)
    units = grammar_units(curves)
    parts = []
    for (model, level, task), rows in units.groupby(["model", "level", "task"]):
        at = pd.DataFrame({"loss": loss_at(fitted, model, rows.step), "acc": rows.acc.to_numpy(float)})
        by_loss = at.dropna().groupby("loss").acc.mean()
        acc = (np.interp(levels, by_loss.index, by_loss.to_numpy(), left=np.nan, right=np.nan) if len(by_loss)
               else np.full(len(levels), np.nan))
        parts.append(pd.DataFrame({"model": model, "level": level, "task": task,
                                   "phenomenon": rows.phenomenon.iloc[0], "loss": levels, "acc": acc}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(AT_LOSS_COLUMNS))


def acquisition_loss(acq: pd.DataFrame, loss: pd.DataFrame) -> pd.DataFrame:
    """The acquisition table with acq_loss (loss at acq_step) and its CI: acq_loss_low at ci_high and
    acq_loss_high at ci_low (loss falls as steps rise); NaN where a step lies outside the model's loss steps."""
    fitted = monotone_loss(loss)
    out = acq.copy()
    for column, target in (("acq_step", "acq_loss"), ("ci_high", "acq_loss_low"), ("ci_low", "acq_loss_high")):
        out[target] = np.nan
        for model, rows in acq.groupby("model"):
            out.loc[rows.index, target] = loss_at(fitted, model, rows[column].to_numpy(float))
    return out


def _tau(a: pd.Series, b: pd.Series, min_units: int) -> tuple[float, float]:
    if len(a) < min_units or a.nunique() < 2 or b.nunique() < 2:
        return np.nan, np.nan
    result = stats.kendalltau(a, b)
    return float(result.statistic), float(result.pvalue)


def loss_matched_agreement(at_loss: pd.DataFrame, min_units: int = 3) -> pd.DataFrame:
    """Kendall's tau between every pair of models' unit accuracies at each matched loss, per level
    (MATCHED_LOSS_COLUMNS); NaN with fewer than `min_units` shared units or no spread."""
    rows = []
    for (level, value), group in at_loss.dropna(subset=["acc"]).groupby(["level", "loss"]):
        wide = group.pivot_table(index="task", columns="model", values="acc")
        for a, b in itertools.combinations(wide.columns, 2):
            both = wide[[a, b]].dropna()
            tau, p = _tau(both[a], both[b], min_units)
            rows.append({"level": level, "loss": value, "model_a": a, "model_b": b, "n_units": len(both),
                         "kendall_tau": tau, "kendall_p": p})
    return pd.DataFrame(rows, columns=list(MATCHED_LOSS_COLUMNS))


def acquisition_loss_agreement(acq_loss: pd.DataFrame, min_units: int = 3) -> pd.DataFrame:
    """Per level and pair of models, over units both acquired: Kendall's tau between acquisition losses and the
    median difference between them (ACQ_LOSS_COLUMNS)."""
    rows = []
    done = acq_loss[acq_loss.acquired & acq_loss.acq_loss.notna()]
    for level, group in done.groupby("level"):
        wide = group.pivot_table(index="task", columns="model", values="acq_loss")
        for a, b in itertools.combinations(wide.columns, 2):
            both = wide[[a, b]].dropna()
            tau, p = _tau(both[a], both[b], min_units)
            rows.append({"level": level, "model_a": a, "model_b": b, "n_units": len(both), "kendall_tau": tau,
                         "kendall_p": p, "median_loss_diff": float((both[a] - both[b]).median())
                         if len(both) else np.nan})
    return pd.DataFrame(rows, columns=list(ACQ_LOSS_COLUMNS))
