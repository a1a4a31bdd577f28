"""Statistics shared by curves and analysis: bootstrap replicates of accuracy curves (resampling items),
normal-approximation intervals where there are no items, and CIs of interval-censored estimates.

A replicate is one redraw of a task's items, used at every step, so differences between steps keep their pairing; a
phenomenon's replicate is the mean of its paradigms' replicates. Replicates are seeded per curve, so a curve's do not
change when other models or tasks are added.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trajectories.schema import phenomenon_key

Z95 = 1.959963984540054
N_BOOT = 1000


def censored_ci(low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    """95% CI from replicate intervals: 2.5% quantile of the lower ends, 97.5% quantile of the upper ends."""
    return (float(np.quantile(low, 0.025, method="inverted_cdf")),
            float(np.quantile(high, 0.975, method="inverted_cdf")))


@dataclass
class Replicates:
    """Accuracy replicates of one (model, task or phenomenon) curve: reps[i, b] is replicate b at steps[i]."""

    steps: np.ndarray
    acc: np.ndarray
    reps: np.ndarray
    from_items: np.ndarray  # per step: replicates resampled from items (else drawn around acc with its stderr)


def bootstrap_items(correct: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Accuracy replicates (steps x n_boot) from a steps x items 0/1 matrix (NaN: item not run at that step).

    The same resampled items are used at every step, so a replicate is one redraw of the test set and
    differences between steps keep their pairing; per step it is the ordinary bootstrap over items."""
    present = ~np.isnan(correct)
    n_items = correct.shape[1]
    counts = rng.multinomial(n_items, np.full(n_items, 1 / n_items), size=n_boot).T
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(present, correct, 0.0) @ counts) / (present @ counts)


def _rng(seed: int, *keys: str) -> np.random.Generator:
    # Seeded per curve, so a curve's replicates do not change when other models or tasks are added.
    return np.random.default_rng([seed, zlib.crc32("/".join(keys).encode())])


def task_replicates(rows: pd.DataFrame, items: pd.DataFrame | None, n_boot: int = N_BOOT, seed: int = 0) -> Replicates:
    """Replicates of one (model, task) curve: items resampled at steps that have items, normal draws around acc
    with the reported stderr at steps that do not (imported results)."""
    rows = rows.sort_values("step")
    steps, acc = rows.step.to_numpy(), rows.acc.to_numpy(float)
    rng = _rng(seed, rows.model.iloc[0], rows.task.iloc[0])
    reps = acc[:, None] + rows.acc_stderr.to_numpy(float)[:, None] * rng.standard_normal((len(steps), n_boot))
    has_items = np.zeros(len(steps), bool)
    if items is not None and len(items):
        correct = items.pivot_table(index="step", columns="item", values="correct", aggfunc="mean")
        has_items = np.isin(steps, correct.index)
        if has_items.any():
            matrix = correct.reindex(steps[has_items]).to_numpy(float)
            reps[has_items] = bootstrap_items(matrix, n_boot, rng)
    return Replicates(steps, acc, reps, has_items)


def model_replicates(paradigms: pd.DataFrame, items: pd.DataFrame | None, n_boot: int = N_BOOT,
                     seed: int = 0) -> dict[str, Replicates]:
    """Replicates of every paradigm of one model (keyed by task) and of every phenomenon (keyed by
    phenomenon_key(name): the mean over its paradigms at the steps where any were measured)."""
    by_task = dict(tuple(items.groupby("task"))) if items is not None and len(items) else {}
    out = {task: task_replicates(rows, by_task.get(task), n_boot, seed) for task, rows in paradigms.groupby("task")}
    for phenomenon, rows in paradigms[paradigms.phenomenon != ""].groupby("phenomenon"):
        parts = [out[task] for task in rows.task.unique()]
        steps = np.unique(np.concatenate([p.steps for p in parts]))
        acc = np.full((len(parts), len(steps)), np.nan)
        reps = np.full((len(parts), len(steps), n_boot), np.nan)
        from_items = np.ones((len(parts), len(steps)), bool)
        for i, part in enumerate(parts):
            at = np.searchsorted(steps, part.steps)
            acc[i, at], reps[i, at], from_items[i, at] = part.acc, part.reps, part.from_items
        out[phenomenon_key(phenomenon)] = Replicates(
            steps, np.nanmean(acc, 0), np.nanmean(reps, 0), from_items.all(0)
        )
    return out
