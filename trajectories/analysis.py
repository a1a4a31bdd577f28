"""Acquisition analysis: pure functions of the curve table (schema.CURVE_COLUMNS) and, optionally, the item table
(schema.ITEM_COLUMNS). Grammar units are the rows of level "paradigm" or "phenomenon" that have a phenomenon.

- `acquisition`: the step at which a unit's monotone (isotonic) fit of accuracy first gets a fraction of the way
  from chance to its final value, with an interval-censored bootstrap CI (a crossing is only known to lie between
  two evaluated steps, so a sweep that skipped checkpoints gets the wider CI it should); `onsets.py` adds a
  sigmoid fit.
- `acquisition_order`, `order_agreement`: the order in which each model acquires units, and how well the orders
  of two models agree (Kendall's tau, Spearman's rho).
- `dedup_differences`: standard vs deduplicated-data models of the same size.
- `one_dimensionality`: share of the variance of a model's (checkpoint x paradigm) accuracies on the first PC.
- `suspicious_checkpoints`: checkpoints that look mislabelled or duplicated.
- `reused_checkpoints`: checkpoints the sweep did not evaluate because their weights are another step's.
- `analyze`: every table `trajectories analyze` reports, model by model.
- `memorization_tables`: every table of a memorization run's report, from its per-row results
  (schema.MEMORIZATION_COLUMNS), with the statistics of memorization_analysis.py.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import isotonic_regression

from trajectories import memorization_analysis as ma
from trajectories.errors import UserError
from trajectories.schema import CURVE_COLUMNS, ITEM_COLUMNS, Level, display_name, with_curve_defaults
from trajectories.stats import N_BOOT, Z95, Replicates, model_replicates, task_replicates

CHANCE = 0.5
FINAL_SPAN = 3  # checkpoints at the end of a curve whose mean accuracy decides "above chance" (above_chance)
LEVELS = (Level.PHENOMENON, Level.PARADIGM)
MODEL_COLUMNS = ["model", "size", "params", "deduped"]


class AnalysisError(UserError):
    """The tables cannot be analysed (empty, or not written by `trajectories collect`); the message says why."""


def check_curves(curves: pd.DataFrame | None) -> pd.DataFrame:
    if curves is None or curves.empty:
        raise AnalysisError("the curve table is empty: nothing to analyse (run a sweep, then `trajectories collect`)")
    curves = with_curve_defaults(curves)
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
    first, _, final = _crossings(np.asarray(steps, float), acc, fraction, weights)
    return first, final


def _crossings(steps: np.ndarray, acc: np.ndarray, fraction: float, weights: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As acquisition_steps, plus the evaluated step before each crossing (the crossing lies in that gap)."""
    fit = monotone_fit(acc, weights)
    final = fit[-1]
    j = (fit >= CHANCE + fraction * (final - CHANCE)).argmax(axis=0)
    above = final > CHANCE
    return np.where(above, steps[j], np.inf), np.where(above, steps[np.maximum(j - 1, 0)], np.inf), final


def above_chance(acc: np.ndarray, reps: np.ndarray, span: int = FINAL_SPAN) -> tuple[float, float, bool]:
    """Is a curve's end significantly above chance? The mean raw accuracy over its last `span` checkpoints, its
    bootstrap standard error (replicates: steps x B, paired across steps), and whether it exceeds chance by more
    than 1.96 of them (one-sided 2.5%). The isotonic fit's final value is not tested: on a flat curve it is the
    largest of running means, biased upward, and the bootstrap spread does not show that bias (it called 10 of 96
    flat curves of 1000 items acquired, where 2.5% was meant)."""
    end = np.asarray(acc, float)[-span:].mean()
    se = float(np.std(np.asarray(reps, float)[-span:].mean(axis=0)))
    return float(end), se, bool(end - CHANCE > Z95 * se)


