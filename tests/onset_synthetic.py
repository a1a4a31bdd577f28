"""Synthetic learning curves with known truth, shared by the tests of onsets, stages, agreement, alignment and
fields: item-level 0/1 answers drawn from a planted accuracy per step, turned into the curve and item tables
exactly as `collect` builds them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trajectories.curves import Replicates, bootstrap_items, curves_from_units, with_phenomena
from trajectories.schema import ITEM_COLUMNS

PYTHIA_STEPS = np.array((0, *(2**i for i in range(10)), *range(1000, 143_001, 1000)))
LOG_STEPS = np.array((0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 143000))
TOKENS_PER_STEP = 1000


def logistic_acc(steps, midpoint: float, top: float = 0.85, scale: float = 0.25, floor: float = 0.5) -> np.ndarray:
    """A logistic in log10 step from `floor` to `top`, halfway at `midpoint`; `scale` in decades."""
    steps = np.asarray(steps, float)
    return floor + (top - floor) / (1 + np.exp(-(np.log10(steps + 1) - np.log10(midpoint + 1)) / scale))


def answers(p: np.ndarray, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """steps x items 0/1: each item right with the step's accuracy, independently (binomial noise)."""
    return (rng.random((len(p), n_items)) < np.asarray(p)[:, None]).astype(float)


def replicates(steps, correct: np.ndarray, n_boot: int, rng: np.random.Generator) -> Replicates:
    return Replicates(np.asarray(steps), correct.mean(1), bootstrap_items(correct, n_boot, rng),
                      np.ones(len(steps), bool))


def quick_replicates(steps, correct: np.ndarray, n_boot: int, rng: np.random.Generator) -> Replicates:
    """As `replicates` (the same items redrawn at every step), by resampled indices: many times faster than
    `bootstrap_items`' multinomial draws for the hundreds of small null curves the stage tests need."""
    picks = rng.integers(correct.shape[1], size=(n_boot, correct.shape[1]))
    return Replicates(np.asarray(steps), correct.mean(1), correct[:, picks].mean(-1), np.ones(len(steps), bool))


def tables(planted: dict[str, dict[str, tuple[str, np.ndarray]]], steps=LOG_STEPS, n_items: int = 200,
           n_boot: int = 100, seed: int = 0, answers_of=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Curve and item tables of planted curves: planted[model][task] = (phenomenon, accuracy per step).
    answers_of(model, task, p, rng) may replace the independent draws (e.g. to share answers between models)."""
    rng = np.random.default_rng(seed)
    draw = answers_of or (lambda model, task, p, rng: answers(p, n_items, rng))
    frames, records = [], {}
    for model, tasks in planted.items():
        for task, (phenomenon, p) in tasks.items():
            correct = draw(model, task, np.asarray(p), rng)
            for i, step in enumerate(steps):
                frames.append(pd.DataFrame({"model": model, "step": int(step), "task": task,
                                            "item": np.arange(correct.shape[1]), "logp_good": 0.0,
                                            "logp_bad": np.where(correct[i] > 0, -1.0, 1.0),
                                            "correct": correct[i] > 0}))
                acc, n = correct[i].mean(), correct.shape[1]
                record = records.setdefault((model, int(step)), {
                    "model": {"name": model, "size": model, "params": None, "deduped": False}, "step": int(step),
                    "tokens": int(step) * TOKENS_PER_STEP, "tasks": {}})
                record["tasks"][task] = {"acc": acc, "acc_stderr": float(np.sqrt(acc * (1 - acc) / (n - 1))),
                                         "n": n, "phenomenon": phenomenon}
    items = pd.concat(frames, ignore_index=True)[list(ITEM_COLUMNS)]
    curves = with_phenomena(curves_from_units(list(records.values())), items, n_boot=n_boot, seed=seed)
    return curves, items
