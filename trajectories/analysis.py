"""Acquisition analysis: pure functions of the curve table (schema.CURVE_COLUMNS) and, optionally, the item table
(schema.ITEM_COLUMNS). Grammar units are the rows of level "paradigm" or "phenomenon" that have a phenomenon.

- `acquisition`: the step at which a unit's monotone (isotonic) fit of accuracy first gets a fraction of the way
  from chance to its final value, with a bootstrap CI; where checkpoints were skipped (`skipped_from`), a
  crossing is only known to lie between two evaluated steps, and the CI reaches back over the gap.
- `acquisition_order`, `order_agreement`: the order in which each model acquires units, and how well the orders
  of two models agree (Kendall's tau, Spearman's rho).
- `dedup_differences`: standard vs deduplicated-data models of the same size.
- `one_dimensionality`: share of the variance of a model's (checkpoint x paradigm) accuracies on the first PC.
- `suspicious_checkpoints`: checkpoints that look mislabelled or duplicated.
- `reused_checkpoints`: checkpoints the sweep did not evaluate because their weights are another step's.
- `analyze`: every table `trajectories analyze` reports, model by model.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import isotonic_regression

from trajectories.errors import UserError
from trajectories.schema import CURVE_COLUMNS, ITEM_COLUMNS, Level
from trajectories.stats import N_BOOT, Z95, Replicates, censored_ci, model_replicates, task_replicates

CHANCE = 0.5
LEVELS = (Level.PHENOMENON, Level.PARADIGM)
MODEL_COLUMNS = ["model", "size", "params", "deduped"]


class AnalysisError(UserError):
    """The tables cannot be analysed (empty, or not written by `trajectories collect`); the message says why."""


def check_curves(curves: pd.DataFrame | None) -> pd.DataFrame:
    if curves is None or curves.empty:
        raise AnalysisError("the curve table is empty: nothing to analyse (run a sweep, then `trajectories collect`)")
    missing = [c for c in CURVE_COLUMNS if c not in curves.columns]
    if missing:
        raise AnalysisError(f"the curve table lacks columns {', '.join(missing)}; not from `trajectories collect`")
    return curves


def check_items(items: pd.DataFrame | None) -> pd.DataFrame | None:
    if items is None or items.empty:
        return None
    missing = [c for c in ITEM_COLUMNS if c not in items.columns]
    if missing:
        raise AnalysisError(f"the item table lacks columns {', '.join(missing)}: not written by `trajectories sweep`")
    return items


def grammar_units(curves: pd.DataFrame) -> pd.DataFrame:
    """Rows of minimal-pair units (chance is 0.5): paradigms and phenomena that have a phenomenon."""
    curves = check_curves(curves)
    keep = curves.level.isin(LEVELS) & (curves.phenomenon.fillna("") != "") & curves.acc.notna()
    return curves[keep]


def ci_label(from_items: np.ndarray) -> str:
    if from_items.all():
        return "bootstrap-items"
    return "stderr" if not from_items.any() else "bootstrap-items+stderr"


# ---------------------------------------------------------------------------------------------------- acquisition
def monotone_fit(acc: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares non-decreasing fit of each column of `acc` (steps x curves)."""
    acc = np.asarray(acc, float).reshape(len(acc), -1)
    return np.column_stack([isotonic_regression(col, weights=weights).x for col in acc.T])