def acquisition(curves: pd.DataFrame, items: pd.DataFrame | None = None, fraction: float = 0.5,
                n_boot: int = N_BOOT, seed: int = 0, min_steps: int = 3) -> pd.DataFrame:
    """One row per (model, unit) of level phenomenon or paradigm: the acquisition step with a 95% bootstrap CI
    (resampling items where the item table has them, else drawing around acc with its stderr) that accounts for
    the gap between evaluated steps: a replicate crossing at checkpoint j says only that the crossing lies in
    (step j-1, step j], so the CI runs from the 2.5% quantile of the replicates' gap starts to the 97.5% quantile of
    their crossing steps (interval censoring; onsets.py).

    "Not acquired": the mean accuracy over the last FINAL_SPAN checkpoints is within 1.96 bootstrap standard
    errors of chance (`above_chance`). ci_high is inf when some replicates never rise above chance."""
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
    steps = np.asarray(rep.steps, float)
    row = {"n_steps": len(rep.steps), "last_step": int(rep.steps[-1]), "ci_method": ci_label(rep.from_items),
           "fraction": fraction, "method": "isotonic", "definition": f"final@{fraction:g}"}
    (step,), _, (final,) = _crossings(steps, rep.acc, fraction, weights)
    # A step with neither items nor a stderr has no noise to draw: its replicates keep its accuracy.
    reps = np.where(np.isnan(rep.reps), rep.acc[:, None], rep.reps)
    boot_steps, boot_before, boot_final = _crossings(steps, reps, fraction, weights)
    final_se = float(np.std(boot_final))
    end_acc, end_se, significant = above_chance(rep.acc, reps)
    acquired = len(rep.steps) >= min_steps and significant
    note = "" if acquired else ("too few checkpoints" if len(rep.steps) < min_steps else
                                "not acquired: final accuracy within noise of chance")
    low, high = (float(np.quantile(boot_before, 0.025, method="inverted_cdf")),
                 float(np.quantile(boot_steps, 0.975, method="inverted_cdf"))) if acquired else (np.nan, np.nan)
    return row | {
        "final_acc": final, "final_se": final_se, "end_acc": end_acc, "end_se": end_se, "acquired": acquired,
        "acq_step": step if acquired else np.nan, "acq_tokens": tokens.get(step, np.nan) if acquired else np.nan,
        "ci_low": low, "ci_high": high, "note": note,
    }


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


# ---------------------------------------------------------------------------------------------------- seeds
def seed_groups(curves: pd.DataFrame) -> dict[str, list[str]]:
    """Models that differ only in their seed (Pythia's -seedN reruns, a local suite's `seed`): the same size and
    data variant, at least one with a seed. Keyed by the group's main run (the member without a seed), else by
    the first member's name without its -seedN; groups of one are left out."""
    models = curves.drop_duplicates("model")[["model", "size", "deduped", "seed"]]
    groups = {}
    for _, members in models.groupby(["size", "deduped"]):
        if len(members) < 2 or members.seed.isna().all():
            continue
        main = members[members.seed.isna()].model.tolist()
        name = main[0] if len(main) == 1 else re.sub(r"-seed\d+$", "", members.model.iloc[0])
        groups[name] = sorted(members.model, key=lambda m: (m != name, m))
    return groups


SPREAD_COLUMNS = ("group", "level", "task", "n_seeds", "n_acquired", "acq_step_min", "acq_step_median",
                  "acq_step_max", "spread_decades")


def seed_spread(acq: pd.DataFrame, groups: dict[str, list[str]]) -> pd.DataFrame:
    """Per seed group and unit: how far apart the seeds' acquisition steps are (SPREAD_COLUMNS); spread_decades is
    the standard deviation of log10(step + 1) over the seeds that acquired it (NaN with fewer than two)."""
    rows = []
    for group, members in groups.items():
        for (level, task), unit in acq[acq.model.isin(members)].groupby(["level", "task"]):
            steps = unit.acq_step[unit.acquired].to_numpy(float)
            rows.append({"group": group, "level": level, "task": task, "n_seeds": len(unit),
                         "n_acquired": len(steps), "acq_step_min": steps.min() if len(steps) else np.nan,
                         "acq_step_median": np.median(steps) if len(steps) else np.nan,
                         "acq_step_max": steps.max() if len(steps) else np.nan,
                         "spread_decades": np.std(np.log10(steps + 1), ddof=1) if len(steps) > 1 else np.nan})
    return pd.DataFrame(rows, columns=list(SPREAD_COLUMNS))


def pair_kind(a: str, b: str, info: pd.DataFrame, groups: dict[str, list[str]]) -> str:
    """How two models differ: only in seed, only in data (standard vs deduped), or in size."""
    if any(a in members and b in members for members in groups.values()):
        return "seeds of one size"
    if info.at[a, "size"] == info.at[b, "size"]:
        return "standard vs deduped" if info.at[a, "deduped"] != info.at[b, "deduped"] else "same size"
    return "different sizes"


