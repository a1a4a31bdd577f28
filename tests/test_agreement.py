"""Cohen's and Fleiss' kappa on per-item correctness: known values, identical and independent answer patterns,
and matching checkpoints by accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import SYNTHETIC_STEPS, answers, logistic_acc
from tests.helpers import planted_tables as tables
from trajectories import agreement

LOG_STEPS = np.array(SYNTHETIC_STEPS)


def test_cohen_kappa_known_table():
    # 2x2 table: both right 20, a only 5, b only 10, both wrong 15 -> p_o 0.7, p_e 0.5, kappa 0.4.
    a = np.r_[np.ones(25), np.zeros(25)]
    b = np.r_[np.ones(20), np.zeros(5), np.ones(10), np.zeros(15)]
    assert agreement.cohen_kappa(a, b) == pytest.approx(0.4)
    assert agreement.cohen_kappa(np.r_[a, np.nan], np.r_[b, 1]) == pytest.approx(0.4)  # unanswered items skipped


def test_fleiss_kappa_known_value_and_two_raters():
    # Items rated right by 3, 0, 2 and 1 of 3 raters: P-bar 2/3, p 0.5, P_e 0.5 -> kappa 1/3.
    ratings = np.array([[1, 0, 1, 1], [1, 0, 1, 0], [1, 0, 0, 0]])
    assert agreement.fleiss_kappa(ratings) == pytest.approx(1 / 3)
    # With two raters of equal marginals Fleiss' kappa is Scott's pi, which equals Cohen's kappa.
    a = np.r_[np.ones(30), np.zeros(20), np.ones(10), np.zeros(40)]
    b = np.r_[np.ones(30), np.ones(10), np.zeros(20), np.zeros(40)]
    assert agreement.fleiss_kappa(np.stack([a, b])) == pytest.approx(agreement.cohen_kappa(a, b))


def test_identical_patterns_agree_fully_and_independent_ones_by_chance_only():
    rng = np.random.default_rng(0)
    a = (rng.random(5000) < 0.7).astype(float)
    b = (rng.random(5000) < 0.7).astype(float)
    assert agreement.cohen_kappa(a, a) == pytest.approx(1)
    assert abs(agreement.cohen_kappa(a, b)) < 0.05
    raters = (rng.random((6, 5000)) < 0.7).astype(float)
    assert abs(agreement.fleiss_kappa(raters)) < 0.05
    assert agreement.fleiss_kappa(np.stack([a] * 4)) == pytest.approx(1)
    assert np.isnan(agreement.cohen_kappa(np.ones(10), np.ones(10)))  # chance agreement is 1: undefined


@pytest.fixture(scope="module")
def suite():
    """Seeds s0, s1 share their answers item by item (s1 copies s0); s2 answers independently; slow is s0 with
    every checkpoint's answers appearing one checkpoint later (a slower learner of the same items)."""
    steps = LOG_STEPS
    p = logistic_acc(steps, 300)
    base = {}

    def answers_of(model, task, p, rng):
        if model in ("s0", "s2"):
            base[(model, task)] = answers(p, 400, rng)
            return base[(model, task)]
        if model == "s1":
            return base[("s0", task)]
        return np.vstack([base[("s0", task)][:1], base[("s0", task)][:-1]])  # "slow": one checkpoint behind

    planted = {m: {f"agr_{k}": ("agreement", p) for k in range(2)} for m in ("s0", "s1", "s2", "slow")}
    return tables(planted, steps=steps, n_boot=20, answers_of=answers_of)


def test_kappa_by_step_per_phenomenon(suite):
    curves, items = suite
    units = agreement.task_units(curves)
    table = agreement.kappa_by_step(items, units)
    assert tuple(table.columns) == agreement.KAPPA_COLUMNS
    assert set(table.unit) == {"phenomenon:agreement"} and (table.n_items == 800).all()
    last = table[table.step == LOG_STEPS[-1]].set_index(["model_a", "model_b"]).kappa
    assert last[("s0", "s1")] == pytest.approx(1)
    assert abs(last[("s0", "s2")]) < 0.15
    matrix = agreement.kappa_matrix(table, "phenomenon:agreement")
    assert matrix.loc["s1", "s0"] == matrix.loc["s0", "s1"] == pytest.approx(1) and matrix.loc["s2", "s2"] == 1
    assert len(agreement.kappa_by_step(items)) == 2 * len(table)  # per paradigm: two units


def test_matched_accuracy_lines_up_a_slower_copy(suite):
    curves, items = suite
    units = agreement.task_units(curves)
    by_step = agreement.kappa_by_step(items, units, models=["s0", "slow"])
    rising = by_step[(by_step.step >= 128) & (by_step.step <= 1000)]
    assert (rising.kappa < 0.9).all()  # at the same step the slow model lags behind
    matched = agreement.kappa_at_matched_accuracy(items, units, models=["s0", "slow"]).iloc[0]
    index = {s: i for i, s in enumerate(LOG_STEPS)}
    assert index[matched.step_b] == index[matched.step_a] + 1 and matched.kappa == pytest.approx(1)
    assert matched.acc_a == matched.acc_b >= 0.6


def test_fleiss_across_seed_groups(suite):
    curves, items = suite
    groups = agreement.seed_groups(["pythia-70m", "pythia-70m-seed1", "pythia-70m-seed2", "pythia-160m"])
    assert groups == {"pythia-70m": ["pythia-70m", "pythia-70m-seed1", "pythia-70m-seed2"]}
    table = agreement.fleiss_by_step(items, {"copies": ["s0", "s1"], "independent": ["s0", "s2"]},
                                     agreement.task_units(curves))
    assert tuple(table.columns) == agreement.FLEISS_COLUMNS
    final = table[table.step == LOG_STEPS[-1]].set_index("group").kappa
    assert final["copies"] == pytest.approx(1) and abs(final["independent"]) < 0.15