def acquisition_steps(steps: np.ndarray, acc: np.ndarray, fraction: float = 0.5,
                      weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per column of acc (steps x curves): the first step at which the monotone fit reaches `fraction` of the way
    from chance to its final value (inf where the final value is not above chance), and that final value."""
    fit = monotone_fit(acc, weights)
    final = fit[-1]
    reached = fit >= CHANCE + fraction * (final - CHANCE)
    first = np.asarray(steps, float)[reached.argmax(axis=0)]
    return np.where(final > CHANCE, first, np.inf), final


def acquisition(curves: pd.DataFrame, items: pd.DataFrame | None = None, fraction: float = 0.5,
                n_boot: int = N_BOOT, seed: int = 0, min_steps: int = 3) -> pd.DataFrame:
    """One row per (model, unit) of level phenomenon or paradigm: the acquisition step with a 95% percentile
    bootstrap CI (resampling items where the item table has them, else drawing around acc with its stderr).

    A unit whose final (fitted) accuracy is within 1.96 bootstrap standard errors of chance is "not acquired".
    ci_high is inf when some replicates never rise above chance."""
    if not 0 < fraction <= 1:
        raise AnalysisError(f"fraction must be in (0, 1], not {fraction}")
    if grammar_units(curves).empty:
        raise AnalysisError("no minimal-pair results (paradigm or phenomenon rows with a phenomenon) to analyse")
    rows = []
    for keys, unit, rep in unit_replicates(curves, items, n_boot, seed):
        tokens = dict(zip(unit.step, unit.tokens, strict=True))
        rows.append(keys | _acquire(rep, unit, fraction, tokens, min_steps))
    return pd.DataFrame(rows).sort_values(["model", "level", "acq_step", "task"], ignore_index=True)


def unit_replicates(curves: pd.DataFrame, items: pd.DataFrame | None, n_boot: int = N_BOOT, seed: int = 0):
    """Every grammar unit of the curve table with its bootstrap replicates, model by model: yields (keys, rows,
    replicates), keys being the model's columns and the unit's level, task and phenomenon. Every analysis of a
    unit's curve (acquisition, onsets, stages) resamples through here, so they agree on the replicates."""
    items = check_items(items)
    items_by_model = dict(tuple(items.groupby("model"))) if items is not None else {}
    for model, model_rows in grammar_units(curves).groupby("model"):
        paradigms = model_rows[model_rows.level == Level.PARADIGM]
        reps = model_replicates(paradigms, items_by_model.get(model), n_boot, seed)
        info = model_rows[MODEL_COLUMNS].iloc[0].to_dict()
        for (level, task), unit in model_rows.groupby(["level", "task"]):
            # A phenomenon whose paradigm rows are absent is resampled from its own stderr.
            rep = reps.get(task) or task_replicates(unit, None, n_boot, seed)
            yield info | {"level": level, "task": task, "phenomenon": unit.phenomenon.iloc[0]}, unit, rep


def _acquire(rep: Replicates, unit: pd.DataFrame, fraction: float, tokens: dict, min_steps: int) -> dict:
    # Weigh checkpoints by their item counts; unknown counts (imported results) weigh equally.
    n = unit.set_index("step").n.reindex(rep.steps).astype(float).to_numpy()
    weights = np.where(n > 0, n, 1.0)
    row = {"n_steps": len(rep.steps), "last_step": int(rep.steps[-1]), "ci_method": ci_label(rep.from_items),
           "fraction": fraction}
    (step,), (final,) = acquisition_steps(rep.steps, rep.acc, fraction, weights)
    # A step with neither items nor a stderr has no noise to draw: its replicates keep its accuracy.
    reps = np.where(np.isnan(rep.reps), rep.acc[:, None], rep.reps)
    boot_steps, boot_final = acquisition_steps(rep.steps, reps, fraction, weights)
    final_se = float(np.std(boot_final))
    acquired = len(rep.steps) >= min_steps and final - CHANCE > Z95 * final_se
    note = "" if acquired else ("too few checkpoints" if len(rep.steps) < min_steps else
                                "not acquired: final accuracy within noise of chance")
    low, high = censored_ci(_earliest(unit, rep.steps, boot_steps), boot_steps) if acquired else (np.nan, np.nan)
    return row | {
        "final_acc": final, "final_se": final_se, "acquired": acquired, "acq_step": step if acquired else np.nan,
        "acq_tokens": tokens.get(step, np.nan) if acquired else np.nan, "ci_low": low, "ci_high": high,
        "note": note,
    }


def _earliest(unit: pd.DataFrame, steps: np.ndarray, crossed: np.ndarray) -> np.ndarray:
    """The earliest step each crossing may lie at: a crossing seen at an evaluated step is only known to happen
    after the evaluated step before it, at the first checkpoint skipped between them (`skipped_from`), if any."""
    if "skipped_from" not in unit:
        return crossed
    first = unit.set_index("step").skipped_from.reindex(steps).astype(float).to_numpy()
    earliest = np.where(np.isnan(first), steps, first)
    at = np.searchsorted(steps, np.where(np.isfinite(crossed), crossed, steps[0]))
    return np.where(np.isfinite(crossed), earliest[at], crossed)


# ---------------------------------------------------------------------------------------------------- orders
def acquisition_order(acq: pd.DataFrame) -> pd.DataFrame:
    """Acquired units per (model, level) in the order they are acquired; rank 1 is first (ties share a rank)."""
    done = acq[acq.acquired].copy()
    done["rank"] = done.groupby(["model", "level"]).acq_step.rank(method="min").astype(int)
    return done.sort_values(["model", "level", "rank", "task"], ignore_index=True)[
        ["model", "level", "rank", "task", "acq_step", "ci_low", "ci_high"]
    ]


def order_agreement(acq: pd.DataFrame, min_units: int = 3) -> pd.DataFrame:
    """For every pair of models and each level: Kendall's tau and Spearman's rho between their acquisition steps
    over the units both acquired (NaN where fewer than `min_units` are shared)."""
    rows = []
    for level, rows_level in acq[acq.acquired].groupby("level"):
        steps = rows_level.pivot_table(index="task", columns="model", values="acq_step")
        for a, b in itertools.combinations(steps.columns, 2):
            both = steps[[a, b]].dropna()
            row = {"level": level, "model_a": a, "model_b": b, "n_units": len(both)}
            tau = rho = (np.nan, np.nan)
            if len(both) >= min_units and both[a].nunique() > 1 and both[b].nunique() > 1:
                tau, rho = stats.kendalltau(both[a], both[b]), stats.spearmanr(both[a], both[b])
            rows.append(row | {"kendall_tau": tau[0], "kendall_p": tau[1], "spearman_rho": rho[0],
                               "spearman_p": rho[1]})
    columns = ["level", "model_a", "model_b", "n_units", "kendall_tau", "kendall_p", "spearman_rho", "spearman_p"]
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------------------------------- dedup
def dedup_differences(acq: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Per size with both a standard and a deduped model, and per phenomenon: final accuracy (deduped minus
    standard, with a z score), acquisition steps, and the mean accuracy difference over their shared steps."""
    phen = acq[acq.level == Level.PHENOMENON]
    units = grammar_units(curves)
    units = units[units.level == Level.PHENOMENON]
    rows = []
    for size, group in phen.groupby("size"):
        standard, deduped = group[~group.deduped], group[group.deduped]
        if standard.empty or deduped.empty:
            continue
        pair = standard.merge(deduped, on="task", suffixes=("_std", "_dedup"))
        for _, r in pair.iterrows():
            a = units[(units.model == r.model_std) & (units.task == r.task)].set_index("step").acc
            b = units[(units.model == r.model_dedup) & (units.task == r.task)].set_index("step").acc
            diff = r.final_acc_dedup - r.final_acc_std
            se = np.hypot(r.final_se_std, r.final_se_dedup)  # 0 when both are at ceiling: no z then
            rows.append({
                "size": size, "phenomenon": r.phenomenon_std, "model_standard": r.model_std,
                "model_deduped": r.model_dedup, "final_standard": r.final_acc_std, "final_deduped": r.final_acc_dedup,
                "final_diff": diff, "final_diff_z": diff / se if se > 0 else np.nan,
                "acq_step_standard": r.acq_step_std, "acq_step_deduped": r.acq_step_dedup,
                "mean_diff_shared_steps": (b - a).mean(), "shared_steps": int((b - a).notna().sum()),
            })
    columns = ["size", "phenomenon", "model_standard", "model_deduped", "final_standard", "final_deduped",
               "final_diff", "final_diff_z", "acq_step_standard", "acq_step_deduped", "mean_diff_shared_steps",
               "shared_steps"]
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------------------------------- structure
def one_dimensionality(curves: pd.DataFrame) -> pd.DataFrame:
    """Per model: share of the variance of its (checkpoint x paradigm) accuracy matrix explained by the first
    principal component (paradigms measured at every checkpoint of the model; columns centred)."""
    paradigms = grammar_units(curves)
    rows = []
    for model, rows_model in paradigms[paradigms.level == Level.PARADIGM].groupby("model"):
        matrix = rows_model.pivot_table(index="step", columns="task", values="acc").dropna(axis=1)
        share = np.nan
        if matrix.shape[0] >= 3 and matrix.shape[1] >= 2:
            centred = matrix.to_numpy() - matrix.to_numpy().mean(axis=0)
            sv = np.linalg.svd(centred, compute_uv=False)
            share = sv[0] ** 2 / (sv**2).sum() if sv.any() else np.nan
        rows.append({"model": model, "n_steps": matrix.shape[0], "n_paradigms": matrix.shape[1],
                     "pc1_share": share})
    return pd.DataFrame(rows, columns=["model", "n_steps", "n_paradigms", "pc1_share"])


# ---------------------------------------------------------------------------------------------------- suspicious
def suspicious_checkpoints(curves: pd.DataFrame, items: pd.DataFrame | None = None,
                           factor: float = 10.0) -> pd.DataFrame:
    """Checkpoints that look mislabelled or duplicated.

    "departure": the checkpoint's paradigm accuracies depart from what its neighbours predict (interpolated in
    log step) by far more than sampling noise: the mean squared standardised departure exceeds `factor`
    (1 is pure noise). "duplicate": its per-item log-probs equal another step's."""
    frames = [_departures(grammar_units(curves), factor)]
    items = check_items(items)
    if items is not None:
        frames += [_identical_checkpoints(model_items) for _, model_items in items.groupby("model")]
    columns = ["model", "step", "kind", "other_step", "statistic", "detail"]
    found = [f for f in frames if len(f)]
    return pd.concat(found, ignore_index=True)[columns] if found else pd.DataFrame(columns=columns)


def _departures(units: pd.DataFrame, factor: float) -> pd.DataFrame:
    rows = []
    for model, rows_model in units[units.level == Level.PARADIGM].groupby("model"):
        acc = rows_model.pivot_table(index="step", columns="task", values="acc")
        # Floor the noise at one item's worth, so paradigms at exactly 0 or 1 (stderr 0) do not divide by zero.
        floor = 1.0 / rows_model.pivot_table(index="step", columns="task", values="n").astype(float)
        se = np.maximum(rows_model.pivot_table(index="step", columns="task", values="acc_stderr"), floor)
        x, a, s = np.log1p(acc.index.to_numpy(float)), acc.to_numpy(), se.reindex_like(acc).to_numpy()
        keep = np.arange(len(x))
        # Remove the worst checkpoint and look again, so a bad checkpoint does not make its neighbours look bad.
        while len(keep) >= 3:
            stat, z2 = _neighbour_departure(x[keep], a[keep], s[keep])
            worst = int(np.nanargmax(stat)) if np.isfinite(stat).any() else 0
            if not stat[worst] > factor:
                break
            rows.append({"model": model, "step": int(acc.index[keep[worst]]), "kind": "departure",
                         "other_step": np.nan, "statistic": stat[worst],
                         "detail": f"accuracies depart from the neighbouring checkpoints' by {np.sqrt(stat[worst]):.1f}"
                                   f"x sampling noise (rms over {int(np.isfinite(z2[worst]).sum())} paradigms)"})
            keep = np.delete(keep, worst)
    return pd.DataFrame(rows)


def _neighbour_departure(x: np.ndarray, a: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per checkpoint (row): mean over paradigms of the squared standardised difference between its accuracy and
    the value interpolated (in log step) from its two neighbours; the first and last use their one neighbour."""
    last = len(x) - 1
    j, k = np.r_[1, np.arange(last)], np.r_[np.arange(1, last + 1), last - 1]
    # Endpoints (j == k) divide by zero before np.where drops it; a checkpoint may share no paradigm with its
    # neighbours, so its mean is of nothing.
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t = np.where(j == k, 0.0, (x - x[j]) / (x[k] - x[j]))[:, None]
        z2 = (a - (1 - t) * a[j] - t * a[k]) ** 2 / (s**2 + ((1 - t) * s[j]) ** 2 + (t * s[k]) ** 2)
        return np.nanmean(z2, axis=1), z2


def _identical_checkpoints(items: pd.DataFrame, atol: float = 1e-5) -> pd.DataFrame:
    by_step = {step: g.set_index(["task", "item"])[["logp_good", "logp_bad"]].sort_index()
               for step, g in items.groupby("step")}
    # Only steps with (nearly) equal mean log-prob can be duplicates; sorting by it keeps the comparisons few.
    means = sorted((g.to_numpy().mean(), step) for step, g in by_step.items())
    rows = []
    for (mean_a, a), (mean_b, b) in itertools.combinations(means, 2):
        if abs(mean_b - mean_a) > atol:
            continue
        x, y = by_step[a].align(by_step[b], join="inner")
        if len(x) and np.allclose(x.to_numpy(), y.to_numpy(), rtol=0, atol=atol):
            first, second = sorted((a, b))
            rows.append({"model": items.model.iloc[0], "step": int(second), "kind": "duplicate",
                         "other_step": int(first), "statistic": float(len(x)),
                         "detail": f"per-item log-probs of {len(x)} items equal those of step {first}"})
    return pd.DataFrame(rows)


def reused_checkpoints(curves: pd.DataFrame) -> pd.DataFrame:
    """(model, step, same_weights_as) of each checkpoint whose results are another step's: the audit found their
    weights byte-identical, so the sweep evaluated that step only."""
    columns = ["model", "step", "same_weights_as"]
    if "same_weights_as" not in curves:
        return pd.DataFrame(columns=columns)
    reused = curves[curves.same_weights_as.notna()].drop_duplicates(["model", "step"])
    return reused[columns].sort_values(["model", "step"], ignore_index=True)


# ---------------------------------------------------------------------------------------------------- everything
def analyze(curves: pd.DataFrame, items_of: Callable[[str], pd.DataFrame | None], fraction: float = 0.5,
            n_boot: int = N_BOOT, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Every table of the report, by the name of its CSV. `items_of(model)` gives a model's item table (None if it
    has none): one model's items at a time, so a full suite's items need not fit in memory together."""
    curves = check_curves(curves)
    grammar = grammar_units(curves)
    acq, suspicious = [], []
    for model in sorted(grammar.model.unique()):
        items, rows = items_of(model), curves[curves.model == model]
        acq.append(acquisition(rows, items, fraction, n_boot, seed))
        suspicious.append(suspicious_checkpoints(rows, items))
    if not acq:
        raise AnalysisError("the curve table holds no minimal-pair results (rows with a phenomenon) to analyse")
    acq = pd.concat(acq, ignore_index=True)
    found = [s for s in suspicious if len(s)]
    return {
        "acquisition": acq, "order": acquisition_order(acq), "agreement": order_agreement(acq),
        "dedup": dedup_differences(acq, curves), "onedim": one_dimensionality(curves),
        "suspicious": pd.concat(found, ignore_index=True) if found else suspicious[0],
        "reused": reused_checkpoints(curves),
    }
