"""Non-monotone stages: planted dips found, pure noise quiet at the stated familywise rate."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import SYNTHETIC_STEPS, answers, logistic_acc, quick_replicates, replicates
from tests.helpers import planted_tables as tables
from trajectories import stages
from trajectories.analysis import AnalysisError

LOG_STEPS = np.array(SYNTHETIC_STEPS)

STEPS = np.arange(30)


def u_shape(steps=STEPS, depth=0.25):
    """Chance, then a stretch well below chance (the nearest-noun heuristic), then learned."""
    i = np.arange(len(steps))
    return np.select([i < 8, i < 16], [0.5, 0.5 - depth], 0.9)


def test_a_planted_dip_below_chance_is_found_with_its_span_and_depth():
    rng = np.random.default_rng(0)
    rep = replicates(STEPS, answers(u_shape(), 200, rng), 200, rng)
    found = stages.find_stages(rep)
    below = [s for s in found if s.kind == "below_chance"]
    assert below, found
    first, last = min(s.start_step for s in below), max(s.end_step for s in below)
    assert 8 <= first <= 9 and 14 <= last <= 15
    deepest = max(below, key=lambda s: s.depth)
    assert deepest.depth_low <= 0.25 + 0.05 and deepest.depth_high >= 0.25 - 0.05 and deepest.depth > 0.2
    assert deepest.before == deepest.start_step - 1
    # The fall from chance into the dip is a drop, from before it to inside it.
    drops = [s for s in found if s.kind == "drop"]
    assert any(s.start_step < 8 <= s.end_step <= 15 and s.depth > 0.15 for s in drops)


def null_stage_rate(p, n_curves, n_items=100, n_boot=200, seed=1):
    rng = np.random.default_rng(seed)
    hits = {kind: 0 for kind in stages.KINDS}
    for _ in range(n_curves):
        found = stages.find_stages(quick_replicates(STEPS, answers(p, n_items, rng), n_boot, rng), alpha=0.05)
        for kind in hits:
            hits[kind] += any(s.kind == kind for s in found)
    return {kind: count / n_curves for kind, count in hits.items()}


@pytest.mark.parametrize("name", ["chance", "rising"])
def test_pure_noise_curves_show_stages_no_more_often_than_alpha(name):
    # Each kind gets alpha / 2 = 0.025. Over 300 null curves its count is binomial with sd ~ 2.7; the bound sits
    # 3 sd above 0.025 x 300 (7.5), while an uncorrected (per-checkpoint) test would flag most curves.
    p = np.full(len(STEPS), 0.5) if name == "chance" else logistic_acc(STEPS * 100, 300)
    rates = null_stage_rate(p, 300)
    assert rates["below_chance"] <= 16 / 300 and rates["drop"] <= 16 / 300, rates


def test_min_depth_drops_shallow_stages():
    rng = np.random.default_rng(2)
    rep = replicates(STEPS, answers(u_shape(depth=0.08), 3000, rng), 200, rng)
    assert any(s.kind == "below_chance" for s in stages.find_stages(rep))
    assert not stages.find_stages(rep, min_depth=0.15)


def test_stage_table_from_curves_and_items():
    steps = LOG_STEPS
    dip = np.where((steps >= 64) & (steps <= 1000), 0.25, logistic_acc(steps, 4000))
    planted = {"m": {"attractor_0": ("agreement", dip), "attractor_1": ("agreement", dip),
                     "plain_0": ("plain", logistic_acc(steps, 100))}}
    curves, items = tables(planted, steps=steps, n_items=300, n_boot=50)
    table = stages.stages(curves, items, n_boot=200)
    assert tuple(table.columns) == stages.STAGE_COLUMNS
    below = table[table.kind == "below_chance"]
    assert set(below.task) == {"attractor_0", "attractor_1", "phenomenon:agreement"}
    phen = below[below.task == "phenomenon:agreement"].iloc[0]
    assert (phen.start_step, phen.end_step) == (64, 1000) and (phen.before, phen.after) == (32, 2000)
    assert not len(table[table.phenomenon == "plain"])
    with pytest.raises(AnalysisError, match="unknown stage kind"):
        stages.stages(curves, items, kinds=("plateau",))
