"""The literature's analyses wired through `analyze`, on synthetic sweeps whose truth is planted: seeds, item-level
agreement, stages, matched-loss alignment, n-gram summaries, and the "acquired" test's false-positive rate."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from tests.helpers import SYNTHETIC_STEPS as STEPS
from tests.helpers import answers, logistic_acc, planted_tables, quick_replicates, record, synthetic_sweep
from tests.helpers import synthetic_tables as tables
from trajectories import analysis
from trajectories.curves import curves_from_units, with_phenomena
from trajectories.schema import ModelInfo, TaskResult


def seeded(units, name: str, size: str, seed: int | None):
    """Synthetic units renamed to a model of `size` with `seed`."""
    return [(replace(c, model=ModelInfo(f"{name}", size, 70_000_000, seed=seed, tokens_per_step=1000)),
             replace(r, items=r.items.assign(model=name))) for c, r in units]


@pytest.fixture(scope="module")
def seeds_sweep():
    units = []
    for i, (name, seed) in enumerate((("70m", None), ("70m-seed1", 1), ("70m-seed2", 2))):
        units += seeded(synthetic_sweep(models=["70m"], n_items=150, seed=10 + i), name, "70m", seed)
    units += synthetic_sweep(models=["160m"], n_items=150, seed=20)
    curves, items = tables(units, n_boot=50)
    return curves, items, analysis.analyze(curves, lambda m: items[items.model == m], n_boot=50,
                                           onset_methods=("isotonic",))


def test_seed_groups_spreads_and_the_ceiling_of_agreement(seeds_sweep):
    curves, _, tables_ = seeds_sweep
    assert analysis.seed_groups(curves) == {"70m": ["70m", "70m-seed1", "70m-seed2"]}
    assert curves[curves.model == "70m-seed2"].seed.eq(2).all() and curves[curves.model == "70m"].seed.isna().all()
    spread = tables_["seed_spread"].set_index("task")
    assert set(spread.group) == {"70m"} and (spread.n_seeds == 3).all()
    # Same true curves, only sampling noise between seeds: their acquisition steps lie within a few checkpoints.
    assert (spread.loc[spread.level == "phenomenon", "spread_decades"] < 0.4).all()
    ceiling = tables_["agreement_ceiling"].set_index(["level", "pair_kind"])
    assert ceiling.loc[("phenomenon", "seeds of one size"), "n_pairs"] == 3
    assert ceiling.loc[("phenomenon", "different sizes"), "n_pairs"] == 3
    fleiss = tables_["fleiss"]
    assert set(fleiss.group) == {"70m"} and (fleiss.n_models == 3).all()


def test_identical_answers_agree_perfectly_and_independent_ones_near_zero():
    p = logistic_acc(STEPS, 300, top=0.8)
    shared = {}

    def answers_of(model, task, p, rng):
        key = (task, model == "twin")
        if model in ("a", "twin"):
            key = (task, "shared")
        if key not in shared:
            shared[key] = answers(p, 400, rng)
        return shared[key]

    planted = {m: {"t": ("agr", p)} for m in ("a", "twin", "other")}
    curves, items = planted_tables(planted, answers_of=answers_of)
    tables_ = analysis.analyze(curves, lambda m: items[items.model == m], n_boot=30, onset_methods=("isotonic",))
    kappa = tables_["kappa_matched"].set_index(["model_a", "model_b"]).kappa
    assert kappa[("a", "twin")] == pytest.approx(1.0)
    assert abs(kappa[("a", "other")]) < 0.15 and abs(kappa[("other", "twin")]) < 0.15


def test_a_planted_dip_below_chance_is_a_stage_and_flat_noise_has_none():
    steps = np.array(STEPS)
    dip = np.where((steps >= 64) & (steps <= 512), 0.3, logistic_acc(steps, 2000))
    curves, items = planted_tables({"m": {"dip": ("agr", dip), "flat": ("flat", np.full(len(steps), 0.5))}},
                                   n_items=400)
    found = analysis.analyze(curves, lambda m: items, n_boot=200, onset_methods=("isotonic",))["stages"]
    below = found[(found.kind == "below_chance") & (found.task == "dip")]
    assert len(below) == 1 and below.start_step.iloc[0] == 64 and below.end_step.iloc[0] == 512
    assert below.depth_low.iloc[0] > 0.1
    drop = found[(found.kind == "drop") & (found.task == "dip")]
    assert len(drop) == 1 and drop.end_step.iloc[0] in range(64, 513)
    assert not found.task.isin(["flat", "phenomenon:flat"]).any()


def loss_suite(speeds: dict[str, float]) -> pd.DataFrame:
    """Curve tables of models that differ only in speed: accuracies follow the held-out loss, which falls `speed`x
    faster in steps; the loss is a perplexity task's metric rows, as a sweep stores them."""
    records = []
    midpoints = {"u1": 5.5, "u2": 4.5, "u3": 3.5, "u4": 3.0}
    for name, speed in speeds.items():
        for step in STEPS:
            loss = 2.5 + 6 / (1 + step * speed / 500) ** 0.5
            tasks = {u: TaskResult(float(0.5 + 0.45 / (1 + np.exp((loss - mid) / 0.3))), 0.005, 2000, u)
                     for u, mid in midpoints.items()}
            tasks["held"] = TaskResult(np.nan, np.nan, 50, "", {"bits_per_byte,none": loss, "word_perplexity,none":
                                                               2**loss})
            records.append(record(ModelInfo(name, name), int(step), tasks))
    return with_phenomena(curves_from_units(records), n_boot=50)