def agreement_ceiling(agreement: pd.DataFrame, curves: pd.DataFrame, groups: dict[str, list[str]]) -> pd.DataFrame:
    """Order agreement (Kendall's tau) summarised by how the two models differ: between seeds of one size it is
    the ceiling that agreement between sizes can be judged against."""
    columns = ["level", "pair_kind", "n_pairs", "tau_mean", "tau_min", "tau_max"]
    if agreement.empty:
        return pd.DataFrame(columns=columns)
    info = curves.drop_duplicates("model").set_index("model")
    kinds = [pair_kind(a, b, info, groups) for a, b in zip(agreement.model_a, agreement.model_b, strict=True)]
    table = agreement.assign(pair_kind=kinds).groupby(["level", "pair_kind"]).kendall_tau.agg(
        n_pairs="count", tau_mean="mean", tau_min="min", tau_max="max").reset_index()
    return table[columns]


# ---------------------------------------------------------------------------------------------------- loss
LOSS_METRIC = "bits_per_byte"  # lm-eval's perplexity tasks report it; comparable across tokenizers


def loss_tasks(curves: pd.DataFrame) -> list[str]:
    """Perplexity tasks of the curve table: those with a "<task>/bits_per_byte" metric row."""
    metrics = curves[curves.level == Level.METRIC].task
    return sorted(t.removesuffix("/" + LOSS_METRIC) for t in metrics.unique() if t.endswith("/" + LOSS_METRIC))


def loss_table(curves: pd.DataFrame, task: str | None = None) -> pd.DataFrame:
    """(model, step, loss): bits per byte on a perplexity task's held-out text, per checkpoint. `task` may be
    omitted when the table has one perplexity task."""
    found = loss_tasks(check_curves(curves))
    if task is None:
        if len(found) != 1:
            raise AnalysisError("no perplexity task in the curve table (sweep one beside the grammar tasks: "
                                "`trajectories tasks add-text`, minigrammar_heldout, wikitext)" if not found else
                                f"several perplexity tasks; choose one with --loss-task: {', '.join(found)}")
        task = found[0]
    if task not in found:
        raise AnalysisError(f"no perplexity task {task!r} in the curve table; perplexity tasks: "
                            f"{', '.join(found) or 'none'}")
    rows = curves[(curves.level == Level.METRIC) & (curves.task == f"{task}/{LOSS_METRIC}")]
    return rows[["model", "step", "acc"]].rename(columns={"acc": "loss"}).reset_index(drop=True)


def step_matched_agreement(curves: pd.DataFrame, min_units: int = 3) -> pd.DataFrame:
    """Kendall's tau between every pair of models' unit accuracies at each step both evaluated, per level: the
    matched-step counterpart of alignment.loss_matched_agreement (same columns, `step` for `loss`)."""
    from trajectories.alignment import loss_matched_agreement

    units = grammar_units(curves)[["model", "level", "task", "step", "acc"]]
    return loss_matched_agreement(units.rename(columns={"step": "loss"}), min_units).rename(columns={"loss": "step"})


def matched_views(step_matched: pd.DataFrame, loss_matched: pd.DataFrame) -> pd.DataFrame:
    """Per level and pair of models: Kendall's tau between their unit accuracies averaged over the steps both
    evaluated (tau_matched_step) beside its average over the losses both reach (tau_matched_loss)."""
    keys = ["level", "model_a", "model_b"]
    step_tau = step_matched.groupby(keys).kendall_tau.mean().rename("tau_matched_step")
    loss_tau = loss_matched.groupby(keys).kendall_tau.mean().rename("tau_matched_loss")
    return step_tau.to_frame().join(loss_tau, how="outer").reset_index()


def kappa_summary(matched: pd.DataFrame, fleiss: pd.DataFrame) -> pd.DataFrame:
    """Per unit: Cohen's kappa at matched accuracy over the pairs of models (count, mean, min, max), and Fleiss'
    kappa of each seed group at its last shared step (fleiss_last_step_<group>)."""
    summary = matched.groupby("unit").kappa.agg(pairs="count", kappa_mean="mean", kappa_min="min",
                                                kappa_max="max").reset_index()
    if len(fleiss):
        last = fleiss[fleiss.step == fleiss.groupby(["group", "unit"]).step.transform("max")]
        summary = summary.merge(last.pivot(index="unit", columns="group", values="kappa")
                                .add_prefix("fleiss_last_step_").reset_index(), on="unit", how="left")
    return summary


