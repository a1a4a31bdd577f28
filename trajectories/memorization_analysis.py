"""Training order and memorization: pure functions of the per-row results table (schema.MEMORIZATION_COLUMNS).

Are rows seen later in training more likely to be memorized? Every function works per (model, checkpoint step) and
uses only rows the checkpoint had been trained on (seen_at_step < step): a row's memorization is only defined once
it has been seen, and EleutherAI score only those. A row's training position at checkpoint C is
(seen_at_step + 0.5) / C, in (0, 1): the middle of its step's share of the run so far.

- `rate_by_position`: memorization rate in bins of training position, with Wilson 95% intervals.
- `recency`: slope of memorization (linear probability) on position with a bootstrap CI and a permutation p-value,
  and the rate in the last 10% of training minus the rate before it (Newcombe interval).
- `poisson_dispersion`, `poisson_qq`: are memorized rows spread over training like a Poisson process (Biderman et al.
  2023)? Counts in bins of consecutive rows: index-of-dispersion test, and Q-Q points against the Poisson.
- `persistence`: of rows memorized at one checkpoint, the share still memorized at each later one.
- `predictability`: precision and recall of an earlier checkpoint's, or another model's, memorization as a predictor
  of the target model's at its final checkpoint (Biderman et al. 2023, "Emergent and predictable memorization").
- `rate_by_repetitions`, `repetition_effect`: memorization against a row's repetition count (e.g. canaries).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from scipy import stats

from trajectories.errors import UserError
from trajectories.schema import MEMORIZATION_COLUMNS

Z95 = float(stats.norm.ppf(0.975))
N_BOOT, N_PERM = 1000, 1000
KEYS = ["model", "step"]


class MemorizationAnalysisError(UserError):
    """The results table cannot be analysed as asked; the message says why."""


def seen_rows(table: pd.DataFrame, needed=("model", "step", "row", "seen_at_step", "memorized")) -> pd.DataFrame:
    """The rows each checkpoint had been trained on, with their training position; checks the columns."""
    if table is None or table.empty:
        raise MemorizationAnalysisError("the memorization table is empty: nothing to analyse")
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise MemorizationAnalysisError(f"the memorization table lacks columns {', '.join(missing)} "
                                        f"(expected {', '.join(MEMORIZATION_COLUMNS)})")
    seen = table[table.seen_at_step < table.step].copy()
    if seen.empty:
        raise MemorizationAnalysisError("no row of the table had been seen by its checkpoint (seen_at_step < step)")
    seen["memorized"] = seen.memorized.astype(bool)
    seen["position"] = (seen.seen_at_step + 0.5) / seen.step
    return seen


def _rng(seed: int, model: str, step: int) -> np.random.Generator:
    # Seeded per checkpoint, so its intervals do not change when other models or checkpoints are added.
    return np.random.default_rng([seed, zlib.crc32(str(model).encode()), int(step)])


# ---------------------------------------------------------------------------------------------------- intervals
def wilson(k, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for k successes in n trials (NaN where n = 0); good down to rates near 0 and 1."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def newcombe(k1, n1, k2, n2, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's hybrid score interval for the difference of two independent proportions, k1/n1 - k2/n2."""
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN where a group is empty
        p1, p2 = np.asarray(k1, float) / n1, np.asarray(k2, float) / n2
    (l1, u1), (l2, u2) = wilson(k1, n1, z), wilson(k2, n2, z)
    d = p1 - p2
    return d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def _slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of y on the same row of x."""
    xc, yc = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(-1) / (xc * xc).sum(-1)


def slope_test(x, y, n_boot: int = N_BOOT, n_perm: int = N_PERM, rng: np.random.Generator | None = None,
               groups=None) -> dict:
    """Slope of y on x with a percentile bootstrap 95% CI and a two-sided permutation p-value.

    groups: resample within each group (a stratified design, e.g. a fixed number of rows per repetition count)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rng = rng or np.random.default_rng(0)
    slope = float(_slopes(x, y))
    out = {"slope": slope, "slope_ci_low": np.nan, "slope_ci_high": np.nan, "slope_p": np.nan}
    if not np.isfinite(slope):  # x constant: no slope to speak of
        return out
    members = [np.arange(len(x))] if groups is None else [np.flatnonzero(groups == g) for g in np.unique(groups)]
    chunk = max(1, 2_000_000 // len(x))  # replicates per pass, bounding the (replicates x rows) temporaries
    boot = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = np.concatenate([rng.choice(m, (b, len(m))) for m in members], axis=1)
        boot.append(_slopes(x[idx], y[idx]))
    boot = np.concatenate(boot) if boot else np.zeros(0)
    if n_boot and np.isfinite(boot).any():
        out["slope_ci_low"], out["slope_ci_high"] = np.nanpercentile(boot, [2.5, 97.5])
    xc, sxx, hits = x - x.mean(), ((x - x.mean()) ** 2).sum(), 0
    for start in range(0, n_perm, chunk):
        b = min(chunk, n_perm - start)
        shuffled = rng.permuted(np.broadcast_to(y, (b, len(y))), axis=1)
        hits += int((np.abs(shuffled @ xc / sxx) >= abs(slope) * (1 - 1e-9)).sum())
    if n_perm:
        out["slope_p"] = (1 + hits) / (1 + n_perm)
    return out


# ---------------------------------------------------------------------------------------------------- training order
def rate_by_position(table: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Memorization rate per bin of training position, per (model, step): one line per non-empty bin, with
    the steps it spans (seen_lo <= seen_at_step < seen_hi) and a Wilson 95% interval."""
    if bins < 1:
        raise MemorizationAnalysisError(f"bins must be at least 1, not {bins}")
    seen = seen_rows(table)
    seen["bin"] = np.minimum((seen.position * bins).astype(int), bins - 1)
    out = seen.groupby([*KEYS, "bin"]).memorized.agg(n="size", memorized="sum").reset_index()
    out["seen_lo"], out["seen_hi"] = out.bin * out.step / bins, (out.bin + 1) * out.step / bins
    out["rate"] = out.memorized / out.n
    out["ci_low"], out["ci_high"] = wilson(out.memorized, out.n)
    return out[[*KEYS, "bin", "seen_lo", "seen_hi", "n", "memorized", "rate", "ci_low", "ci_high"]]


def recency(table: pd.DataFrame, late: float = 0.1, n_boot: int = N_BOOT, n_perm: int = N_PERM,
            seed: int = 0) -> pd.DataFrame:
    """The recency hypothesis, per (model, step): are rows seen later in training memorized more?

    slope: change in memorization rate from the start (position 0) to the end (1) of training so far, by least
    squares on 0/1 memorization (a linear probability model), with a bootstrap 95% CI over rows and a two-sided
    permutation p-value. late_minus_early: rate among rows in the last `late` share of training minus the rate before
    it, with Newcombe's 95% interval."""
    if not 0 < late < 1:
        raise MemorizationAnalysisError(f"late must be a fraction of training in (0, 1), not {late}")
    rows = []
    for (model, step), g in seen_rows(table).groupby(KEYS):
        x, y = g.position.to_numpy(), g.memorized.to_numpy(float)
        is_late = x >= 1 - late
        k1, n1, k0, n0 = y[is_late].sum(), is_late.sum(), y[~is_late].sum(), (~is_late).sum()
        lo, hi = newcombe(k1, n1, k0, n0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = {"late_rate": k1 / n1, "early_rate": k0 / n0}
        rows.append({"model": model, "step": step, "n": len(g), "memorized": int(y.sum()), "rate": y.mean()}
                    | slope_test(x, y, n_boot, n_perm, _rng(seed, model, step))
                    | {"late_n": int(n1), "early_n": int(n0)} | rates
                    | {"late_minus_early": rates["late_rate"] - rates["early_rate"], "diff_ci_low": lo,
                       "diff_ci_high": hi})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------- Poisson check
def _bin_counts(g: pd.DataFrame, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Memorized counts and row counts in n_bins runs of consecutive rows (equal numbers of scored rows)."""
    if n_bins < 2:
        raise MemorizationAnalysisError(f"n_bins must be at least 2 to compare counts between bins, not {n_bins}")
    if n_bins > len(g):
        raise MemorizationAnalysisError(f"{n_bins} bins for {len(g)} rows of {g.model.iloc[0]} step "
                                        f"{g.step.iloc[0]}: use at most as many bins as rows")
    parts = np.array_split(g.sort_values("row").memorized.to_numpy(float), n_bins)
    return np.array([p.sum() for p in parts]), np.array([len(p) for p in parts], float)


def poisson_dispersion(table: pd.DataFrame, n_bins: int = 50) -> pd.DataFrame:
    """Index-of-dispersion test of memorized counts in n_bins runs of consecutive rows, per (model, step).

    Under a Poisson process (memorization independent of where in training a row sits) the statistic
    sum((count - expected)^2 / expected) is chi-squared with n_bins - 1 degrees of freedom; p is its upper tail,
    small when memorized rows cluster in parts of training (over-dispersion). dispersion = variance / mean of the
    counts (1 for Poisson)."""
    rows = []
    for (model, step), g in seen_rows(table).groupby(KEYS):
        counts, sizes = _bin_counts(g, n_bins)
        expected = sizes * counts.sum() / sizes.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            statistic = float(((counts - expected) ** 2 / expected).sum()) if counts.sum() else np.nan
            dispersion = counts.var(ddof=1) / counts.mean()
        rows.append({"model": model, "step": step, "n_bins": n_bins, "rows_per_bin": sizes.mean(),
                     "memorized": int(counts.sum()), "mean": counts.mean(), "variance": counts.var(ddof=1),
                     "dispersion": dispersion, "statistic": statistic, "df": n_bins - 1,
                     "p": float(stats.chi2.sf(statistic, n_bins - 1)) if np.isfinite(statistic) else np.nan})
    return pd.DataFrame(rows)


def poisson_qq(table: pd.DataFrame, n_bins: int = 50) -> pd.DataFrame:
    """Q-Q points of the binned memorized counts against a Poisson of the same mean, per (model, step): the sorted
    observed counts against the Poisson quantiles at plotting positions (i - 0.5) / n_bins."""
    frames = []
    for (model, step), g in seen_rows(table).groupby(KEYS):
        counts, _ = _bin_counts(g, n_bins)
        q = (np.arange(n_bins) + 0.5) / n_bins
        frames.append(pd.DataFrame({"model": model, "step": step, "quantile": q,
                                    "poisson": stats.poisson.ppf(q, counts.mean()), "observed": np.sort(counts)}))
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------------ across checkpoints
def persistence(table: pd.DataFrame) -> pd.DataFrame:
    """Forgetting: of the rows memorized at from_step (and scored at to_step), the share still memorized at each
    later checkpoint to_step of the same model, with a Wilson 95% interval."""
    frames = []
    for model, g in seen_rows(table).groupby("model"):
        # rows x steps: 1 memorized, 0 not, NaN not scored there (or not yet seen)
        matrix = g.pivot_table(index="row", columns="step", values="memorized", aggfunc="max").astype(float)
        values, steps = matrix.to_numpy(), matrix.columns.to_numpy()
        memorized, scored = (values == 1).astype(float), (~np.isnan(values)).astype(float)
        n, still = memorized.T @ scored, memorized.T @ memorized  # [c, later]: counts over rows
        first, later = np.triu_indices(len(steps), k=1)
        frames.append(pd.DataFrame({"model": model, "from_step": steps[first], "to_step": steps[later],
                                    "n": n[first, later].astype(int), "still": still[first, later].astype(int)}))
    out = pd.concat(frames, ignore_index=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["share"] = out.still / out.n
    out["ci_low"], out["ci_high"] = wilson(out.still, out.n)
    return out


def predictability(table: pd.DataFrame, target_model: str, target_step: int | None = None,
                   predictors: list[tuple[str, int]] | None = None) -> pd.DataFrame:
    """How well does memorization by a predictor checkpoint predict memorization by the target?

    target: target_model at target_step (default its last checkpoint). predictors: (model, step) pairs; by default
    every earlier checkpoint of the target model ("earlier checkpoint") and the last checkpoint of every other model
    ("other model"; keep the smaller ones for Biderman et al.'s small-predicts-large question). Over the rows both
    have seen: precision = P(target memorized | predictor memorized), recall = P(predictor memorized | target
    memorized), each with a Wilson 95% interval."""
    seen = seen_rows(table)
    if target_model not in set(seen.model):
        raise MemorizationAnalysisError(f"model {target_model!r} is not in the table; it has "
                                        f"{', '.join(sorted(map(str, seen.model.unique())))}")
    steps = seen.groupby("model").step.unique().map(sorted)
    target_step = steps[target_model][-1] if target_step is None else target_step
    if target_step not in steps[target_model]:
        raise MemorizationAnalysisError(f"{target_model} has no step {target_step}; it has "
                                        f"{', '.join(map(str, steps[target_model]))}")
    if predictors is None:
        predictors = [(target_model, s) for s in steps[target_model] if s < target_step]
        predictors += [(m, s[-1]) for m, s in steps.items() if m != target_model]
    by_checkpoint = {key: g.set_index("row").memorized for key, g in seen.groupby(KEYS)}
    target = by_checkpoint[(target_model, target_step)]
    rows = []
    for model, step in predictors:
        if (model, step) not in by_checkpoint:
            raise MemorizationAnalysisError(f"predictor {model} step {step} is not in the table")
        both = pd.concat([by_checkpoint[(model, step)], target], axis=1, join="inner").to_numpy(bool)
        predicted, actual = both[:, 0], both[:, 1]
        tp = int((predicted & actual).sum())
        rows.append({"model": model, "step": step,
                     "kind": "earlier checkpoint" if model == target_model else "other model",
                     "target_model": target_model, "target_step": target_step, "n": len(both),
                     "predicted": int(predicted.sum()), "target_memorized": int(actual.sum()), "true_positives": tp})
    out = pd.DataFrame(rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["precision"] = out.true_positives / out.predicted
        out["recall"] = out.true_positives / out.target_memorized
    out["precision_ci_low"], out["precision_ci_high"] = wilson(out.true_positives, out.predicted)
    out["recall_ci_low"], out["recall_ci_high"] = wilson(out.true_positives, out.target_memorized)
    return out


# ---------------------------------------------------------------------------------------------------- repetition
def _with_meta(table: pd.DataFrame, meta: pd.DataFrame, column: str) -> pd.DataFrame:
    if "row" not in meta.columns or column not in meta.columns:
        raise MemorizationAnalysisError(f"the row metadata needs columns 'row' and {column!r}; it has "
                                        f"{', '.join(map(str, meta.columns))}")
    if meta.row.duplicated().any():
        raise MemorizationAnalysisError(f"the row metadata lists row {meta.row[meta.row.duplicated()].iloc[0]} twice")
    # The metadata's column wins over one of the same name in the table (its canaries' repetitions).
    merged = seen_rows(table).drop(columns=column, errors="ignore").merge(meta[["row", column]], on="row", how="inner")
    if merged.empty:
        raise MemorizationAnalysisError(f"no scored row has a {column!r} in the row metadata")
    return merged


def rate_by_repetitions(table: pd.DataFrame, meta: pd.DataFrame, column: str = "repetitions") -> pd.DataFrame:
    """Memorization rate per value of a row attribute (e.g. a canary's repetition count), per (model, step), with a
    Wilson 95% interval. Rows without metadata are left out."""
    merged = _with_meta(table, meta, column)
    out = merged.groupby([*KEYS, column]).memorized.agg(n="size", memorized="sum").reset_index()
    out["rate"] = out.memorized / out.n
    out["ci_low"], out["ci_high"] = wilson(out.memorized, out.n)
    return out


def repetition_effect(table: pd.DataFrame, meta: pd.DataFrame, column: str = "repetitions", n_boot: int = N_BOOT,
                      n_perm: int = N_PERM, seed: int = 0) -> pd.DataFrame:
    """Effect of repetition on memorization, per (model, step).

    slope: change in memorization rate per doubling of the repetition count (least squares on log2 of it), with a
    bootstrap 95% CI resampling rows within each count and a permutation p-value; most_minus_least: rate at the
    largest count minus the rate at the smallest, with Newcombe's 95% interval."""
    merged = _with_meta(table, meta, column)
    if (merged[column] <= 0).any():
        raise MemorizationAnalysisError(f"{column} must be positive counts to take log2, found {merged[column].min()}")
    rows = []
    for (model, step), g in merged.groupby(KEYS):
        counts, y = g[column].to_numpy(float), g.memorized.to_numpy(float)
        least, most = counts.min(), counts.max()
        k1, n1 = y[counts == most].sum(), (counts == most).sum()
        k0, n0 = y[counts == least].sum(), (counts == least).sum()
        lo, hi = newcombe(k1, n1, k0, n0)
        rows.append({"model": model, "step": step, "n": len(g), "least": least, "most": most}
                    | slope_test(np.log2(counts), y, n_boot, n_perm, _rng(seed, model, step), groups=counts)
                    | {"least_rate": k0 / n0, "most_rate": k1 / n1, "most_minus_least": k1 / n1 - k0 / n0,
                       "diff_ci_low": lo, "diff_ci_high": hi})
    return pd.DataFrame(rows)
