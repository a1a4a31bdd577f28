"""Item-level agreement between models (Choshen et al. 2022): do two models get the same items right, beyond what
their accuracies alone would make them share?

- Cohen's kappa between every pair of models, per unit (a paradigm, or a phenomenon pooling its paradigms'
  items), at every checkpoint both have (`kappa_by_step`) and at matched accuracy (`kappa_at_matched_accuracy`:
  for each pair, the two checkpoints whose accuracies on the unit are closest).
- Fleiss' kappa across a group of models, e.g. Pythia's seeds of one size (`fleiss_by_step`, `seed_groups`).
- `kappa_matrix`: a models x models table for a heatmap.

Input is the item table (schema.ITEM_COLUMNS); an item is (task, item) and only items both models (or all the
group's models) answered at the checkpoints compared count. Kappa is NaN where chance agreement is 1 (both models
answer every item alike by their marginals alone, e.g. both at 100%).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from trajectories.analysis import AnalysisError, grammar_units

# What agreement reads of the item table (schema.ITEM_COLUMNS): who answered which item right.
ANSWER_COLUMNS = ("model", "step", "task", "item", "correct")
# kappa_by_step: one row per (unit, step, pair of models; model_a < model_b).
#   unit: the task, or what `units` maps it to; n_items: items both answered; acc_a, acc_b: their accuracies on
#   those items; agreement: share of items both got right or both wrong; kappa: Cohen's kappa.
KAPPA_COLUMNS = ("unit", "step", "model_a", "model_b", "n_items", "acc_a", "acc_b", "agreement", "kappa")
# kappa_at_matched_accuracy: one row per (unit, pair of models): step_a and step_b are the checkpoints where
# their accuracies on the unit are closest (among those where both reach min_acc).
MATCHED_COLUMNS = ("unit", "model_a", "model_b", "step_a", "step_b", "n_items", "acc_a", "acc_b", "agreement",
                   "kappa")
# fleiss_by_step: one row per (group, unit, step that every model of the group has); acc: mean over models.
FLEISS_COLUMNS = ("group", "unit", "step", "n_models", "n_items", "acc", "kappa")


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cohen's kappa of two raters' 0/1 answers along the last axis (NaN: not answered, skipped)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    valid = ~(np.isnan(a) | np.isnan(b))
    n = valid.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pa, pb = np.where(valid, a, 0).sum(-1) / n, np.where(valid, b, 0).sum(-1) / n
        observed = (valid & (a == b)).sum(-1) / n
        expected = pa * pb + (1 - pa) * (1 - pb)
        return np.where(expected < 1, (observed - expected) / (1 - expected), np.nan)


def fleiss_kappa(ratings: np.ndarray) -> np.ndarray:
    """Fleiss' kappa of 0/1 answers shaped (..., raters, items); items some rater did not answer (NaN) are
    skipped."""
    ratings = np.asarray(ratings, float)
    k = ratings.shape[-2]
    valid = ~np.isnan(ratings).any(-2)
    ones = np.where(valid, np.nan_to_num(ratings).sum(-2), 0)
    n = valid.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Per item: the share of rater pairs that agree.
        agree = (ones**2 + (k - ones) ** 2 - k) / (k * (k - 1))
        observed = np.where(valid, agree, 0).sum(-1) / n
        p = ones.sum(-1) / (n * k)
        expected = p**2 + (1 - p) ** 2
        return np.where(expected < 1, (observed - expected) / (1 - expected), np.nan)


# ---------------------------------------------------------------------------------------------------- units
def task_units(curves: pd.DataFrame, level: str = "phenomenon") -> dict[str, str]:
    """task -> unit from the curve table: "phenomenon:<name>" (as the curve table names phenomenon rows) or, for
    level "paradigm", the task itself."""
    if level not in ("phenomenon", "paradigm"):
        raise AnalysisError(f"level must be 'phenomenon' or 'paradigm', not {level!r}")
    paradigms = grammar_units(curves)
    paradigms = paradigms[paradigms.level == "paradigm"].drop_duplicates("task")
    units = "phenomenon:" + paradigms.phenomenon if level == "phenomenon" else paradigms.task
    return dict(zip(paradigms.task, units, strict=True))


def seed_groups(models: Sequence[str]) -> dict[str, list[str]]:
    """Models that differ only by a "-seed<N>" suffix (Pythia's reruns), keyed by the name without it; groups
    of one are left out."""
    groups: dict[str, list[str]] = {}
    for model in sorted(set(models)):
        groups.setdefault(re.sub(r"-seed\d+$", "", model), []).append(model)
    return {base: members for base, members in groups.items() if len(members) > 1}


def _matrices(items: pd.DataFrame, units: Mapping[str, str] | None) -> dict[str, dict[str, pd.DataFrame]]:
    """unit -> model -> (steps x (task, item)) matrix of correct (NaN: not answered)."""
    if items is None or items.empty:
        raise AnalysisError("item-level agreement needs the item table (units/<model>/step<N>.items.parquet)")
    missing = [c for c in ANSWER_COLUMNS if c not in items.columns]
    if missing:
        raise AnalysisError(f"the item table lacks columns {', '.join(missing)}: not written by `trajectories sweep`")
    unit = items.task.map(units) if units is not None else items.task
    items = items.assign(unit=unit, correct=items.correct.astype(float)).dropna(subset=["unit"])
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for (name, model), rows in items.groupby(["unit", "model"]):
        out.setdefault(name, {})[model] = rows.pivot_table(index="step", columns=["task", "item"], values="correct",
                                                           aggfunc="mean")
    return out


def _aligned(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    keys = a.columns.intersection(b.columns)
    return a[keys], b[keys]


def _accuracy(matrix: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.nanmean(matrix, axis=-1) if matrix.shape[-1] else np.full(matrix.shape[:-1], np.nan)


# ---------------------------------------------------------------------------------------------------- tables
def kappa_by_step(items: pd.DataFrame, units: Mapping[str, str] | None = None,
                  models: Sequence[str] | None = None) -> pd.DataFrame:
    """Cohen's kappa between every pair of models at every checkpoint both have, per unit (KAPPA_COLUMNS)."""
    rows = []
    for unit, by_model in _matrices(items, units).items():
        names = sorted(m for m in by_model if models is None or m in models)
        for model_a, model_b in itertools.combinations(names, 2):
            a, b = _aligned(by_model[model_a], by_model[model_b])
            steps = a.index.intersection(b.index)
            a, b = a.loc[steps].to_numpy(), b.loc[steps].to_numpy()
            both = ~(np.isnan(a) | np.isnan(b))
            rows.append(pd.DataFrame({
                "unit": unit, "step": steps, "model_a": model_a, "model_b": model_b, "n_items": both.sum(1),
                "acc_a": _accuracy(np.where(both, a, np.nan)), "acc_b": _accuracy(np.where(both, b, np.nan)),
                "agreement": (both & (a == b)).sum(1) / np.maximum(both.sum(1), 1), "kappa": cohen_kappa(a, b),
            }))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(KAPPA_COLUMNS))


