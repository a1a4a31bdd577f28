"""The report: renders the analysis tables (analysis.analyze, or analysis.memorization_tables for a memorization
run) and figures (plots.py) as report.md and a self-contained report.html (figures embedded as base64). It computes
nothing and reads no results folder.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

from trajectories import analysis
from trajectories.schema import FailureRecord, Level, MemorizationSpec, display_name

CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1.5em}"
       "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}th{background:#f3f3f3}"
       "img{max-width:100%;margin:.5em 0}figcaption{font-size:.9em;color:#555;margin-bottom:1.5em}")


# ---------------------------------------------------------------------------------------------------- formatting
def _cell(value) -> str:
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | float | np.number) and not pd.isna(value):
        value = float(value)
        if np.isinf(value):
            return "∞"
        if value.is_integer() and abs(value) >= 1:
            return f"{int(value):,}"
        return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    return "–" if pd.isna(value) else str(value)


def _formatted(table: pd.DataFrame) -> pd.DataFrame:
    return table.astype(object).map(_cell)


def _step_ci(row) -> str:
    if not row.acquired:
        return "not acquired" if "noise" in row.note else row.note
    return f"{_cell(row.acq_step)} [{_cell(row.ci_low)}, {_cell(row.ci_high)}]"


def _orders(order: pd.DataFrame, level: str) -> list[str]:
    lines = []
    for model, rows in order[order.level == level].groupby("model"):
        names = [f"{display_name(t)} ({_cell(s)})" for t, s in zip(rows.task, rows.acq_step, strict=True)]
        lines.append(f"{model}: " + " < ".join(names))
    return lines


# ---------------------------------------------------------------------------------------------------- document
def _summary(curves: pd.DataFrame, item_models: int, requested: list[tuple[str, int]],
             failures: list[FailureRecord], figures: list[Path]) -> list[tuple]:
    grammar = analysis.grammar_units(curves)
    steps = curves.groupby("model").step.agg(["nunique", "min", "max"])
    lines = [
        f"Models: {len(steps)}; checkpoints per model: " + ", ".join(
            f"{m} {r['nunique']} (steps {r['min']:,}–{r['max']:,})" for m, r in steps.iterrows()) + ".",
        f"Minimal-pair tasks: {grammar[grammar.level == 'paradigm'].task.nunique()} paradigms in "
        f"{grammar.phenomenon.nunique()} phenomena. Other tasks and metrics: "
        f"{curves[curves.phenomenon.fillna('') == ''].task.nunique()}.",
        f"Models with per-item results: {item_models} of {curves.model.nunique()}.",
        "CI methods in the curve table: " + "; ".join(
            f"{level} rows: " + ", ".join(f"{m} {n}" for m, n in g.ci_method.value_counts().items())
            for level, g in curves.groupby("level")) + ".",
        _grouping_line(curves),
    ]
    groups = analysis.seed_groups(curves)
    if groups:
        lines.append("Models that differ only in seed, drawn as one line (their mean, with a band over the seeds): "
                     + "; ".join(f"{g}: {', '.join(m)}" for g, m in groups.items()) + ".")
    if found := analysis.loss_tasks(curves):
        lines.append(f"Perplexity tasks (held-out loss per checkpoint, {analysis.LOSS_METRIC}): {', '.join(found)}.")
    lines += _missing(curves, requested, failures)
    return [("h2", "Data"), *(("p", line) for line in lines), *_figures(figures, "fields")]


def _grouping_line(curves: pd.DataFrame) -> str:
    used = sorted(set(curves[curves.level == Level.PHENOMENON].grouping) - {""})
    fields = sorted(curves[curves.level == Level.FIELD].phenomenon.unique())
    names = {"data": "the data's linguistics_term (BLiMP: 13 phenomena)",
             "paper": "the BLiMP paper's 12 phenomena (animate_subject_* under argument_structure)"}
    line = "Phenomena grouped by " + (", ".join(names.get(g, g) for g in used) or "the tasks' own labels") + "."
    return line + (f" Fields (a level above phenomena, mean over their paradigms): {', '.join(fields)}." if fields
                   else "")


def _reused(reused: pd.DataFrame) -> list[str]:
    """One line per group of checkpoints with the weights of one step."""
    lines = []
    for (model, source), rows in reused.groupby(["model", "same_weights_as"]):
        steps = ", ".join(f"{s:,}" for s in rows.step)
        lines.append(f"{model}: step{'s' * (len(rows) > 1)} {steps} {'have' if len(rows) > 1 else 'has'} the "
                     f"weights of step {int(source):,}.")
    return lines


def _missing(curves: pd.DataFrame, requested: list[tuple[str, int]], failures: list[FailureRecord]) -> list[str]:
    lines = []
    missing = sorted(set(requested) - set(zip(curves.model, curves.step, strict=True)))
    if missing:
        shown = ", ".join(f"{m} step {s:,}" for m, s in missing[:20]) + (" …" if len(missing) > 20 else "")
        lines.append(f"Requested but absent from the curves ({len(missing)}): {shown}. Partial sweeps are "
                     "analysed as they are; re-run the sweep (and `trajectories collect`) to complete them.")
    lines += [f"Failed unit: {f.model} step {f.step}: {f.reason[:200]}" for f in failures]
    return lines


DEFINITIONS = {
    "isotonic": "the first checkpoint at which the isotonic (monotone) fit of the unit's accuracy reaches {f:g} of the "
                "way from chance (0.5) to its final fitted value",
    "sigmoid": "where a 4-parameter logistic in ln(step + 1), fitted by item-weighted least squares, reaches {f:g} of "
               "the way from chance to its fitted asymptote (interpolated between checkpoints; estimating the "
               "asymptote keeps a unit still rising at the last checkpoint from looking acquired early)",
}


def _onset_cell(row) -> str:
    if row.acquired:
        return f"{_cell(row.acq_step)} [{_cell(row.ci_low)}, {_cell(row.ci_high)}]"
    return "not acquired" if "noise" in str(row.note) else str(row.note) or "not acquired"


def _fit_cell(row) -> str:
    if str(row.note).startswith("no fit"):
        return str(row.note)
    return f"R² {_cell(row.r2)}, χ²/dof {_cell(row.chi2_dof)}"


def _acquisition_section(acq: pd.DataFrame, order: pd.DataFrame, fraction: float, onsets: pd.DataFrame | None,
                         figures: list[Path]) -> list[tuple]:
    method = acq.method.iloc[0] if "method" in acq else "isotonic"
    phen = acq[acq.level == Level.PHENOMENON].assign(cell=lambda d: d.apply(_step_ci, axis=1))
    table = phen.pivot(index="task", columns="model", values="cell").rename(display_name)
    methods = ", ".join(f"{m} for {n} units" for m, n in acq.ci_method.value_counts().items())
    blocks = [
        ("h2", "Acquisition"),
        ("p", f"Acquisition step ({method}, the method that orders the units below): "
              f"{DEFINITIONS[method].format(f=fraction)}. 95% CIs are bootstrap intervals that account for the gap "
              "between evaluated checkpoints (a replicate crossing between two checkpoints says only that the "
              "crossing lies in that gap: interval censoring). CI method: "
              f"{methods} (bootstrap-items: items resampled per paradigm; stderr: draws from the reported standard "
              "errors). ∞ as an upper bound: some replicates never cross. Not acquired: the mean accuracy of the "
              "last 3 checkpoints is within 1.96 standard errors of chance. A model's final value is at its own last "
              "checkpoint (last_step), so a model with fewer checkpoints is measured against less training. Every "
              "unit is in acquisition.csv."),
        ("table", table.reset_index().rename(columns={"task": "phenomenon"})),
        *_figures(figures, "acquisition_phenomenon"),
        ("h3", "Acquisition order (phenomena)"),
        *(("p", line) for line in _orders(order, Level.PHENOMENON)),
    ]
    if onsets is not None and len(onsets):
        blocks += _onsets_blocks(onsets, fraction)
    return blocks


def _onsets_blocks(onsets: pd.DataFrame, fraction: float) -> list[tuple]:
    phen = onsets[onsets.level == Level.PHENOMENON]
    blocks = [("h3", "Both onset methods side by side"),
              ("p", "Each column of these tables uses the definition named above it; onsets.csv has both methods for "
                    "every unit, with the logistic's parameters (floor, asymptote, midpoint_step, slope). A sigmoid "
                    "onset says \"no fit\" when the curve does not rise significantly, its asymptote is not above "
                    "chance, or the fit fails; a crossing past the last checkpoint is an extrapolation, not an "
                    "acquisition. Fit quality: R² and the mean squared residual over the sampling variance (χ²/dof, "
                    "about 1 when the fit is as good as the noise allows; non-monotone curves, e.g. stages below "
                    "chance, fit poorly).")]
    for method, rows in phen.groupby("method", sort=False):
        cells = rows.assign(cell=rows.apply(_onset_cell, axis=1))
        blocks += [("p", f"{method} ({rows.definition.iloc[0]}): {DEFINITIONS[method].format(f=fraction)}."),
                   ("table", cells.pivot(index="task", columns="model", values="cell").rename(display_name)
                    .reset_index().rename(columns={"task": "phenomenon"}))]
    sigmoid = phen[phen.method == "sigmoid"]
    if len(sigmoid):
        fit = sigmoid.assign(cell=sigmoid.apply(_fit_cell, axis=1))
        blocks += [("p", "Sigmoid fit quality:"),
                   ("table", fit.pivot(index="task", columns="model", values="cell").rename(display_name)
                    .reset_index().rename(columns={"task": "phenomenon"}))]
    return blocks


def _seed_section(results: dict[str, pd.DataFrame], figures: list[Path]) -> list[tuple]:
    spread, ceiling = results.get("seed_spread"), results.get("agreement_ceiling")
    if spread is None or spread.empty:
        return []
    phen = spread[spread.level == Level.PHENOMENON].assign(task=lambda d: d.task.map(display_name))
    blocks = [("h2", "Seeds"),
              ("p", "Models that differ only in seed show how much of any difference between models is noise. Spread: "
                    "the standard deviation over seeds of log10(acquisition step + 1), in decades of steps "
                    "(seed_spread.csv has every unit)."),
              ("table", phen.drop(columns="level").rename(columns={"task": "phenomenon"}))]
    if ceiling is not None and len(ceiling):
        blocks += [("p", "Agreement of acquisition orders (Kendall's tau) by how the two models differ: between seeds "
                         "of one size it is the ceiling against which agreement between sizes can be judged."),
                   ("table", ceiling)]
    return [*blocks, ("p", "Each size's seeds are one line in the curve panels: their mean, with a band from the "
                           "lowest to the highest seed."), *_figures(figures, "phenomena")]


def _stage_section(stages: pd.DataFrame | None, figures: list[Path]) -> list[tuple]:
    if stages is None:
        return []
    blocks = [("h2", "Stages"),
              ("p", "Spans where a unit's accuracy is significantly below chance (below_chance: e.g. following the "
                    "nearest noun before agreement across an attractor is learned), or drops significantly from one "
                    "checkpoint to a later one (drop). Each test is simultaneous over all of a unit's checkpoints "
                    "(familywise error 5%, split between the two kinds), from the paired item bootstrap; stages "
                    "shallower than 0.05 are not reported. before/after: the evaluated checkpoints just outside the "
                    "stage. They are marked at the foot of the curve panels.")]
    if stages.empty:
        return [*blocks, ("p", "None found.")]
    shown = stages.assign(task=stages.task.map(display_name), depth_ci=[
        f"{_cell(d)} [{_cell(lo)}, {_cell(hi)}]" for d, lo, hi in zip(stages.depth, stages.depth_low,
                                                                         stages.depth_high, strict=True)])
    columns = ["model", "level", "task", "kind", "start_step", "end_step", "before", "after", "extreme_step",
               "depth_ci"]
    grids = [f"paradigms_{p}" for p in sorted(stages.phenomenon.dropna().unique())]
    return [*blocks, ("table", shown[columns].sort_values(["level", "task", "model"])),
            *_figures(figures, "phenomena", *grids)]


def _kappa_section(results: dict[str, pd.DataFrame], figures: list[Path]) -> list[tuple]:
    matched = results.get("kappa_matched")
    if matched is None:
        return []
    blocks = [("h2", "Item-level agreement"),
              ("p", "Do two models get the same items right, beyond what their accuracies alone would make them share "
                    "(Choshen et al. 2022)? Cohen's kappa between every pair of models on per-item correctness, per "
                    "phenomenon, at matched accuracy: for each pair, the two checkpoints whose accuracies on the "
                    "phenomenon are closest (both at least 0.6). kappa_by_step.csv has it at every shared step, "
                    "kappa_matched.csv every pair, fleiss.csv Fleiss' kappa across the seeds of one size.")]
    if matched.empty:
        return [*blocks, ("p", "No pair of models reaches 0.6 on a shared phenomenon.")]
    summary = results["kappa_summary"].assign(unit=lambda d: d.unit.map(display_name))
    return [*blocks, ("table", summary.rename(columns={"unit": "phenomenon"})), *_figures(figures, "kappa_matched")]


def _loss_section(results: dict[str, pd.DataFrame], figures: list[Path]) -> list[tuple]:
    acq_loss = results.get("acquisition_loss")
    if acq_loss is None:
        return []
    phen = acq_loss[acq_loss.level == Level.PHENOMENON].assign(cell=lambda d: [
        f"{_cell(v)} [{_cell(lo)}, {_cell(hi)}]" if ok and pd.notna(v) else "–"
        for v, lo, hi, ok in zip(d.acq_loss, d.acq_loss_low, d.acq_loss_high, d.acquired, strict=True)])
    blocks = [("h2", "Matched held-out loss"),
              ("p", "Models compared at the same held-out loss instead of the same step (Choshen et al. 2022), so a "
                    "model that only learns faster lines up with the others. Each model's loss is made monotone over "
                    "training and interpolated in log step. Acquisition loss: the loss at each acquisition step (CI "
                    "from the step's CI; lower loss = later)."),
              ("table", phen.pivot(index="task", columns="model", values="cell").rename(display_name).reset_index()
               .rename(columns={"task": "phenomenon"}))]
    agreement = results.get("acquisition_loss_agreement")
    if agreement is not None and len(agreement):
        blocks += [("p", "Per pair of models: Kendall's tau between their acquisition losses (equal to the tau between "
                         "acquisition steps, as loss falls with steps), and the median difference of acquisition "
                         "losses (positive: model_a acquires at a higher loss, i.e. earlier in its training)."),
                   ("table", agreement[agreement.level == Level.PHENOMENON].drop(columns="level"))]
    side = results.get("matched_views")
    if side is not None and len(side):
        blocks += [("p", "Do two models rank the units' accuracies alike? Kendall's tau between their unit accuracies, "
                         "averaged over the steps both evaluated (matched step) and over 50 losses both reach (matched "
                         "loss); step_matched.csv and loss_matched.csv have every step and loss."),
                   ("table", side[side.level == Level.PHENOMENON].drop(columns="level"))]
    return [*blocks, *_figures(figures, "phenomena_by_loss")]


def _ngram_section(results: dict[str, pd.DataFrame], figures: list[Path]) -> list[tuple]:
    ngram, phenomena = results.get("ngram"), results.get("ngram_phenomena")
    if ngram is None:
        return []
    solved = phenomena[phenomena.solved_by_ngram].phenomenon.tolist()
    by_task = ngram.pivot_table(index="task", columns="order", values="acc").rename(columns=lambda o: f"{o}-gram")
    return [("h2", "N-gram baselines"),
            ("p", f"Interpolated modified Kneser-Ney n-gram models (orders 1-5) trained on {ngram.corpus.iloc[0]} and "
                  "scored on the same pairs (log P(good) > log P(bad), sentences with </s>). Drawn as brown dash-dot "
                  "lines (the best order) on the curve panels. Phenomena an n-gram model already solves (best order "
                  "at 0.9 or more): " + (", ".join(solved) or "none") + "."),
            ("table", phenomena),
            ("table", by_task.reset_index()),
            *_figures(figures, "phenomena", *sorted(p.stem for p in figures if p.stem.startswith("paradigms_")
                                                    and not p.stem.endswith("_by_loss")))]


def _agreement_section(agreement: pd.DataFrame) -> list[tuple]:
    blocks = [("h2", "Agreement of acquisition orders between models"),
              ("p", "Kendall's tau and Spearman's rho between two models' acquisition steps, over the units both "
                    "acquired (scipy.stats; p-values test no association).")]
    if agreement.empty:
        return [*blocks, ("p", "Fewer than two models: no pairs to compare.")]
    for level, rows in agreement.groupby("level"):
        blocks += [("h3", f"over {level} units"), ("table", rows.drop(columns="level"))]
    return blocks


def _figures(figures: list[Path], *stems: str) -> list[tuple]:
    return [("fig", p) for stem in stems for p in figures if p.suffix == ".png" and p.stem == stem]


def _other_figures(figures: list[Path], blocks: list[tuple]) -> list[tuple]:
    """The figures no section showed."""
    shown = {value for kind, value in blocks if kind == "fig"}
    return [("h2", "Figures"), *(("fig", p) for p in figures if p.suffix == ".png" and p not in shown)]


def document(title: str, curves: pd.DataFrame, results: dict[str, pd.DataFrame], fraction: float,
             figures: list[Path], item_models: int, requested: list[tuple[str, int]] = (),
             failures: list[FailureRecord] = ()) -> list[tuple]:
    """The report as blocks (kind, value): headings, paragraphs, tables and figures."""
    suspicious = results["suspicious"]
    blocks = [
        ("h1", title),
        *_summary(curves, item_models, requested, failures, figures),
        *_acquisition_section(results["acquisition"], results["order"], fraction, results.get("onsets"), figures),
        *_agreement_section(results["agreement"]),
        *_seed_section(results, figures),
        *_stage_section(results.get("stages"), figures),
        *_kappa_section(results, figures),
        *_loss_section(results, figures),
        *_ngram_section(results, figures),
        ("h2", "Standard vs deduplicated data"),
        ("p", "Per size with both variants: final fitted accuracy (deduped minus standard, z = difference over the "
              "combined bootstrap standard error), acquisition steps, and the mean accuracy difference over shared "
              "checkpoints."),
        ("table", results["dedup"]) if len(results["dedup"]) else ("p", "No size has both a standard and a deduped "
                                                                        "model in these results."),
        ("h2", "One-dimensionality"),
        ("p", "Share of the variance of each model's (checkpoint x paradigm) accuracy matrix on its first principal "
              "component: near 1, the paradigms rise together along one developmental axis."),
        ("table", results["onedim"]),
        ("h2", "Suspicious checkpoints"),
        ("p", "Departure: a checkpoint's paradigm accuracies differ from what its neighbours predict by over "
              "sqrt(10) times sampling noise on average. Duplicate: per-item log-probs equal another step's. Public "
              "suites have served mislabelled and duplicated checkpoints."),
        ("table", suspicious) if len(suspicious) else ("p", "None found."),
        ("h2", "Checkpoints with identical weights"),
        ("p", "The sweep's audit found these checkpoints byte-identical to an earlier step (weights, config shape "
              "and tokenizer, from hub metadata or file hashes). They were not evaluated again: their results are "
              "that step's (`same_weights_as` in the curve table; open circles in the figures)."),
        *(("p", line) for line in _reused(results["reused"]) or ["None."]),
    ]
    # A figure is shown in the first section it belongs to; the rest at the end.
    seen = set()
    blocks = [b for b in blocks if b[0] != "fig" or not (b[1] in seen or seen.add(b[1]))]
    return blocks + _other_figures(figures, blocks)


# ---------------------------------------------------------------------------------------------------- memorization
def _last(table: pd.DataFrame, step: str = "step") -> pd.DataFrame:
    """Each model's lines at its own last checkpoint."""
    return table[table[step] == table.groupby("model")[step].transform("max")] if len(table) else table