def test_models_differing_only_in_speed_agree_at_matched_loss_through_analyze():
    curves = loss_suite({"fast": 1.0, "slow": 0.2})
    loss = analysis.loss_table(curves)
    assert set(analysis.loss_tasks(curves)) == {"held"} and len(loss) == 2 * len(STEPS)
    tables_ = analysis.analyze(curves, lambda m: None, n_boot=50, loss=loss, onset_methods=("isotonic",))
    agree = tables_["acquisition_loss_agreement"].set_index("level")
    assert agree.loc["paradigm", "kendall_tau"] == pytest.approx(1.0)
    acq = tables_["acquisition_loss"]
    by_model = acq[acq.level == "paradigm"].pivot(index="task", columns="model", values="acq_loss")
    steps = acq[acq.level == "paradigm"].pivot(index="task", columns="model", values="acq_step")
    assert (steps.slow > 2 * steps.fast).all()  # later in steps ...
    # ... at the same loss, up to the loss between two checkpoints (the isotonic onset is a checkpoint)
    np.testing.assert_allclose(by_model.slow, by_model.fast, atol=0.5)
    assert abs(agree.loc["paradigm", "median_loss_diff"]) < 0.3
    matched = tables_["loss_matched"]
    assert matched[matched.level == "paradigm"].kendall_tau.dropna().min() == pytest.approx(1.0)


def test_loss_table_errors_name_the_choices():
    curves = loss_suite({"fast": 1.0})
    with pytest.raises(analysis.AnalysisError, match="no perplexity task 'wiki'.*held"):
        analysis.loss_table(curves, "wiki")
    with pytest.raises(analysis.AnalysisError, match="no perplexity task in the curve table"):
        analysis.loss_table(curves[curves.level != "metric"])


def test_ngram_phenomena_say_which_an_ngram_solves(seeds_sweep):
    _, _, tables_ = seeds_sweep
    ngram = pd.DataFrame({"order": [2, 3, 2, 3], "task": ["agreement_0", "agreement_0", "islands_0", "islands_0"],
                          "phenomenon": ["agreement", "agreement", "islands", "islands"], "n": 100,
                          "acc": [0.95, 0.92, 0.55, 0.61], "acc_stderr": 0.02})
    table = analysis.ngram_phenomena(ngram, tables_["acquisition"]).set_index("phenomenon")
    assert table.loc["agreement", "solved_by_ngram"] and table.loc["agreement", "best_order"] == 2
    assert not table.loc["islands", "solved_by_ngram"] and table.loc["islands", "ngram_acc"] == 0.61
    assert table.loc["agreement", "model_final_acc"] > 0.8


def test_flat_curves_are_called_acquired_at_about_the_stated_rate():
    """A flat curve is "acquired" at the one-sided 2.5% level; the isotonic fit's final value, the old test,
    is biased upward on such curves."""
    rng = np.random.default_rng(0)
    called = []
    for _ in range(300):
        correct = answers(np.full(len(STEPS), 0.5), 300, rng)
        rep = quick_replicates(STEPS, correct, 200, rng)
        called.append(analysis.above_chance(rep.acc, rep.reps)[2])
    assert np.mean(called) <= 0.05
    rising = answers(logistic_acc(STEPS, 2000, top=0.6), 300, rng)
    rep = quick_replicates(STEPS, rising, 200, rng)
    assert analysis.above_chance(rep.acc, rep.reps)[2]
