"""How much of the full sweep's acquisition analysis survives when only part of the checkpoints is evaluated?

    python bench/adaptive_synthetic.py                  # 13 curves x 6 models x 4 seeds, n = 1000 and n = 100
    python bench/adaptive_synthetic.py --seeds 8 --boot 400 --tolerance 0.5
    python bench/adaptive_synthetic.py --demo results/demo/sweep     # the demo suite's full sweep instead

--demo: a completed sweep (`trajectories demo`: six models, every minigrammar paradigm, every checkpoint) is the
reference. Each order chooses its checkpoints from the sweep's own results, as the engine would: adaptive runs
planning.plan on the curves the engine plans by (engine.planning_table: the stored units' accuracies and
standard errors), one choice per round as the local executor does. Each subset is then a results folder of its
own (sweep.json and hard links to the chosen units, nothing evaluated again) that `trajectories collect` and the
acquisition analysis of `trajectories analyze` read as they would read a real adaptive sweep's: with item
bootstrap CIs, `skipped_from` marking the gaps and gap-aware acquisition CIs. Columns as below, per level
(paradigm, phenomenon), over the (model, unit) pairs the full sweep finds acquired; no near_true or flat_acq (the
truth is not known), and "interval" is the subset's gap-aware CI overlapping the full sweep's.

Synthetic "models" on Pythia's 154 steps: each has 13 curves, logistic in log step from chance (0.5) to a final
accuracy, with midpoints spread from step ~3 to ~100k and widths of 0.08-0.4 decades; 2 of 13 never rise (final
0.5). A checkpoint's accuracy is Binomial(n, p) / n with n = 1000 or 100 items, drawn once per (curve, step), so
every order sees the same measurements the full sweep does.

Reference: the full sweep, analysed as `trajectories analyze` does (analysis.acquisition_steps: the first step
at which the isotonic fit gets halfway from chance to its final value; 95% percentile bootstrap CI; "acquired"
when the final fitted value is more than 1.96 bootstrap SEs above chance). The bootstrap is parametric
(Binomial(n, acc) / n per step), which is the item bootstrap's distribution at each step for independent items.
The subsets are analysed the same way with the same replicates at their steps.

Orders, each cut at 20%, 30% and 50% of the checkpoints per model:
  adaptive     planning.plan (first pass 10% coarse-to-fine, then the gap where a curve surely moves most)
  coarse       planning.coarse_to_fine, cut at the budget
  sequential   step order (what a sweep does today), cut at the budget
Columns, over the units the full sweep finds acquired (n_acq):
  in_ci        the subset's acquisition step lies inside the full sweep's 95% CI
  interval     the subset's interval (planning.acquisition_interval) overlaps that CI
  near_true    the subset's step is within 2 checkpoints of the true one (the first step where the noiseless curve
               is halfway; flat units excluded); the "full" row shows what the full sweep itself achieves
  missed       the subset does not find it acquired
  false        units the subset finds acquired but the full sweep does not (a count; target 0)
  flat_acq     units whose true curve is flat (at chance) that it finds acquired (a count, over all 2 x models
               x seeds flat units): the analysis' own false positives, which the full sweep has too
  ckpts        mean checkpoints evaluated per model (adaptive may stop before the budget)
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from trajectories.analysis import CHANCE, acquisition, acquisition_steps
from trajectories.curves import collect
from trajectories.engine import planning_table
from trajectories.planning import acquisition_interval, adaptive_sweep, coarse_to_fine, curves_from_table, parse_budget
from trajectories.stats import Z95
from trajectories.store import Store
from trajectories.suites import PYTHIA_STEPS

STEPS = np.array(PYTHIA_STEPS)
BUDGETS = ("20%", "30%", "50%")
ORDERS = ("adaptive", "coarse", "sequential")
N_CURVES, N_FLAT, N_MODELS = 13, 2, 6
MID_RANGE = (0.5, 5.0)


def true_curves(rng: np.random.Generator) -> np.ndarray:
    """curves x steps noiseless accuracies of one model."""
    mid = 10 ** rng.uniform(*MID_RANGE, N_CURVES)
    width = rng.uniform(0.08, 0.4, N_CURVES)
    final = np.r_[np.full(N_FLAT, CHANCE), rng.uniform(0.6, 0.95, N_CURVES - N_FLAT)]
    z = (np.log10(STEPS + 1)[None, :] - np.log10(mid + 1)[:, None]) / width[:, None]
    return CHANCE + (final - CHANCE)[:, None] / (1 + np.exp(-z))


def analyse(idx: np.ndarray, acc: np.ndarray, reps: np.ndarray) -> dict[str, np.ndarray]:
    """Acquisition of every curve from the steps STEPS[idx] (acc: curves x steps, reps: curves x steps x B)."""
    idx = np.sort(idx)
    steps, n_curves, n_boot = STEPS[idx], acc.shape[0], reps.shape[2]
    point, final = acquisition_steps(steps, acc[:, idx].T)
    sub = reps[:, idx, :].transpose(1, 0, 2).reshape(len(idx), -1)
    boot, boot_final = (a.reshape(n_curves, n_boot) for a in acquisition_steps(steps, sub))
    acquired = (len(idx) >= 3) & (final - CHANCE > Z95 * boot_final.std(axis=1))
    low, high = np.quantile(boot, [0.025, 0.975], axis=1, method="inverted_cdf")
    int_low, int_high = acquisition_interval(steps, acc[:, idx].T, available=STEPS)
    return {"acquired": acquired, "step": point, "ci_low": low, "ci_high": high, "int_low": int_low,
            "int_high": int_high}


def subsets(acc: np.ndarray, se: np.ndarray, tolerance: float) -> dict[tuple[str, str], tuple[np.ndarray, int]]:
    """(order, budget): (indices into STEPS evaluated, how many)."""
    position = {int(s): i for i, s in enumerate(STEPS)}
    measure = lambda step: {f"c{c}": (acc[c, position[step]], se[c, position[step]]) for c in range(len(acc))}  # noqa: E731
    coarse = [position[s] for s in coarse_to_fine(STEPS)]
    out = {}
    for budget in BUDGETS:
        k = parse_budget(budget).of(len(STEPS))
        log = adaptive_sweep("m", STEPS, measure, budget, tolerance=tolerance)
        chosen = [position[d.step] for d in log if not d.stopped]
        out["adaptive", budget] = np.array(chosen)
        out["coarse", budget] = np.array(coarse[:k])
        out["sequential", budget] = np.arange(k)
    return out


COLUMNS = ("n_acq", "in_ci", "interval", "near_true", "missed", "false", "flat_acq", "ckpts", "models")


def run(n_items: int, seeds: int, n_boot: int, tolerance: float) -> dict[tuple[str, str], dict[str, float]]:
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for seed in range(seeds):
        for model in range(N_MODELS):
            rng = np.random.default_rng([seed, model, n_items])
            p = true_curves(rng)
            acc = rng.binomial(n_items, p) / n_items
            se = np.sqrt(acc * (1 - acc) / n_items)
            reps = rng.binomial(n_items, acc[..., None], (*acc.shape, n_boot)) / n_items
            full = analyse(np.arange(len(STEPS)), acc, reps)
            flat = p[:, -1] <= CHANCE
            # The ideal answer: the first checkpoint at which the noiseless curve is halfway to its final value.
            ideal = (p >= (CHANCE + p[:, -1:]) / 2).argmax(axis=1)
            cases = {("full", "100%"): np.arange(len(STEPS)), **subsets(acc, se, tolerance)}
            for key, idx in cases.items():
                res = full if key[0] == "full" else analyse(idx, acc, reps)
                got, ref = res["acquired"], full["acquired"]
                found = ref & got
                low, high = full["ci_low"], full["ci_high"]
                position = np.searchsorted(STEPS, np.where(np.isfinite(res["step"]), res["step"], 0))
                tally = rows.setdefault(key, dict.fromkeys(COLUMNS, 0.0))
                for column, value in {
                    "n_acq": ref.sum(),
                    "in_ci": (found & (res["step"] >= low) & (res["step"] <= high)).sum(),
                    "interval": (found & (res["int_high"] >= low) & (res["int_low"] <= high)).sum(),
                    "near_true": (found & ~flat & (np.abs(position - ideal) <= 2)).sum(),
                    "missed": (ref & ~got).sum(),
                    "false": (got & ~ref).sum(),
                    "flat_acq": (got & flat).sum(),
                    "ckpts": len(idx),
                    "models": 1,
                }.items():
                    tally[column] += value
    return rows


def table(n_items: int, rows: dict[tuple[str, str], dict[str, float]]) -> list[str]:
    lines = [f"{'items':>5} {'order':<10} {'budget':>6} {'ckpts':>6} {'n_acq':>5} {'in_ci':>6} {'interval':>8} "
             f"{'near_true':>9} {'missed':>6} {'false':>5} {'flat_acq':>8}"]
    rank = {"full": 0, **{order: i + 1 for i, order in enumerate(ORDERS)}}
    for (order, budget), t in sorted(rows.items(), key=lambda kv: (kv[0][1], rank[kv[0][0]])):
        pct = {k: 100 * t[k] / max(t["n_acq"], 1) for k in ("in_ci", "interval", "near_true", "missed")}
        lines.append(f"{n_items:>5} {order:<10} {budget:>6} {t['ckpts'] / t['models']:>6.1f} {int(t['n_acq']):>5} "
                     f"{pct['in_ci']:>5.1f}% {pct['interval']:>7.1f}% {pct['near_true']:>8.1f}% "
                     f"{pct['missed']:>5.1f}% {int(t['false']):>5} {int(t['flat_acq']):>8}")
    return lines


# ---------------------------------------------------------------------------------------------------- demo suite
def chosen_steps(store: Store, tolerance: float) -> dict[tuple[str, str], dict[str, list[int]]]:
    """(order, budget): each model's steps, chosen from the stored results alone."""
    records = store.records()
    curves = curves_from_table(planning_table(records))
    out: dict[tuple[str, str], dict[str, list[int]]] = {}
    for model, model_curves in curves.items():
        steps = sorted({r.step for r in records if r.model.name == model})
        at = {c.name: dict(zip(c.steps, zip(c.acc, c.se))) for c in model_curves}
        measure = lambda step, at=at: {name: values[step] for name, values in at.items() if step in values}  # noqa: E731
        for budget in BUDGETS:
            k = parse_budget(budget).of(len(steps))
            log = adaptive_sweep(model, steps, measure, budget, tolerance=tolerance)
            out.setdefault(("adaptive", budget), {})[model] = [d.step for d in log if not d.stopped]
            out.setdefault(("coarse", budget), {})[model] = coarse_to_fine(steps)[:k]
            out.setdefault(("sequential", budget), {})[model] = steps[:k]
    return out


