"""Coverage of known acquisition midpoints by the onset methods' 95% CIs, on Pythia's 154 checkpoints.

    python bench/onset_coverage.py                     # 240 units (120 curves x 1000 and 100 items), ~5 min
    python bench/onset_coverage.py --curves 30 --n-boot 200      # quicker look

Each synthetic unit is a logistic in log step from chance (0.5) to an asymptote in [0.65, 0.95], with its midpoint
log-uniform within one of three bands taken in turn: early [4, 1000), middle [1000, 30000), late [30000, 140000]
(late ones are mostly still rising at step 143000), and a rise of
0.15 to 0.5 decades (logistic scale in log10 steps). Every item is correct with the curve's accuracy, independently
per checkpoint (binomial noise), with 1000 or 100 items per unit. Both methods get the same item-bootstrap
replicates (`curves.bootstrap_items`, as `collect` and `analyze` make them) and are scored on the true midpoint:
coverage (a unit not acquired counts as not covered), median CI width in decades of steps, bias (median of
log10(estimate / truth)) and the share acquired. The isotonic method's target is "halfway to the final value",
which differs from the midpoint when a curve has not plateaued: that bias is what the sigmoid method removes.
"isotonic-before" is `analysis.acquisition` as it was before interval censoring (its CI only lands on evaluated steps;
"acquired" tested on the isotonic fit's final value), "acquisition" is `analysis.acquisition` now (interval-censored CI,
"acquired" tested on the raw mean of the last checkpoints), for comparison.

    python bench/onset_coverage.py --null 96     # flat curves (truth: never acquired): how many are called acquired
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from trajectories import analysis
from trajectories.analysis import acquisition_steps
from trajectories.onsets import isotonic_onset, sigmoid_onset
from trajectories.stats import Z95, Replicates, bootstrap_items
from trajectories.suites import PYTHIA_STEPS

BANDS = {"early (<1k)": (0, 1000), "middle (1k-30k)": (1000, 30000), "late (>30k)": (30000, np.inf)}


def true_curve(steps: np.ndarray, midpoint: float, top: float, scale: float) -> np.ndarray:
    return 0.5 + (top - 0.5) / (1 + np.exp(-(np.log10(steps + 1) - np.log10(midpoint + 1)) / scale))


def simulate(n_curves: int, item_counts: tuple[int, ...], n_boot: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    steps = np.array(PYTHIA_STEPS)
    rows = []
    for curve in range(n_curves):
        low, high = list(BANDS.values())[curve % len(BANDS)]
        midpoint = 10 ** rng.uniform(np.log10(max(low, 4)), np.log10(min(high, 140_000)))
        top, scale = rng.uniform(0.65, 0.95), rng.uniform(0.15, 0.5)
        p = true_curve(steps, midpoint, top, scale)
        for n_items in item_counts:
            correct = (rng.random((len(steps), n_items)) < p[:, None]).astype(float)
            rep = Replicates(steps, correct.mean(1), bootstrap_items(correct, n_boot, rng), np.ones(len(steps), bool))
            n = np.full(len(steps), n_items)
            truth = {"curve": curve, "midpoint": midpoint, "top": top, "scale": scale, "n_items": n_items,
                     "final_share": (p[-1] - 0.5) / (top - 0.5)}
            for onset in (sigmoid_onset(rep, n, 0.5), isotonic_onset(rep, n, 0.5)):  # as `analyze` runs them
                rows.append(truth | {"method": onset.method, "acquired": onset.acquired, "note": onset.note,
                                     "acq_step": onset.acq_step, "ci_low": onset.ci_low, "ci_high": onset.ci_high})
            rows += [truth | before(rep, n), truth | acquisition_now(rep, n)]
    return pd.DataFrame(rows)


def before(rep: Replicates, n: np.ndarray) -> dict:
    """`analysis.acquisition` before interval censoring: first evaluated step at halfway to the final value,
    percentile CI over replicates' evaluated steps, "acquired" tested on the isotonic fit's final value."""
    (step,), (fitted_final,) = acquisition_steps(rep.steps, rep.acc, 0.5, n)
    steps, final = acquisition_steps(rep.steps, rep.reps, 0.5, n)
    low, high = np.quantile(steps, [0.025, 0.975], method="inverted_cdf")
    acquired = bool(fitted_final - 0.5 > Z95 * np.std(final))
    return {"method": "isotonic-before", "acquired": acquired, "note": "", "acq_step": step, "ci_low": low,
            "ci_high": high}


def acquisition_now(rep: Replicates, n: np.ndarray) -> dict:
    """`analysis.acquisition` as `analyze` runs it."""
    unit = pd.DataFrame({"step": rep.steps, "n": n})
    row = analysis._acquire(rep, unit, 0.5, {}, 3)
    return {"method": "acquisition", "acquired": row["acquired"], "note": row["note"], "acq_step": row["acq_step"],
            "ci_low": row["ci_low"], "ci_high": row["ci_high"]}


def null_rates(n_curves: int, n_items: int, n_boot: int, seed: int) -> pd.Series:
    """Share of flat curves (accuracy 0.5 at every step) that each method calls acquired."""
    rng = np.random.default_rng(seed)
    steps = np.array(PYTHIA_STEPS)
    calls = []
    for _ in range(n_curves):
        correct = (rng.random((len(steps), n_items)) < 0.5).astype(float)
        rep = Replicates(steps, correct.mean(1), bootstrap_items(correct, n_boot, rng), np.ones(len(steps), bool))
        n = np.full(len(steps), n_items)
        calls += [{"method": m["method"], "acquired": m["acquired"]} for m in (before(rep, n), acquisition_now(rep, n))]
        calls += [{"method": o.method, "acquired": o.acquired} for o in (sigmoid_onset(rep, n, 0.5),
                                                                           isotonic_onset(rep, n, 0.5))]
    return pd.DataFrame(calls).groupby("method").acquired.agg(["sum", "size", "mean"])


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    r = results.assign(
        covered=(results.ci_low <= results.midpoint) & (results.midpoint <= results.ci_high),
        width=np.log10(results.ci_high + 1) - np.log10(results.ci_low + 1),
        error=np.log10(results.acq_step + 1) - np.log10(results.midpoint + 1),
        band=pd.cut(results.midpoint, [lo for lo, _ in BANDS.values()] + [np.inf], labels=list(BANDS), right=False),
        plateaued=np.where(results.final_share >= 0.95, "plateaued", "not plateaued"),
    )

    def table(by: str | None) -> pd.DataFrame:
        keys = ["method"] if by is None else ["method", by]
        out = r.groupby(keys, observed=True).agg(
            units=("covered", "size"), coverage=("covered", "mean"), acquired=("acquired", "mean"),
            median_width_decades=("width", "median"), bias_decades=("error", "median"),
            median_abs_error_decades=("error", lambda e: e.abs().median()),
        ).round(3).reset_index()
        return out.assign(units_of=("all" if by is None else out.pop(by).astype(str).radd(f"{by}=")))

    parts = [table(by) for by in (None, "n_items", "band", "plateaued")]
    return pd.concat(parts, ignore_index=True).set_index(["units_of", "method"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curves", type=int, default=120, help="curves; each is run with every item count")
    parser.add_argument("--items", default="1000,100")
    parser.add_argument("--n-boot", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", help="also write the per-unit results here")
    parser.add_argument("--null", type=int, metavar="N", help="instead: N flat curves of the first --items count")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.null:
        print(null_rates(args.null, int(args.items.split(",")[0]), args.n_boot, args.seed))
        print(f"{args.null} flat curves, {time.perf_counter() - start:.0f} s")
        return
    results = simulate(args.curves, tuple(int(n) for n in args.items.split(",")), args.n_boot, args.seed)
    if args.csv:
        results.to_csv(args.csv, index=False)
    with pd.option_context("display.width", 200, "display.max_rows", 100, "display.max_columns", 20):
        print(summarise(results))
    print(f"\n{results.groupby('method').size().iloc[0]} units per method, {args.n_boot} replicates, "
          f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