# ---------------------------------------------------------------------------------------------------- n-grams
def ngram_phenomena(ngram: pd.DataFrame, acq: pd.DataFrame, solved: float = 0.9) -> pd.DataFrame:
    """Per phenomenon: the best n-gram order's accuracy (mean over the phenomenon's paradigms) beside the best
    model's final accuracy, and whether an n-gram model already solves it (accuracy >= `solved`)."""
    columns = ["phenomenon", "best_order", "ngram_acc", "best_model", "model_final_acc", "solved_by_ngram"]
    if ngram.empty:
        return pd.DataFrame(columns=columns)
    by_order = ngram.groupby(["phenomenon", "order"]).acc.mean().reset_index()
    best = by_order.loc[by_order.groupby("phenomenon").acc.idxmax()].set_index("phenomenon")
    models = acq[acq.level == Level.PHENOMENON].assign(phenomenon=lambda d: d.task.map(display_name))
    top = models.loc[models.groupby("phenomenon").final_acc.idxmax()].set_index("phenomenon") if len(models) else None
    rows = []
    for phenomenon, row in best.iterrows():
        model = top.loc[phenomenon] if top is not None and phenomenon in top.index else None
        rows.append({"phenomenon": phenomenon, "best_order": int(row.order), "ngram_acc": row.acc,
                     "best_model": model.model if model is not None else "",
                     "model_final_acc": model.final_acc if model is not None else np.nan,
                     "solved_by_ngram": bool(row.acc >= solved)})
    return pd.DataFrame(rows, columns=columns)


def reused_checkpoints(curves: pd.DataFrame) -> pd.DataFrame:
    """(model, step, same_weights_as) of each checkpoint whose results are another step's: the audit found their
    weights byte-identical, so the sweep evaluated that step only."""
    columns = ["model", "step", "same_weights_as"]
    if "same_weights_as" not in curves:
        return pd.DataFrame(columns=columns)
    reused = curves[curves.same_weights_as.notna()].drop_duplicates(["model", "step"])
    return reused[columns].sort_values(["model", "step"], ignore_index=True)


# ---------------------------------------------------------------------------------------------------- everything
METHODS = ("isotonic", "sigmoid")