ROW_SET_ORDER = {"sampled": 0, "canaries": 1}
ROW_SET_NAMES = {"sampled": "sampled rows", "canaries": "canaries"}


def _interval(value, low, high, signed: bool = True) -> str:
    fmt = "+.3f" if signed else ".3f"
    return f"{value:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def _trend(low, high, later: str, earlier: str) -> str:
    if low > 0:
        return later
    return earlier if high < 0 else "no trend detected (the 95% CI includes 0)"


def memorization_answer(tables: dict[str, pd.DataFrame]) -> list[str]:
    """The answer to "are rows seen later in training more likely to be memorized?" at each model's last
    checkpoint, with the numbers: the recency slope of every row set, and the repetition effect of canaries."""
    lines = []
    rates = _last(tables["memorization_rate"]).set_index(["model", "rows"])
    recency = _last(tables["recency"])
    for r in recency.sort_values(["model", "rows"], key=lambda c: c.map(ROW_SET_ORDER.get) if c.name == "rows"
                                 else c).itertuples():
        rate = rates.loc[(r.model, r.rows)]
        if r.memorized in (0, r.n):
            slope = f"{'none' if r.memorized == 0 else 'all'} memorized, so no trend to measure"
        else:
            slope = (f"slope {_interval(r.slope, r.slope_ci_low, r.slope_ci_high)} from the start to the end of "
                     f"training, p = {_cell(r.slope_p)}: " + _trend(r.slope_ci_low, r.slope_ci_high,
                                                                    "rows seen later are memorized more",
                                                                    "rows seen earlier are memorized more")
                     + f"; last 10% of training minus the rest "
                     f"{_interval(r.late_minus_early, r.diff_ci_low, r.diff_ci_high)}")
        lines.append(f"{r.model} step {r.step:,}, {ROW_SET_NAMES[r.rows]}: {r.memorized} of {r.n} memorized (rate "
                     f"{_interval(rate.rate, rate.ci_low, rate.ci_high, signed=False)}); {slope}.")
    grid = _last(tables.get("canary_grid", pd.DataFrame()))
    for model, rows in grid.groupby("model"):
        memorized = rows.groupby("repetitions").filter(lambda g: g.memorized.any())
        if len(memorized):
            cells = "; ".join(f"seen {count:g} times: " + ", ".join(f"{r.memorized}/{r.n}" for r in g.itertuples())
                              for count, g in memorized.sort_values("bin").groupby("repetitions"))
            lines.append(f"{model} step {rows.step.iloc[0]:,}, canaries memorized when last seen in the first, "
                         f"second and last third of training: {cells} (other counts: none).")
    effect = tables.get("repetition_effect", pd.DataFrame())
    for r in _last(effect).sort_values("model").itertuples():
        if r.slope_ci_low == r.slope_ci_high == 0:
            continue  # no canary memorized: said above
        verdict = _trend(r.slope_ci_low, r.slope_ci_high, "repetition raises memorization",
                         "repetition lowers memorization")
        lines.append(f"{r.model} step {r.step:,}, canaries: {_interval(r.slope, r.slope_ci_low, r.slope_ci_high)} "
                     f"memorized per doubling of repetitions (p = {_cell(r.slope_p)}): {verdict}; seen {r.most:g} "
                     f"times {r.most_rate:.2f} against {r.least_rate:.2f} seen {r.least:g} time(s), difference "
                     f"{_interval(r.most_minus_least, r.diff_ci_low, r.diff_ci_high)}.")
    return lines


