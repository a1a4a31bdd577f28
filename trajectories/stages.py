"""Non-monotone stages of a learning curve: spans where a unit's accuracy is significantly below chance (e.g. the
U-shaped learning of agreement across attractors, which first follows the nearest noun), and significant drops
from an earlier checkpoint to a later one.

Both tests are simultaneous over the whole curve, so that a pure-noise curve shows no stage at all with
probability at least 1 - alpha (alpha is split equally between the kinds asked for). They use the bootstrap
replicates the package already computes: where the item table exists these resample the same items at every
checkpoint, so differences between checkpoints are paired; elsewhere they are normal draws from the stderr.

- "below_chance": checkpoint i is below chance when chance - acc_i exceeds the (1 - alpha) quantile over
  replicates of max_i (acc_i - replicate_i) (a simultaneous band: it holds the familywise error over checkpoints).
  A stage is a run of consecutive such checkpoints.
- "drop": a pair of checkpoints p < t has dropped when acc_p - acc_t exceeds the (1 - alpha) quantile over
  replicates of their largest centred paired difference over all pairs p < t. Stages are taken greedily, largest
  drop first, from the peak p to the trough t, skipping pairs that overlap a stage already taken.

The differences are not studentised: dividing by each checkpoint's own standard error (a Wald statistic) makes a
checkpoint that happens to fall low look more certain than it is, and in null simulations doubled the false
positives. Unstudentised, the band is set by the checkpoints nearest chance, which have the largest variance.

Real checkpoint-to-checkpoint jitter of a model is a real difference on a fixed test set, so with many items small
drops are significant too; `min_depth` keeps only stages at least that deep.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from trajectories.analysis import CHANCE, AnalysisError, unit_replicates
from trajectories.stats import N_BOOT, Replicates

KINDS = ("below_chance", "drop")

# Columns of `stages` (one row per stage):
#   model, size, params, deduped, level, task, phenomenon: as in the curve table;
#   kind: "below_chance" | "drop";
#   start_step, end_step: first and last checkpoint of the stage (drop: the peak and the trough);
#   before, after: the evaluated checkpoints just outside it (the stage began in (before, start_step] and ended in
#     [end_step, after)); NaN at the ends of the curve;
#   extreme_step: the deepest checkpoint (below_chance) or the trough (drop);
#   depth: chance - acc at extreme_step, or acc(peak) - acc(trough); depth_low, depth_high: its 95% bootstrap CI;
#   z: depth over its bootstrap standard error (for reading; the test is on depth); critical: the simultaneous
#   threshold depth exceeded (accuracy units); alpha: the familywise error rate of that kind's test.
STAGE_COLUMNS = (
    "model", "size", "params", "deduped", "level", "task", "phenomenon", "kind", "start_step", "end_step",
    "before", "after", "extreme_step", "depth", "depth_low", "depth_high", "z", "critical", "alpha",
)


@dataclass(frozen=True)
class Stage:
    """One non-monotone stage of one unit (fields as in STAGE_COLUMNS)."""

    kind: str
    start_step: int
    end_step: int
    before: float
    after: float
    extreme_step: int
    depth: float
    depth_low: float
    depth_high: float
    z: float
    critical: float
    alpha: float


def _z(diff: float, boot: np.ndarray) -> float:
    se = float(np.std(boot))
    return diff / se if se > 0 else np.inf


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True."""
    edges = np.diff(np.r_[0, flags.astype(int), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def _neighbours(steps: np.ndarray, first: int, last: int) -> tuple[float, float]:
    before = float(steps[first - 1]) if first > 0 else np.nan
    after = float(steps[last + 1]) if last + 1 < len(steps) else np.nan
    return before, after


def below_chance(rep: Replicates, alpha: float, chance: float = CHANCE, min_depth: float = 0.0) -> list[Stage]:
    steps, acc = np.asarray(rep.steps), np.asarray(rep.acc, float)
    reps = np.where(np.isnan(rep.reps), acc[:, None], rep.reps)
    critical = float(np.quantile((acc[:, None] - reps).max(axis=0), 1 - alpha))
    depth = chance - acc
    found = []
    for first, last in _runs((depth > critical) & (depth >= min_depth)):
        deepest = first + int(np.argmax(depth[first:last + 1]))
        low, high = np.quantile(chance - reps[deepest], [0.025, 0.975])
        found.append(Stage("below_chance", int(steps[first]), int(steps[last]), *_neighbours(steps, first, last),
                           int(steps[deepest]), float(depth[deepest]), float(low), float(high),
                           _z(depth[deepest], reps[deepest]), critical, alpha))
    return found


def drops(rep: Replicates, alpha: float, min_depth: float = 0.0) -> list[Stage]:
    steps, acc = np.asarray(rep.steps), np.asarray(rep.acc, float)
    reps = np.where(np.isnan(rep.reps), acc[:, None], rep.reps)
    dev = reps - acc[:, None]
    n = len(steps)
    # The largest centred drop p < t of each replicate, as a running maximum of dev[p] - dev[t] over t > p: the
    # smallest later deviation, scanned backwards, so no (checkpoints x checkpoints x replicates) array is made.
    null_max = np.full(reps.shape[1], -np.inf)
    later_min = np.full(reps.shape[1], np.inf)
    for p in range(n - 2, -1, -1):
        later_min = np.minimum(later_min, dev[p + 1])
        null_max = np.maximum(null_max, dev[p] - later_min)
    critical = float(np.quantile(null_max, 1 - alpha)) if n > 1 else np.inf
    drop = acc[:, None] - acc[None, :]
    starts, ends = np.indices(drop.shape)
    candidate = (ends > starts) & (drop > critical) & (drop >= min_depth)
    found = []
    while candidate.any():
        p, t = np.unravel_index(np.argmax(np.where(candidate, drop, -np.inf)), drop.shape)
        low, high = np.quantile(reps[p] - reps[t], [0.025, 0.975])
        found.append(Stage("drop", int(steps[p]), int(steps[t]), *_neighbours(steps, p, t), int(steps[t]),
                           float(drop[p, t]), float(low), float(high), _z(drop[p, t], reps[p] - reps[t]),
                           critical, alpha))
        # Pairs overlapping [p, t] describe the same stage.
        candidate &= (ends <= p) | (starts >= t)
    return sorted(found, key=lambda s: s.start_step)


def find_stages(rep: Replicates, alpha: float = 0.05, kinds: tuple[str, ...] = KINDS, chance: float = CHANCE,
                min_depth: float = 0.0) -> list[Stage]:
    """The stages of one unit's curve; the familywise error over all its checkpoints and kinds is at most alpha."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise AnalysisError(f"unknown stage kind(s) {', '.join(sorted(unknown))}; choose from {', '.join(KINDS)}")
    share = alpha / len(kinds)
    found = below_chance(rep, share, chance, min_depth) if "below_chance" in kinds else []
    return found + (drops(rep, share, min_depth) if "drop" in kinds else [])


def stages(curves: pd.DataFrame, items: pd.DataFrame | None = None, alpha: float = 0.05,
           kinds: tuple[str, ...] = KINDS, min_depth: float = 0.0, n_boot: int = N_BOOT,
           seed: int = 0) -> pd.DataFrame:
    """Every stage of every grammar unit of the curve table (STAGE_COLUMNS), from the same replicates as
    `analysis.acquisition` (paired item resampling where the item table has the unit's items)."""
    if not 0 < alpha < 1:
        raise AnalysisError(f"alpha must be in (0, 1), not {alpha}")
    rows = []
    for keys, _, rep in unit_replicates(curves, items, n_boot, seed):
        rows += [keys | asdict(stage) for stage in find_stages(rep, alpha, kinds, min_depth=min_depth)]
    return pd.DataFrame(rows, columns=list(STAGE_COLUMNS))