def subset_folder(store: Store, steps: dict[str, list[int]], folder: Path) -> Path:
    """A results folder holding only these units of `store` (hard links), with its sweep.json."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "units").mkdir(parents=True)
    shutil.copy(store.manifest_path, folder / "sweep.json")
    for model, model_steps in steps.items():
        (folder / "units" / model).mkdir()
        for step in model_steps:
            for suffix in (".json", ".items.parquet"):
                name = f"step{step}{suffix}"
                os.link(store.units / model / name, folder / "units" / model / name)
    return folder


def acquisition_of(folder: Path, n_boot: int) -> pd.DataFrame:
    """What `trajectories analyze` reports as acquisition for the folder (collect first, as a sweep does)."""
    store = Store(folder)
    curves = collect(folder, n_boot=n_boot)
    return pd.concat([acquisition(curves[curves.model == model], store.items(model), n_boot=n_boot)
                      for model in sorted(curves.model.unique())], ignore_index=True)


def demo(folder: Path, n_boot: int, tolerance: float) -> list[str]:
    store = Store(folder)
    work = folder.parent / f"{folder.name}.subsets"
    full = acquisition_of(subset_folder(store, {m: sorted(s for n, s in store.requested() if n == m)
                                                for m, _ in store.requested()}, work / "full"), n_boot)
    keys = ["model", "level", "task"]
    lines = [f"{'level':<10} {'order':<10} {'budget':>6} {'ckpts':>6} {'n_acq':>5} {'in_ci':>6} {'interval':>8} "
             f"{'missed':>6} {'false':>5}"]
    misses = []
    for (order, budget), steps in sorted(chosen_steps(store, tolerance).items(), key=lambda kv: (kv[0][1], kv[0][0])):
        sub = acquisition_of(subset_folder(store, steps, work / f"{order}-{budget.rstrip('%')}"), n_boot)
        both = full.merge(sub, on=keys, suffixes=("", "_sub"))
        for level, rows in both.groupby("level"):
            ref, got = rows.acquired, rows.acquired_sub
            inside = ref & got & (rows.acq_step_sub >= rows.ci_low) & (rows.acq_step_sub <= rows.ci_high)
            overlap = ref & got & (rows.ci_high_sub >= rows.ci_low) & (rows.ci_low_sub <= rows.ci_high)
            n = max(int(ref.sum()), 1)
            lines.append(f"{level:<10} {order:<10} {budget:>6} {np.mean([len(s) for s in steps.values()]):>6.1f} "
                         f"{int(ref.sum()):>5} {100 * inside.sum() / n:>5.1f}% {100 * overlap.sum() / n:>7.1f}% "
                         f"{100 * (ref & ~got).sum() / n:>5.1f}% {int((got & ~ref).sum()):>5}")
            if order == "adaptive" and level == "paradigm":
                for row in rows[(ref & ~inside) | (got & ~ref)].itertuples():
                    misses.append(f"  adaptive {budget} {row.model} {row.task}: full {row.acq_step:g} "
                                  f"[{row.ci_low:g}, {row.ci_high:g}] acquired={row.acquired}; subset "
                                  f"{row.acq_step_sub:g} [{row.ci_low_sub:g}, {row.ci_high_sub:g}] "
                                  f"acquired={row.acquired_sub}; steps {sorted(steps[row.model])}")
    return lines + ["", "adaptive misses and false acquisitions (paradigms):", *misses]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--boot", type=int, default=200, help="bootstrap replicates per curve")
    parser.add_argument("--tolerance", type=float, default=1.0, help="planning.plan's tolerance")
    parser.add_argument("--items", default="1000,100", help="items per curve, comma-separated")
    parser.add_argument("--demo", type=Path, help="a full sweep's folder (e.g. results/demo/sweep): bench on it; "
                        "subsets are written beside it, in <folder>.subsets/")
    args = parser.parse_args()
    if args.demo:
        start = time.perf_counter()
        print(f"{args.demo}: {args.boot} bootstrap replicates; adaptive tolerance {args.tolerance:g}")
        print(*demo(args.demo, args.boot, args.tolerance), f"({time.perf_counter() - start:.0f} s)", sep="\n")
        return
    print(f"{N_CURVES} curves ({N_FLAT} flat) x {N_MODELS} models x {args.seeds} seeds on Pythia's {len(STEPS)} "
          f"steps; {args.boot} bootstrap replicates; adaptive tolerance {args.tolerance:g}")
    for n_items in (int(n) for n in args.items.split(",")):
        start = time.perf_counter()
        rows = run(n_items, args.seeds, args.boot, args.tolerance)
        print("", *table(n_items, rows), f"({time.perf_counter() - start:.0f} s)", sep="\n")


if __name__ == "__main__":
    main()