def memorization_document(title: str, spec: MemorizationSpec, tables: dict[str, pd.DataFrame],
                          figures: list[Path], scored: pd.DataFrame, requested: list[tuple[str, int]] = (),
                          failures: list[FailureRecord] = ()) -> list[tuple]:
    """The memorization report as blocks. scored: the rows the run scores (schema.ROW_COLUMNS)."""
    counts = scored.groupby(["data", "canary"]).size().unstack(fill_value=0)
    done = set(zip(tables["memorization_rate"].model, tables["memorization_rate"].step, strict=True))
    missing = sorted(set(requested) - done)
    data = [
        f"Spec: {spec.describe()}; greedy generation (match_fraction) {'on' if spec.generate else 'off'}; EOS in "
        f"the continuation {'banned, as in EleutherAI' if spec.ban_eos else 'allowed'}.",
        "Rows scored per data file: " + "; ".join(
            f"{variant}: {counts.loc[variant].get(False, 0)} sampled (stratified over training, seed {spec.seed}), "
            f"{counts.loc[variant].get(True, 0)} canaries" for variant in counts.index) + ". A checkpoint scores "
        "only the rows it has been trained on.",
    ]
    if missing:
        data.append(f"Requested checkpoints without results ({len(missing)}): " + ", ".join(
            f"{m} step {s:,}" for m, s in missing[:20]) + (" …" if len(missing) > 20 else "") + ".")
    data += [f"Failed unit: {f.model} step {f.step}: {f.reason[:200]}" for f in failures]
    blocks = [
        ("h1", title), ("h2", "Data"), *(("p", line) for line in data),
        ("h2", "Are rows seen later in training more likely to be memorized?"),
        ("p", "Memorized: greedy decoding from a row's first tokens reproduces the next ones exactly (teacher-forced "
              "argmax, identical to generate's verdict). Slope: least-squares change in the memorized share from "
              "the start (0) to the end (1) of training so far, with a bootstrap 95% CI over rows and a permutation "
              "p-value. Canaries are planted rows of known repetitions; the repetition effect is the change per "
              "doubling of repetitions (bootstrap within counts). At each model's last checkpoint:"),
        *(("p", line) for line in memorization_answer(tables)),
        ("h2", "Memorization over training"), ("table", tables["memorization_rate"]),
        ("h2", "Recency test at the last checkpoints"),
        ("p", "Every checkpoint is in recency.csv; memorization_by_position.csv has the rate per bin of training "
              "position."),
        ("table", _last(tables["recency"])),
    ]
    if len(tables.get("poisson", ())):
        blocks += [("h2", "Poisson check (sampled rows)"),
                   ("p", "Memorized counts in bins of consecutive rows against a Poisson process of the same mean "
                         "(Biderman et al. 2023): dispersion = variance / mean (1 for Poisson), p of the "
                         "index-of-dispersion chi-squared test (small: memorization clusters in parts of training)."),
                   ("table", _last(tables["poisson"]))]
    if len(tables.get("repetitions", ())):
        blocks += [("h2", "Repetition (canaries)"),
                   ("table", _last(tables["repetition_effect"])) if len(tables["repetition_effect"]) else
                   ("p", "Every canary was seen equally often in these models' data: no repetition effect to measure."),
                   ("table", _last(tables["repetitions"]))]
    persistence = _last(tables["persistence"], "to_step")
    blocks += [("h2", "Persistence"),
               ("p", "Of the rows memorized at from_step, the share still memorized at the model's last checkpoint "
                     "(every pair of checkpoints is in persistence.csv)."),
               ("table", persistence) if len(persistence) else ("p", "Fewer than two checkpoints per model.")]
    if len(tables["predictability"]):
        blocks += [("h2", "Predictability"),
                   ("p", "Memorization at an earlier checkpoint, or by another model trained on the same data, as a "
                         "predictor of memorization at a model's last checkpoint: precision and recall with Wilson "
                         "95% CIs."),
                   ("table", tables["predictability"])]
    return blocks + _other_figures(figures, blocks)


def to_markdown(blocks: list[tuple], base: Path) -> str:
    parts = []
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + value)
        elif kind == "p":
            parts.append(value)
        elif kind == "table":
            cells = _formatted(value)
            rows = [list(cells.columns), ["---"] * cells.shape[1], *cells.to_numpy().tolist()]
            parts.append("\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows))
        elif kind == "fig":
            parts.append(f"![{value.stem}]({Path('..') / value.relative_to(base)})")
    return "\n\n".join(parts) + "\n"


def to_html(blocks: list[tuple], title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body>"]
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{html.escape(value)}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(value)}</p>")
        elif kind == "table":
            parts.append(_formatted(value).to_html(index=False, border=0))
        elif kind == "fig":
            data = base64.b64encode(value.read_bytes()).decode()
            parts.append(f"<figure><img alt='{html.escape(value.stem)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(value.stem)}</figcaption></figure>")
    return "\n".join(parts) + "</body></html>\n"
