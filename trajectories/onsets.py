"""Acquisition onsets with interval-censored bootstrap CIs, by two methods, one row per (model, unit).

- "sigmoid" (Chang & Bergen 2022): a 4-parameter logistic of accuracy against x = ln(step + 1),
      acc(x) = floor + (asymptote - floor) / (1 + exp(-slope * (x - midpoint))),
  fitted by item-weighted least squares to the curve and to each bootstrap replicate. Because it estimates the
  asymptote, a unit still rising at the last checkpoint is not reported "halfway to its final value" too early.
- "isotonic": the package's monotone (isotonic) fit, as `analysis.acquisition`, with the crossing interpolated
  between the two evaluated checkpoints that bracket it.

Definitions (the `definition` column):
  "midpoint"      sigmoid only: halfway from the fitted floor to the fitted asymptote (the midpoint parameter);
  "asymptote@F"   sigmoid: where the fit reaches chance + F x (asymptote - chance);
  "final@F"       isotonic: where the fit reaches chance + F x (its value at the last checkpoint - chance).

Interval censoring: a crossing between evaluated steps a < b is only known to lie in (a, b]. Every bootstrap
replicate gives an interval, not a point: the isotonic method's is always its gap (a, b]; the sigmoid's is its
gap when the fitted curve rises by more than `censor_share` of its amplitude within that one gap (too steep for
the checkpoints to say where inside the gap it crossed), otherwise the fitted crossing. The 95% CI runs from the
2.5% quantile of the replicates' lower ends to the 97.5% quantile of their upper ends, so it is never narrower
than a gap the truth could lie anywhere in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.special import expit

from trajectories.analysis import (
    CHANCE,
    AnalysisError,
    above_chance,
    ci_label,
    grammar_units,
    monotone_fit,
    unit_replicates,
)
from trajectories.stats import N_BOOT, Replicates, censored_ci

METHODS = ("sigmoid", "isotonic")
CENSOR_SHARE = 0.5
POOR_FIT_CHI2 = 4.0  # reduced chi-square above which residuals are "far beyond sampling noise"
SLOPE_BOUNDS = (0.05, 50.0)  # per unit of ln(step + 1): from a rise spread over all of training to a jump
MIDPOINT_REACH = np.log(10.0)  # midpoints may lie up to 10x beyond the last checkpoint (then "not yet acquired")

# Columns of `onsets` (one row per model, unit and method):
#   model, size, params, deduped, level, task, phenomenon: as in the curve table;
#   method: "sigmoid" | "isotonic"; definition: see the module docstring;
#   acq_step: the (continuous) step where the fit crosses the definition's level (sigmoid: also when that lies
#     beyond the last checkpoint, extrapolated, with acquired False); acq_tokens: interpolated tokens;
#   ci_low, ci_high: 95% interval-censored bootstrap CI of acq_step (ci_high inf: some replicates never cross);
#   gap_low, gap_high: the evaluated steps that bracket acq_step;
#   acquired: a rise significantly above chance that crosses the level by the last checkpoint; note: why not;
#   floor, asymptote, midpoint_step, slope: the sigmoid's parameters (isotonic: first and last fitted values);
#   r2: weighted R^2 of the fit; chi2_dof: mean squared residual over the sampling variance (about 1 when the fit
#   is as good as the noise allows); n_steps, last_step; ci_method: "bootstrap-items" or "stderr";
#   n_boot: replicates used (sigmoid: those that converged).
ONSET_COLUMNS = (
    "model", "size", "params", "deduped", "level", "task", "phenomenon", "method", "definition",
    "acq_step", "acq_tokens", "ci_low", "ci_high", "gap_low", "gap_high", "acquired", "note",
    "floor", "asymptote", "midpoint_step", "slope", "r2", "chi2_dof", "n_steps", "last_step", "ci_method", "n_boot",
)


@dataclass(frozen=True)
class Onset:
    """One unit's acquisition estimate by one method (fields as in ONSET_COLUMNS)."""

    method: str
    definition: str
    acq_step: float
    ci_low: float
    ci_high: float
    gap_low: float
    gap_high: float
    acquired: bool
    note: str
    floor: float
    asymptote: float
    midpoint_step: float
    slope: float
    r2: float
    chi2_dof: float
    n_steps: int
    last_step: int
    ci_method: str
    n_boot: int


def log_step(steps) -> np.ndarray:
    return np.log1p(np.asarray(steps, float))


def step_of(x) -> np.ndarray:
    # Rounded so that evaluated steps come back exactly (expm1(log1p(8000)) is 8000.0000000000055).
    return np.round(np.expm1(x), 6)