def analyze(curves: pd.DataFrame, items_of: Callable[[str], pd.DataFrame | None], fraction: float = 0.5,
            n_boot: int = N_BOOT, seed: int = 0, method: str = "isotonic", onset_methods: tuple[str, ...] = METHODS,
            loss: pd.DataFrame | None = None, ngram: pd.DataFrame | None = None, stage_alpha: float = 0.05,
            stage_depth: float = 0.05, progress: bool = False) -> dict[str, pd.DataFrame]:
    """Every table of the report, by the name of its CSV. `items_of(model)` gives a model's item table (None if it
    has none), one model at a time for the per-model analyses.

    method: which onsets order the units (acquisition order and its agreement, seeds, loss), "isotonic" or
    "sigmoid"; onset_methods: those computed side by side (onsets.csv). loss: (model, step, loss) of a perplexity
    task (`loss_table`), for the matched-loss view. ngram: n-gram baseline accuracies (columns task, phenomenon,
    order, n, acc, acc_stderr)."""
    # These modules build on this one's primitives, so they are imported here rather than at the top.
    from tqdm import tqdm

    from trajectories import agreement as item_agreement
    from trajectories import alignment, onsets, stages

    if method not in METHODS:
        raise AnalysisError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    curves = check_curves(curves)
    grammar = grammar_units(curves)
    if grammar.empty:
        raise AnalysisError("the curve table holds no minimal-pair results (rows with a phenomenon) to analyse")
    methods = tuple(dict.fromkeys((*onset_methods, method)))
    acq, onset, suspicious, found_stages, kept_items = [], [], [], [], []
    for model in tqdm(sorted(grammar.model.unique()), desc="analyze", unit="model", disable=not progress):
        items, rows = items_of(model), curves[curves.model == model]
        acq.append(acquisition(rows, items, fraction, n_boot, seed))
        onset.append(onsets.onsets(rows, items, methods, fraction, n_boot, seed))
        found_stages.append(stages.stages(rows, items, stage_alpha, min_depth=stage_depth, n_boot=n_boot, seed=seed))
        suspicious.append(suspicious_checkpoints(rows, items))
        if items is not None:  # only who got which item right, compactly: every model's answers are kept
            kept_items.append(items[list(item_agreement.ANSWER_COLUMNS)].astype(
                {"model": "category", "task": "category", "step": "int32", "item": "int32"}))
    acq, onset = pd.concat(acq, ignore_index=True), pd.concat(onset, ignore_index=True)
    primary = acq if method == "isotonic" else _with_onsets(acq, onset[onset.method == method])
    groups = seed_groups(curves)
    agree = order_agreement(primary)
    found = [s for s in suspicious if len(s)]
    tables = {
        "acquisition": primary, "onsets": onset, "order": acquisition_order(primary), "agreement": agree,
        "dedup": dedup_differences(primary, curves), "onedim": one_dimensionality(curves),
        "suspicious": pd.concat(found, ignore_index=True) if found else suspicious[0],
        "stages": pd.concat(found_stages, ignore_index=True),
        "seed_spread": seed_spread(primary, groups), "agreement_ceiling": agreement_ceiling(agree, curves, groups),
        "step_matched": step_matched_agreement(curves),
        "reused": reused_checkpoints(curves),
    }
    if kept_items:
        items = pd.concat(kept_items, ignore_index=True)
        units = item_agreement.task_units(curves)
        tables["kappa_by_step"] = item_agreement.kappa_by_step(items, units)
        tables["kappa_matched"] = item_agreement.kappa_at_matched_accuracy(items, units)
        tables["fleiss"] = item_agreement.fleiss_by_step(items, groups, units)
        tables["kappa_summary"] = kappa_summary(tables["kappa_matched"], tables["fleiss"])
    if loss is not None:
        acq_loss = alignment.acquisition_loss(primary, loss)
        tables["acquisition_loss"] = acq_loss
        tables["acquisition_loss_agreement"] = alignment.acquisition_loss_agreement(acq_loss)
        try:
            tables["loss_matched"] = alignment.loss_matched_agreement(alignment.curves_at_loss(curves, loss))
        except AnalysisError:  # the models' losses do not overlap: no loss at which to compare them
            tables["loss_matched"] = pd.DataFrame(columns=list(alignment.MATCHED_LOSS_COLUMNS))
        tables["matched_views"] = matched_views(tables["step_matched"], tables["loss_matched"])
    if ngram is not None:
        tables["ngram"] = ngram
        tables["ngram_phenomena"] = ngram_phenomena(ngram, primary)
    return tables