def kappa_at_matched_accuracy(items: pd.DataFrame, units: Mapping[str, str] | None = None,
                              models: Sequence[str] | None = None, min_acc: float | None = 0.6) -> pd.DataFrame:
    """Cohen's kappa between every pair of models, per unit, at the two checkpoints whose accuracies on the unit
    are closest (MATCHED_COLUMNS). Only checkpoints where both reach `min_acc` are matched (None: all), so two
    models are not matched at initialisation, where both sit at chance; ties go to the higher accuracy, then the
    later checkpoints."""
    rows = []
    for unit, by_model in _matrices(items, units).items():
        names = sorted(m for m in by_model if models is None or m in models)
        for model_a, model_b in itertools.combinations(names, 2):
            a, b = _aligned(by_model[model_a], by_model[model_b])
            acc_a, acc_b = _accuracy(a.to_numpy()), _accuracy(b.to_numpy())
            gap = np.abs(acc_a[:, None] - acc_b[None, :])
            if min_acc is not None:
                gap[(acc_a[:, None] < min_acc) | (acc_b[None, :] < min_acc)] = np.nan
            if np.isnan(gap).all():
                continue
            # Closest accuracies first, then the highest accuracy, then the latest checkpoints.
            i_grid, j_grid = np.indices(gap.shape)
            order = np.lexsort((-(i_grid + j_grid).ravel(), -(acc_a[:, None] + acc_b[None, :]).ravel(),
                                np.nan_to_num(gap, nan=np.inf).ravel()))
            i, j = np.unravel_index(order[0], gap.shape)
            x, y = a.iloc[i].to_numpy(), b.iloc[j].to_numpy()
            both = ~(np.isnan(x) | np.isnan(y))
            rows.append({"unit": unit, "model_a": model_a, "model_b": model_b, "step_a": int(a.index[i]),
                         "step_b": int(b.index[j]), "n_items": int(both.sum()), "acc_a": float(acc_a[i]),
                         "acc_b": float(acc_b[j]), "agreement": float((both & (x == y)).sum() / max(both.sum(), 1)),
                         "kappa": float(cohen_kappa(x, y))})
    return pd.DataFrame(rows, columns=list(MATCHED_COLUMNS))


def fleiss_by_step(items: pd.DataFrame, groups: Mapping[str, Sequence[str]],
                   units: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Fleiss' kappa across each group of models (e.g. `seed_groups`) at every checkpoint all of them have, per
    unit (FLEISS_COLUMNS)."""
    rows = []
    for unit, by_model in _matrices(items, units).items():
        for group, members in groups.items():
            present = [by_model[m] for m in members if m in by_model]
            if len(present) < 2:
                continue
            keys = present[0].columns
            steps = present[0].index
            for matrix in present[1:]:
                keys, steps = keys.intersection(matrix.columns), steps.intersection(matrix.index)
            ratings = np.stack([m.loc[steps, keys].to_numpy() for m in present], axis=1)  # steps x models x items
            answered = ~np.isnan(ratings).any(1)
            rows.append(pd.DataFrame({
                "group": group, "unit": unit, "step": steps, "n_models": len(present), "n_items": answered.sum(1),
                "acc": _accuracy(np.where(answered[:, None], ratings, np.nan).reshape(len(steps), -1)),
                "kappa": fleiss_kappa(ratings),
            }))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(FLEISS_COLUMNS))


def kappa_matrix(table: pd.DataFrame, unit: str, step: int | None = None) -> pd.DataFrame:
    """A symmetric models x models kappa table for one unit (diagonal 1), from `kappa_by_step` at `step` (None:
    the latest step in the table for that unit) or from `kappa_at_matched_accuracy`."""
    rows = table[table.unit == unit]
    if "step" in rows.columns:
        rows = rows[rows.step == (rows.step.max() if step is None else step)]
    models = sorted(set(rows.model_a) | set(rows.model_b))
    matrix = pd.DataFrame(np.eye(len(models)), index=models, columns=models)
    for r in rows.itertuples():
        matrix.loc[r.model_a, r.model_b] = matrix.loc[r.model_b, r.model_a] = r.kappa
    return matrix