# ---------------------------------------------------------------------------------------------------- logistic fit
def logistic(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The 4-parameter logistic for each row of theta (floor, asymptote, midpoint, slope) at x: (rows x len(x))."""
    floor, top, mid, slope = (theta[:, i, None] for i in range(4))
    return floor + (top - floor) * expit(slope * (x - mid))


def _jacobian(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    floor, top, mid, slope = (theta[:, i, None] for i in range(4))
    s = expit(slope * (x - mid))
    ds = (top - floor) * s * (1 - s)
    return np.stack([1 - s, s, -slope * ds, (x - mid) * ds], axis=-1)


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, start: np.ndarray, lower: np.ndarray,
                 upper: np.ndarray, max_iter: int = 200, tol: float = 1e-7
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of many curves at once (y: curves x len(x); start: curves x 4) by box-constrained
    Levenberg-Marquardt. Returns the parameters, the weighted SSE and whether each fit converged (an accepted step
    improved the SSE by less than `tol`, relatively; along the shallow valleys of late, unfinished rises stricter
    tolerances cost many iterations and move the crossing by nothing measurable)."""
    theta = np.clip(np.asarray(start, float), lower, upper)
    sse = (w * (y - logistic(theta, x)) ** 2).sum(1)
    lam = np.full(len(theta), 1e-3)
    active = np.ones(len(theta), bool)
    for _ in range(max_iter):
        i = np.flatnonzero(active)
        if not len(i):
            break
        jac = _jacobian(theta[i], x)
        jw = jac * w[:, None]
        a = np.einsum("btp,btq->bpq", jw, jac)
        g = np.einsum("btp,bt->bp", jw, y[i] - logistic(theta[i], x))
        diag = np.einsum("bpp->bp", a)
        # Marquardt's scaling, plus a small ridge so a flat fit (floor == asymptote: no midpoint or slope
        # information) still gives a solvable system.
        ridge = lam[i, None] * diag + 1e-10 * (1 + diag.max(1, keepdims=True))
        step = np.linalg.solve(a + ridge[:, :, None] * np.eye(4), g[..., None])[..., 0]
        trial = np.clip(theta[i] + step, lower, upper)
        trial_sse = (w * (y[i] - logistic(trial, x)) ** 2).sum(1)
        better = trial_sse < sse[i]
        gain = np.where(better, sse[i] - trial_sse, 0.0)
        theta[i[better]], sse[i[better]] = trial[better], trial_sse[better]
        lam[i] = np.clip(np.where(better, lam[i] / 3, lam[i] * 4), 1e-9, 1e12)
        # Converged: an accepted step that no longer improves, or no step improves even when tiny (a
        # constrained minimum).
        done = (better & (gain <= tol * (trial_sse + 1e-12))) | (lam[i] >= 1e12)
        active[i[done]] = False
    return theta, sse, ~active


def _bounds(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lower = np.array([0.0, 0.0, x[0], SLOPE_BOUNDS[0]])
    upper = np.array([1.0, 1.0, x[-1] + MIDPOINT_REACH, SLOPE_BOUNDS[1]])
    return lower, upper


def _starts(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A grid of starting points: floor and asymptote from the first and last checkpoints, midpoints across the
    range, gentle to steep slopes (the least-squares surface has local minima in midpoint and slope)."""
    head, tail = y[: max(2, len(y) // 20)].mean(), y[-max(3, len(y) // 20):].mean()
    mids = np.linspace(x[1] if len(x) > 2 else x[0], x[-1] + 1, 8)
    grid = [(head, tail, m, k) for m in mids for k in (0.5, 2.0, 8.0)]
    return np.array(grid)


def fit_curve(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """The best of a grid of starts for one curve: parameters, weighted SSE, converged."""
    lower, upper = _bounds(x)
    starts = _starts(x, y)
    theta, sse, ok = fit_logistic(x, np.broadcast_to(y, (len(starts), len(y))), w, starts, lower, upper)
    best = int(np.argmin(np.where(ok, sse, np.inf))) if ok.any() else int(np.argmin(sse))
    return theta[best], float(sse[best]), bool(ok[best])


def fit_replicates(x: np.ndarray, reps: np.ndarray, w: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fit every replicate (reps: len(x) x B) from the curve's own fit and from a gentler and a steeper variant
    of it; keep each replicate's best. Returns parameters (B x 4) and converged (B)."""
    lower, upper = _bounds(x)
    variants = [theta, theta * [1, 1, 1, 1 / 3], theta * [1, 1, 1, 3]]
    n_boot = reps.shape[1]
    starts = np.repeat(np.array(variants), n_boot, axis=0)
    y = np.tile(reps.T, (len(variants), 1))
    fits, sse, ok = fit_logistic(x, y, w, starts, lower, upper)
    sse = np.where(ok, sse, np.inf).reshape(len(variants), n_boot)
    best = sse.argmin(0)
    pick = best * n_boot + np.arange(n_boot)
    return fits[pick], ok.reshape(len(variants), n_boot).any(0)


def logistic_crossing(theta: np.ndarray, fraction: float | None) -> np.ndarray:
    """Per row of theta: the x where the logistic reaches the definition's level (the midpoint when fraction is
    None, else chance + fraction x (asymptote - chance)); +inf where it never does, -inf where it starts above."""
    floor, top, mid, slope = theta.T
    if fraction is None:
        return np.where(top > floor, mid, np.inf)
    level = CHANCE + fraction * (top - CHANCE)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = (level - floor) / (top - floor)
        x = mid - np.log(1 / share - 1) / slope
    x = np.where(share <= 0, -np.inf, x)
    return np.where((top <= CHANCE) | (top <= floor) | (share >= 1), np.inf, x)


# ---------------------------------------------------------------------------------------------------- censoring
def censored_intervals(x: np.ndarray, crossing: np.ndarray, steep: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends (in x) of what each crossing says: the gap (x[j-1], x[j]] it falls in where `steep`
    (None: always), the crossing itself otherwise. Crossings before the first or after the last checkpoint are
    kept as they are (after the last: an extrapolation by the fitted shape)."""
    j = np.clip(np.searchsorted(x, crossing), 1, len(x) - 1)
    inside = (crossing > x[0]) & (crossing <= x[-1])
    censor = inside if steep is None else inside & steep
    low = np.where(censor, x[j - 1], np.maximum(crossing, x[0]))
    high = np.where(censor, x[j], np.maximum(crossing, x[0]))
    return low, high


def _gap(steps: np.ndarray, step: float) -> tuple[float, float]:
    if not np.isfinite(step):
        return np.nan, np.nan
    j = int(np.clip(np.searchsorted(steps, step), 0, len(steps) - 1))
    return float(steps[max(j - 1, 0)]), float(steps[j])


# ---------------------------------------------------------------------------------------------------- methods
def _noise_var(rep: Replicates, n: np.ndarray) -> np.ndarray:
    # Sampling variance per checkpoint from the replicates, floored at half an item's worth so a checkpoint at
    # exactly 0 or 1 (zero bootstrap variance) does not get infinite weight in chi-square.
    var = np.nanvar(rep.reps, axis=1)
    return np.maximum(np.nan_to_num(var), (0.5 / np.where(n > 0, n, 1000.0)) ** 2)


def _weights(n: np.ndarray) -> np.ndarray:
    # Checkpoints weigh by their item counts; unknown counts (imported results) weigh as the average one.
    known = np.isfinite(n) & (n > 0)
    w = np.where(known, n, n[known].mean() if known.any() else 1.0)
    return w / w.mean()


def _replicate_matrix(rep: Replicates) -> np.ndarray:
    # A checkpoint with neither items nor a stderr has no noise to draw: its replicates keep its accuracy.
    return np.where(np.isnan(rep.reps), rep.acc[:, None], rep.reps)


def sigmoid_onset(rep: Replicates, n: np.ndarray, fraction: float | None = None,
                  censor_share: float = CENSOR_SHARE, min_steps: int = 6) -> Onset:
    """Acquisition of one unit by a 4-parameter logistic in ln(step + 1); n: items per checkpoint (weights)."""
    steps = np.asarray(rep.steps, float)
    x, y, w = log_step(steps), np.asarray(rep.acc, float), _weights(np.asarray(n, float))
    definition = "midpoint" if fraction is None else f"asymptote@{fraction:g}"
    base = {"method": "sigmoid", "definition": definition, "n_steps": len(steps), "last_step": int(steps[-1]),
            "ci_method": ci_label(rep.from_items)}
    empty = dict.fromkeys(("acq_step", "ci_low", "ci_high", "gap_low", "gap_high", "floor", "asymptote",
                           "midpoint_step", "slope", "r2", "chi2_dof"), np.nan)
    if len(steps) < min_steps:
        return Onset(**base, **empty, acquired=False, note="no fit: too few checkpoints", n_boot=0)
    theta, sse, converged = fit_curve(x, y, w)
    sst = (w * (y - np.average(y, weights=w)) ** 2).sum()
    var = _noise_var(rep, np.asarray(n, float))
    fit = logistic(theta[None], x)[0]
    params = {"floor": theta[0], "asymptote": theta[1], "midpoint_step": float(step_of(theta[2])),
              "slope": theta[3], "r2": 1 - sse / sst if sst > 0 else np.nan,
              "chi2_dof": float(((y - fit) ** 2 / var).sum() / max(len(y) - 4, 1))}
    if not converged:
        return Onset(**base, **(empty | params), acquired=False, note="no fit: did not converge", n_boot=0)

    boot, ok = fit_replicates(x, _replicate_matrix(rep), w, theta)
    if ok.mean() < 0.5:
        return Onset(**base, **(empty | params), acquired=False, note="no fit: replicate fits did not converge",
                     n_boot=int(ok.sum()))
    boot = boot[ok]
    ci_low, ci_high = _sigmoid_ci(x, boot, fraction, censor_share)
    step = float(step_of(logistic_crossing(theta[None], fraction)[0]))
    extrapolated = step > steps[-1]
    note = ""
    if np.quantile(boot[:, 1] - boot[:, 0], 0.025) <= 0:
        note = "no fit: no significant rise (flat or falling curve)"
    elif np.quantile(boot[:, 1], 0.025) <= CHANCE:
        note = "no fit: asymptote not above chance"
    elif step < 0:
        note = "above the level from the first checkpoint"
    elif extrapolated:
        note = f"not acquired by the last checkpoint: the fit crosses at step {step:.4g} (extrapolated)"
    acquired = not note
    # An extrapolated crossing keeps its estimate and CI (the unit is on its way); a missing fit has none.
    estimated = acquired or (extrapolated and not note.startswith("no fit"))
    if estimated and params["chi2_dof"] > POOR_FIT_CHI2:
        note = "; ".join(filter(None, [note, f"poor fit: residuals {np.sqrt(params['chi2_dof']):.1f}x sampling noise"]))
    gap_low, gap_high = _gap(steps, step) if acquired else (np.nan, np.nan)
    if not estimated:
        step = ci_low = ci_high = np.nan
    return Onset(**base, **params, acq_step=step, ci_low=ci_low, ci_high=ci_high, gap_low=gap_low,
                 gap_high=gap_high, acquired=acquired, note=note, n_boot=len(boot))


def _sigmoid_ci(x: np.ndarray, boot: np.ndarray, fraction: float | None, censor_share: float) -> tuple[float, float]:
    """The interval-censored 95% CI (in steps) of the replicate fits' crossings."""
    crossing = logistic_crossing(boot, fraction)
    curves = logistic(boot, x)
    rows = np.arange(len(boot))
    j = np.clip(np.searchsorted(x, crossing), 1, len(x) - 1)
    rise = curves[rows, j] - curves[rows, j - 1]
    low, high = censored_intervals(x, crossing, rise > censor_share * np.abs(boot[:, 1] - boot[:, 0]))
    # A replicate whose midpoint sits at the search bound would have crossed later still: only a lower end.
    high = np.where(boot[:, 2] >= _bounds(x)[1][2] - 1e-9, np.inf, high)
    return tuple(float(v) for v in step_of(np.array(censored_ci(low, high))))


def isotonic_crossing(x: np.ndarray, fit: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Per column of a monotone fit (len(x) x curves): the index j of the first checkpoint at or above the level
    chance + fraction x (final - chance) (len(x) where the final value is not above chance), and the crossing
    interpolated linearly in x between checkpoints j-1 and j."""
    final = fit[-1]
    level = CHANCE + fraction * (final - CHANCE)
    j = np.where(final > CHANCE, (fit >= level).argmax(0), len(x))
    at, before = np.minimum(j, len(x) - 1), np.maximum(j - 1, 0)
    cols = np.arange(fit.shape[1])
    lo, hi = fit[before, cols], fit[at, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(hi > lo, (level - lo) / (hi - lo), 1.0)
    crossing = x[before] + np.clip(t, 0, 1) * (x[at] - x[before])
    return j, np.where(j >= len(x), np.inf, crossing)


def isotonic_onset(rep: Replicates, n: np.ndarray, fraction: float | None = None, min_steps: int = 3) -> Onset:
    """Acquisition of one unit by the isotonic fit (as `analysis.acquisition`), with an interval-censored CI."""
    fraction = 0.5 if fraction is None else fraction
    steps = np.asarray(rep.steps, float)
    x, w = log_step(steps), _weights(np.asarray(n, float))
    y = np.asarray(rep.acc, float)
    reps = _replicate_matrix(rep)
    fit = monotone_fit(np.column_stack([y, reps]), w)
    j, crossing = isotonic_crossing(x, fit, fraction)
    # A replicate only says its crossing lies in the gap (x[j-1], x[j]]; at the first checkpoint it is x[0].
    boot_j = j[1:]
    low = np.where(boot_j >= len(x), np.inf, x[np.clip(boot_j - 1, 0, len(x) - 1)])
    high = np.where(boot_j >= len(x), np.inf, x[np.clip(boot_j, 0, len(x) - 1)])
    ci_low, ci_high = (float(v) for v in step_of(np.array(censored_ci(low, high))))
    final = fit[-1, 0]
    var = _noise_var(rep, np.asarray(n, float))
    sst = (w * (y - np.average(y, weights=w)) ** 2).sum()
    note = ""
    if len(steps) < min_steps:
        note = "too few checkpoints"
    elif not above_chance(y, reps)[2]:
        note = "not acquired: final accuracy within noise of chance"
    acquired = not note
    step = float(step_of(crossing[0]))
    gap = (float(steps[max(j[0] - 1, 0)]), float(steps[min(j[0], len(steps) - 1)])) if acquired else (np.nan,) * 2
    return Onset(
        method="isotonic", definition=f"final@{fraction:g}", acq_step=step if acquired else np.nan,
        ci_low=ci_low if acquired else np.nan, ci_high=ci_high if acquired else np.nan,
        gap_low=gap[0], gap_high=gap[1], acquired=acquired, note=note, floor=fit[0, 0], asymptote=final,
        midpoint_step=np.nan, slope=np.nan, r2=1 - (w * (y - fit[:, 0]) ** 2).sum() / sst if sst > 0 else np.nan,
        chi2_dof=float(((y - fit[:, 0]) ** 2 / var).mean()), n_steps=len(steps), last_step=int(steps[-1]),
        ci_method=ci_label(rep.from_items), n_boot=reps.shape[1],
    )


ESTIMATORS = {"sigmoid": sigmoid_onset, "isotonic": isotonic_onset}


# ---------------------------------------------------------------------------------------------------- table
def onsets(curves: pd.DataFrame, items: pd.DataFrame | None = None, methods: tuple[str, ...] = METHODS,
           fraction: float | None = None, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """One row per (model, unit, method) for the grammar units of the curve table (ONSET_COLUMNS): paradigms
    resampled by item where the item table has them (else drawn from their stderr), phenomena as the mean of
    their paradigms' replicates, exactly the replicates `analysis.acquisition` uses.

    fraction None: the sigmoid's midpoint and the isotonic fit's halfway-to-final; a number F: "asymptote@F"
    and "final@F"."""
    unknown = set(methods) - set(ESTIMATORS)
    if unknown:
        raise AnalysisError(f"unknown onset method(s) {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    if fraction is not None and not 0 < fraction < 1:
        raise AnalysisError(f"fraction must be in (0, 1), not {fraction}")
    if grammar_units(curves).empty:
        raise AnalysisError("no minimal-pair results (paradigm or phenomenon rows with a phenomenon) to analyse")
    rows = []
    for keys, unit, rep in unit_replicates(curves, items, n_boot, seed):
        by_step = unit.set_index("step")
        n = by_step.n.reindex(rep.steps).astype(float).to_numpy()
        tokens = by_step.tokens.reindex(rep.steps).astype(float).to_numpy()
        for method in methods:
            onset = asdict(ESTIMATORS[method](rep, n, fraction))
            rows.append(keys | onset | {"acq_tokens": _tokens_at(rep.steps, tokens, onset["acq_step"])})
    table = pd.DataFrame(rows, columns=list(ONSET_COLUMNS))
    return table.sort_values(["model", "level", "method", "acq_step", "task"], ignore_index=True)


def _tokens_at(steps: np.ndarray, tokens: np.ndarray, step: float) -> float:
    known = np.isfinite(tokens)
    if not np.isfinite(step) or known.sum() < 2:
        return np.nan
    return float(np.interp(step, np.asarray(steps, float)[known], tokens[known], right=np.nan))


def side_by_side(table: pd.DataFrame) -> pd.DataFrame:
    """The onsets table pivoted to one row per (model, unit) with each method's acq_step, CI and acquired
    side by side (columns "<method>_<field>"), for the report."""
    keys = ["model", "level", "task", "phenomenon"]
    wide = table.pivot(index=keys, columns="method", values=["acq_step", "ci_low", "ci_high", "acquired"])
    wide.columns = [f"{method}_{field}" for field, method in wide.columns]
    return wide.reset_index()
