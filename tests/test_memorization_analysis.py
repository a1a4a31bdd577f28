"""The memorization analyses on synthetic tables of known truth: planted effects are found, pure noise gives false
positives at about the stated rate, and counts on hand-made tables are the hand-computed ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from trajectories import memorization_analysis as ma
from trajectories.memorization_analysis import MemorizationAnalysisError
from trajectories.schema import MEMORIZATION_COLUMNS

BATCH = 1_000_000  # rows per step, more than any table here has, so that row numbers are unique


def table(memorized, seen_at_step, step: int, model: str = "m", rows=None) -> pd.DataFrame:
    memorized, seen_at_step = np.asarray(memorized, bool), np.asarray(seen_at_step)
    rows = seen_at_step * BATCH + np.arange(len(seen_at_step)) if rows is None else np.asarray(rows)
    n = len(memorized)
    return pd.DataFrame({"model": model, "step": step, "row": rows, "seen_at_step": seen_at_step, "canary": False,
                         "repetitions": pd.NA, "memorized": memorized, "match_fraction": np.where(memorized, 1.0, 0.5),
                         "logp": np.where(memorized, -1.0, -50.0), "tf_match_fraction": np.full(n, 0.5)})


def simulated(rate_at, n: int, step: int = 1000, seed: int = 0, model: str = "m") -> pd.DataFrame:
    """Rows seen uniformly over training, memorized with probability rate_at(training position)."""
    rng = np.random.default_rng(seed)
    seen = rng.integers(0, step, n)
    return table(rng.random(n) < rate_at((seen + 0.5) / step), seen, step, model)


def test_wilson_and_newcombe_match_published_values():
    lo, hi = ma.wilson([5, 0], [10, 10])
    assert np.allclose(lo, [0.2366, 0.0], atol=1e-4) and np.allclose(hi, [0.7634, 0.2775], atol=1e-4)
    # Newcombe (1998), method 10, example 56/70 - 48/80
    assert np.allclose(ma.newcombe(56, 70, 48, 80), (0.0524, 0.3339), atol=1e-4)


def test_rate_by_position_counts(tmp_path):
    memorized = [1, 0, 0, 0, 1, 1, 1, 0, 1, 1]
    out = ma.rate_by_position(table(memorized, range(10), step=10), bins=2)
    assert list(out.bin) == [0, 1] and list(out.n) == [5, 5] and list(out.memorized) == [2, 4]
    assert list(out.seen_lo) == [0, 5] and list(out.seen_hi) == [5, 10]
    assert np.allclose(out.rate, [0.4, 0.8])
    assert np.allclose([out.ci_low[1], out.ci_high[1]], np.ravel(ma.wilson(4, 5)))
    # Rows the checkpoint had not seen yet (seen_at_step >= step) are left out.
    later = pd.concat([table(memorized, range(10), step=10), table([1, 1], [10, 12], step=10)])
    assert ma.rate_by_position(later, bins=2).equals(out)


def test_recency_finds_a_planted_trend():
    later_more = simulated(lambda x: 0.02 + 0.08 * x, n=5000, seed=1)
    earlier_more = simulated(lambda x: 0.10 - 0.08 * x, n=5000, seed=2, model="primacy")
    out = ma.recency(pd.concat([later_more, earlier_more]), n_boot=500, n_perm=500).set_index("model")
    up, down = out.loc["m"], out.loc["primacy"]
    assert up.slope_p < 0.01 and 0 < up.slope_ci_low < 0.08 < up.slope_ci_high
    assert up.diff_ci_low > 0 and up.late_n + up.early_n == up.n == 5000
    assert down.slope_p < 0.01 and down.slope_ci_low < -0.08 < down.slope_ci_high < 0
    assert down.diff_ci_high < 0


def test_recency_false_positives_at_the_stated_rate():
    results = pd.concat([ma.recency(simulated(lambda x: np.full_like(x, 0.1), n=1000, seed=s), n_boot=200, n_perm=200)
                         for s in range(100)])
    assert (results.slope_p < 0.05).sum() <= 12
    assert ((results.slope_ci_low > 0) | (results.slope_ci_high < 0)).sum() <= 12
    assert ((results.diff_ci_low > 0) | (results.diff_ci_high < 0)).sum() <= 12
    assert 0.4 < results.slope_p.mean() < 0.6  # roughly uniform p-values, not a test that never rejects


def test_poisson_dispersion_by_hand():
    memorized = np.zeros(40, bool)
    memorized[[10, 11, 20, 21, 22, 23, 30, 31]] = True  # counts per 10 rows: 0, 2, 4, 2
    out = ma.poisson_dispersion(table(memorized, np.arange(40) // 4, step=100), n_bins=4).iloc[0]
    assert (out.memorized, out["mean"], out.df) == (8, 2.0, 3)
    assert np.isclose(out.statistic, 4.0) and np.isclose(out.dispersion, 4 / 3)
    assert np.isclose(out.p, stats.chi2.sf(4.0, 3))
    qq = ma.poisson_qq(table(memorized, np.arange(40) // 4, step=100), n_bins=4)
    assert list(qq.observed) == [0, 2, 2, 4]
    assert list(qq.poisson) == list(stats.poisson.ppf([.125, .375, .625, .875], 2))


def test_poisson_data_passes_and_clustered_data_fails():
    rng = np.random.default_rng(0)
    n, step = 20_000, 1000
    seen = np.sort(rng.integers(0, step, n))
    poisson = [table(rng.random(n) < 0.02, seen, step, model=f"p{i}") for i in range(40)]
    bursts = np.repeat(rng.gamma(0.5, 0.04, 50), n // 50)  # the rate jumps from one stretch of training to the next
    clustered = table(rng.random(n) < bursts, seen, step, model="clustered")
    out = ma.poisson_dispersion(pd.concat([*poisson, clustered]), n_bins=50).set_index("model")
    assert (out.drop("clustered").p < 0.05).sum() <= 5
    assert 0.8 < out.drop("clustered").dispersion.mean() < 1.2
    assert out.loc["clustered"].p < 1e-6 and out.loc["clustered"].dispersion > 3
    qq = ma.poisson_qq(pd.concat([poisson[0], clustered]), n_bins=50)
    fit = qq[qq.model == "p0"]
    assert len(fit) == 50 and np.corrcoef(fit.poisson, fit.observed)[0, 1] > 0.95
    assert np.abs(fit.poisson - fit.observed).mean() < 1.5
    assert qq[qq.model == "clustered"].observed.max() > 3 * qq[qq.model == "clustered"].poisson.max()


def test_persistence_by_hand():
    steps = {10: [0, 1, 2, 3, 6], 20: [0, 1, 4, 6, 7], 30: [0, 2, 4, 5]}  # memorized rows at each checkpoint
    parts = []
    for step, memorized in steps.items():
        rows = np.arange(8) if step != 30 else np.array([0, 1, 2, 3, 4, 5, 7])  # row 6 not scored at step 30
        seen = np.where(rows == 7, 15, 0)  # row 7 is trained on at step 15: unseen (and ignored) at step 10
        parts.append(table(np.isin(rows, memorized) | (rows == 7) & (step == 10), seen, step, rows=rows))
    out = ma.persistence(pd.concat(parts)).set_index(["from_step", "to_step"])
    assert out.loc[(10, 20)][["n", "still"]].tolist() == [5, 3]  # 0, 1, 2, 3, 6 -> 0, 1, 6
    assert out.loc[(10, 30)][["n", "still"]].tolist() == [4, 2]  # 6 not scored at 30; 0, 2 remain
    assert out.loc[(20, 30)][["n", "still"]].tolist() == [4, 2]  # 0, 1, 4, 7 (6 unscored at 30) -> 0, 4
    assert np.isclose(out.loc[(10, 20)].share, 0.6)


def test_predictability_by_hand():
    rows = np.arange(11)
    seen = np.where(rows == 10, 60, 0)  # row 10 is trained on at step 60: not seen by the step-50 checkpoint
    memorized = {("big", 100): [0, 1, 2, 3, 10], ("big", 50): [0, 1, 5, 10], ("small", 100): [0, 2, 3, 6, 7, 10]}
    t = pd.concat([table(np.isin(rows, m), seen, step, model, rows=rows) for (model, step), m in memorized.items()])
    out = ma.predictability(t, "big").set_index(["model", "step"])
    assert list(out.kind) == ["earlier checkpoint", "other model"]
    earlier, small = out.loc[("big", 50)], out.loc[("small", 100)]
    assert (earlier.n, earlier.true_positives, earlier.predicted, earlier.target_memorized) == (10, 2, 3, 4)
    assert np.isclose(earlier.precision, 2 / 3) and np.isclose(earlier.recall, 2 / 4)
    assert (small.n, small.true_positives, small.predicted, small.target_memorized) == (11, 4, 6, 5)
    assert np.isclose(small.precision, 4 / 6) and np.isclose(small.recall, 4 / 5)
    assert np.isclose(small.recall_ci_low, ma.wilson(4, 5)[0])
    reverse = ma.predictability(t, "small", predictors=[("big", 100)]).iloc[0]
    assert np.isclose(reverse.precision, 4 / 5) and np.isclose(reverse.recall, 4 / 6)
    with pytest.raises(MemorizationAnalysisError, match="'huge' is not in the table; it has big, small"):
        ma.predictability(t, "huge")
    with pytest.raises(MemorizationAnalysisError, match="big has no step 70; it has 50, 100"):
        ma.predictability(t, "big", target_step=70)


def repetition_table(rates: dict[int, float], per_count: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    counts = np.repeat(list(rates), per_count)
    memorized = rng.random(len(counts)) < np.array([rates[c] for c in counts])
    t = table(memorized, np.zeros(len(counts), int), step=100)
    return t, pd.DataFrame({"row": t.row, "repetitions": counts})


def test_repetition_effect_found_and_rates_per_count():
    t, meta = repetition_table({1: 0.05, 2: 0.1, 4: 0.2, 8: 0.4}, per_count=500, seed=0)
    unrelated = table([True] * 5, np.arange(5), step=100, rows=10_000 + np.arange(5))  # rows without metadata
    by_count = ma.rate_by_repetitions(pd.concat([t, unrelated]), meta)
    expected = t.assign(repetitions=meta.repetitions).groupby("repetitions").memorized.mean()
    assert list(by_count.repetitions) == [1, 2, 4, 8] and (by_count.n == 500).all()
    assert np.allclose(by_count.rate, expected)
    effect = ma.repetition_effect(t, meta, n_boot=500, n_perm=500).iloc[0]
    assert effect.slope_p < 0.01 and effect.slope_ci_low > 0.05 and abs(effect.slope - 0.115) < 0.03
    assert effect.slope_ci_low < effect.slope < effect.slope_ci_high
    assert (effect.least, effect.most) == (1, 8) and effect.diff_ci_low > 0.25
    assert np.isclose(effect.most_minus_least, expected[8] - expected[1])


def test_repetition_effect_interval_covers_the_true_slope():
    # Rates 0.05, 0.1, 0.2, 0.4 at 1, 2, 4, 8 repetitions: +0.115 per doubling by least squares on log2.
    effects = pd.concat([ma.repetition_effect(*repetition_table({1: 0.05, 2: 0.1, 4: 0.2, 8: 0.4}, 200, seed),
                                              n_boot=200, n_perm=0) for seed in range(40)])
    assert ((effects.slope_ci_low < 0.115) & (0.115 < effects.slope_ci_high)).sum() >= 34


def test_repetition_effect_false_positives_at_the_stated_rate():
    effects = pd.concat([ma.repetition_effect(*repetition_table(dict.fromkeys([1, 2, 4, 8], 0.1), 100, seed),
                                              n_boot=200, n_perm=200) for seed in range(100)])
    assert ((effects.slope_ci_low > 0) | (effects.slope_ci_high < 0)).sum() <= 12
    assert (effects.slope_p < 0.05).sum() <= 12 and 0.4 < effects.slope_p.mean() < 0.6
    assert ((effects.diff_ci_low > 0) | (effects.diff_ci_high < 0)).sum() <= 12


def test_bad_tables_are_refused_clearly():
    good = table([True, False], [0, 1], step=10)
    with pytest.raises(MemorizationAnalysisError, match="lacks columns seen_at_step"):
        ma.recency(good.drop(columns="seen_at_step"))
    with pytest.raises(MemorizationAnalysisError, match="empty"):
        ma.persistence(good.iloc[:0])
    with pytest.raises(MemorizationAnalysisError, match="no row of the table had been seen"):
        ma.rate_by_position(table([True], [10], step=10))
    with pytest.raises(MemorizationAnalysisError, match="needs columns 'row' and 'repetitions'"):
        ma.rate_by_repetitions(good, pd.DataFrame({"row": [0]}))
    with pytest.raises(MemorizationAnalysisError, match="use at most as many bins as rows"):
        ma.poisson_dispersion(good, n_bins=3)
    assert set(good.columns) == set(MEMORIZATION_COLUMNS)