def _with_onsets(acq: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """The acquisition table with its step, CI, verdict and definition taken from another onset method."""
    taken = ["acq_step", "acq_tokens", "ci_low", "ci_high", "acquired", "note", "method", "definition"]
    keys = ["model", "level", "task"]
    return acq.drop(columns=taken).merge(chosen[keys + taken], on=keys, how="left").sort_values(
        ["model", "level", "acq_step", "task"], ignore_index=True)


# ---------------------------------------------------------------------------------------------------- memorization
ROW_SETS = {"sampled": False, "canaries": True}  # the `rows` column of memorization tables: which rows they count
POSITION_BINS = {"sampled": 10, "canaries": 3}  # canaries are placed early, in the middle and late: thirds
MIN_ROWS_PER_BIN = 5  # the Poisson check's bins of consecutive rows: at most 50, each of at least this many rows


def _per_set(sets: dict[str, pd.DataFrame], function, **options) -> pd.DataFrame:
    return pd.concat([function(rows, **options).assign(rows=name) for name, rows in sets.items()], ignore_index=True)


def _rate(seen: pd.DataFrame) -> pd.DataFrame:
    out = seen.groupby(ma.KEYS).memorized.agg(n="size", memorized="sum").reset_index()
    out["rate"] = out.memorized / out.n
    out["ci_low"], out["ci_high"] = ma.wilson(out.memorized, out.n)
    return out


def _poisson(sampled: pd.DataFrame, function) -> pd.DataFrame:
    frames = []
    for _, checkpoint in ma.seen_rows(sampled).groupby(ma.KEYS):
        n_bins = min(50, len(checkpoint) // MIN_ROWS_PER_BIN)
        if n_bins >= 2:
            frames.append(function(checkpoint, n_bins=n_bins))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _predictability(items: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """Each model's last checkpoint as the target; predictors: its earlier checkpoints, and the last checkpoint of
    every other model trained on the same data (row numbers of another data file are other rows)."""
    last = items.groupby("model").step.max()  # items: seen rows only, so every checkpoint here has some
    deduped = models.set_index("model").deduped.astype(bool)
    checkpoints = items[["model", "step"]].drop_duplicates().sort_values(["model", "step"])
    frames = []
    for model in sorted(last.index):
        earlier = [(model, int(s)) for s in checkpoints[checkpoints.model == model].step if s < last[model]]
        others = [(m, int(last[m])) for m in last.index if m != model and deduped[m] == deduped[model]]
        if earlier + others:
            frames.append(ma.predictability(items, model, int(last[model]), earlier + others))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _repetitions(canaries: pd.DataFrame, n_boot: int, n_perm: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rate per repetition count, and the repetition effect where a model's canaries have several counts."""
    rates, effects = [], []
    for _, rows in canaries.groupby("model"):
        meta = rows[["row", "repetitions"]].drop_duplicates("row")
        rates.append(ma.rate_by_repetitions(rows, meta))
        if meta.repetitions.nunique() > 1:
            effects.append(ma.repetition_effect(rows, meta, n_boot=n_boot, n_perm=n_perm, seed=seed))
    return (pd.concat(rates, ignore_index=True), pd.concat(effects, ignore_index=True) if effects else pd.DataFrame())


def memorization_tables(items: pd.DataFrame, models: pd.DataFrame, n_boot: int = ma.N_BOOT, n_perm: int = ma.N_PERM,
                        seed: int = 0) -> dict[str, pd.DataFrame]:
    """Every table of a memorization report, by the name of its CSV, from the per-row results of every unit
    (schema.MEMORIZATION_COLUMNS) and the models (model, size, params, deduped). Tables that count rows say which in
    their `rows` column: "sampled" (the stratified sample) or "canaries" (rows the suite planted, with known
    repetitions); each holds only rows its checkpoint has seen.

    memorization_by_position: rate per bin of training position (10 bins; canaries: thirds) with Wilson CIs;
    memorization_rate: rows scored, memorized and the rate (Wilson CI) per checkpoint;
    recency: the slope of memorization on training position (bootstrap CI, permutation p) and the last 10% of
    training against the rest; poisson, poisson_qq: the index-of-dispersion test and Q-Q points of sampled rows;
    persistence: the share of memorized rows still memorized at later checkpoints; predictability: earlier
    checkpoints and other models as predictors of each model's last checkpoint; canary_grid: canaries' rate per
    repetition count and third of training; repetitions, repetition_effect: rate per repetition count and the slope
    per doubling (bootstrap CI within counts, permutation p), the most against the least repeated."""
    seen = ma.seen_rows(items)
    sets = {name: seen[seen.canary == flag] for name, flag in ROW_SETS.items() if (seen.canary == flag).any()}
    tables = {
        "memorization_rate": _per_set(sets, _rate),
        "memorization_by_position": pd.concat(
            [ma.rate_by_position(rows, POSITION_BINS[name]).assign(rows=name) for name, rows in sets.items()],
            ignore_index=True),
        "recency": _per_set(sets, ma.recency, n_boot=n_boot, n_perm=n_perm, seed=seed),
        "persistence": ma.persistence(seen),
        "predictability": _predictability(seen, models),
    }
    if "sampled" in sets:
        tables["poisson"] = _poisson(sets["sampled"], ma.poisson_dispersion)
        tables["poisson_qq"] = _poisson(sets["sampled"], ma.poisson_qq)
    if "canaries" in sets:
        canaries = sets["canaries"]
        tables["canary_grid"] = pd.concat(
            [ma.rate_by_position(rows, POSITION_BINS["canaries"]).assign(repetitions=count)
             for count, rows in canaries.groupby("repetitions")], ignore_index=True)
        tables["repetitions"], tables["repetition_effect"] = _repetitions(canaries, n_boot, n_perm, seed)
    return tables
