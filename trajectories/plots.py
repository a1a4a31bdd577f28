"""Figures of learning curves (PNG and SVG), drawn from the curve table alone, and of memorization runs, drawn
from their analysis tables (analysis.memorization_tables).

Every figure encodes a model the same way: colour = model size ordered by parameter count, solid = standard data,
dotted = deduplicated data. Models that differ only in seed are drawn as one line, their mean, with a band over the
seeds (from the lowest to the highest). Steps (or tokens) are on a symlog axis, so step 0 and the log-spaced early
checkpoints are visible; with x = "loss" the axis is held-out loss, falling as training runs (left to right). The
dashed grey line is chance (0.5) for minimal-pair tasks; a brown dash-dot line is the best n-gram baseline; bars at
the foot of a panel mark the stages `analyze` found (below chance, or a significant drop), in the model's colour. On
the curves, an open circle marks a checkpoint whose weights are identical to an earlier step's (`same_weights_as`):
its value is that step's. Where
checkpoints were skipped (a coarse-to-fine sweep cut short, an adaptive sweep: `skipped_from`), a dot marks each
evaluated checkpoint, so a straight stretch between dots reads as interpolated, not measured.
"""

from __future__ import annotations

import fnmatch
import math
import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from trajectories.analysis import CHANCE, LOSS_METRIC, AnalysisError, check_curves, seed_groups  # noqa: E402
from trajectories.schema import Level, display_name  # noqa: E402

FORMATS = ("png", "svg")
X_LABELS = {"step": "training step (symlog scale)", "tokens": "tokens seen (symlog scale)",
            "loss": f"held-out loss ({LOSS_METRIC.replace('_', ' ')}; training runs left to right)"}
NCOLS = 4
TITLE_WIDTH = 30  # characters per line of a panel title at the panels' width
NGRAM_COLOR = "#8c510a"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_")


def save(fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{_slug(stem)}.{fmt}" for fmt in FORMATS]
    for path in paths:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------------------------------------- styles
def model_styles(curves: pd.DataFrame) -> dict[str, dict]:
    """Colour, line style and legend label per model; sizes ordered by parameter count, then name."""
    models = curves.drop_duplicates("model")[["model", "size", "params", "deduped"]]
    sizes = (models.assign(p=models.params.astype("Float64").fillna(np.inf))
             .sort_values(["p", "size"])["size"].drop_duplicates().tolist())
    palette = dict(zip(sizes, sns.color_palette("viridis", len(sizes)), strict=True))
    return {
        m.model: {"color": palette[m.size], "linestyle": ":" if m.deduped else "-", "size": m.size,
                  "order": (sizes.index(m.size), bool(m.deduped), m.model)}
        for m in models.itertuples()
    }


def _legend(fig, styles: dict, models, chance: bool, extras: dict | None = None) -> None:
    """Sizes and variants of the models drawn (colours stay those of the whole table); `extras`: label -> Line2D
    keyword arguments of further entries."""
    extras = extras or {}
    styles = {m: styles[m] for m in models}
    handles = [Line2D([], [], color=s["color"], lw=2, label=s["size"])
               for s in sorted(styles.values(), key=lambda s: s["order"])]
    handles = list({h.get_label(): h for h in handles}.values())
    if any(s["linestyle"] == ":" for s in styles.values()):
        handles += [Line2D([], [], color="0.2", ls="-", label="standard"),
                    Line2D([], [], color="0.2", ls=":", lw=2, label="deduped")]
    if chance:
        handles.append(Line2D([], [], color="0.5", ls="--", lw=1, label="chance"))
    for label, handle in extras.items():
        handles.append(Line2D([], [], label=label, **handle))
    fig.legend(handles=handles, title="model size", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def _x_column(curves: pd.DataFrame, x: str) -> str:
    if x not in X_LABELS:
        raise AnalysisError(f"x must be one of {', '.join(X_LABELS)}, not {x!r}")
    if x == "loss" and "loss" not in curves:
        raise AnalysisError("x='loss' needs the curves placed at their held-out loss (plot_all does it)")
    if curves[x].isna().all():
        raise AnalysisError(f"the curve table has no {x} values (tokens per step unknown for this suite); use x='step'")
    return x


def at_loss(curves: pd.DataFrame, loss: pd.DataFrame) -> pd.DataFrame:
    """The curve table with a `loss` column: each checkpoint's held-out loss (each model's loss made monotone over
    training and interpolated in log step, alignment.monotone_loss); NaN where a model has no loss there."""
    from trajectories.alignment import loss_at, monotone_loss

    fitted = monotone_loss(loss)
    placed = pd.Series(np.nan, index=curves.index)
    for model, rows in curves.groupby("model"):
        placed[rows.index] = loss_at(fitted, model, rows.step.to_numpy(float))
    return curves.assign(loss=placed)


def _short_titles(names: list) -> dict:
    """Panel titles without the family prefix all of several share ("minigrammar_", "blimp_"), broken into lines
    after underscores to fit the panel's width (names stay as they are spelled)."""
    names = [str(n) for n in names]
    shown = [display_name(n) for n in names]
    if len(shown) > 1 and len({n.split("_", 1)[0] for n in shown}) == 1 and all("_" in n for n in shown):
        shown = [n.split("_", 1)[1] for n in shown]
    return {name: textwrap.fill(title.replace("_", "_ "), TITLE_WIDTH).replace("_ ", "_")
            for name, title in zip(names, shown, strict=True)}


def _seed_means(data: pd.DataFrame, panel: str, x: str, groups: dict[str, list[str]]) -> pd.DataFrame:
    """Rows of models in one seed group replaced by their mean per (panel, step), the band spanning the seeds."""
    member_of = {m: group for group, members in groups.items() for m in members}
    grouped = data.model.map(member_of)
    if grouped.isna().all():
        return data
    rows = data[grouped.notna()].assign(model=grouped[grouped.notna()])
    means = rows.groupby(["model", panel, "step"], as_index=False).agg(
        acc=("acc", "mean"), ci_low=("acc", "min"), ci_high=("acc", "max"), seeds=("acc", "size"),
        **{x: (x, "mean")} if x != "step" else {})
    return pd.concat([data[grouped.isna()], means], ignore_index=True)


def _stage_marks(ax, marks: pd.DataFrame, to_x, styles: dict) -> None:
    """A bar at the foot of the panel over each stage's checkpoints, in its model's colour: thick below chance, thin
    for a drop."""
    foot = blended_transform_factory(ax.transData, ax.transAxes)
    for i, stage in enumerate(marks.itertuples()):
        start, end = to_x(stage.model, [stage.start_step, stage.end_step])
        y = 0.03 + 0.035 * (i % 4)
        style = styles.get(stage.group, styles.get(stage.model))
        below = stage.kind == "below_chance"  # thick; a drop thin, so the two kinds read apart
        ax.plot([start, end], [y, y], transform=foot, color=style["color"], lw=4 if below else 1.5,
                alpha=0.8 if below else 0.6, solid_capstyle="butt", marker="|" if start == end else None, ms=8)


def _x_of(data: pd.DataFrame, x: str):
    """step -> x per model, interpolated between the model's evaluated checkpoints."""
    if x == "step":
        return lambda model, steps: np.asarray(steps, float)
    by_model = {m: rows.dropna(subset=[x]).drop_duplicates("step").sort_values("step")
                for m, rows in data.groupby("model")}

    def to_x(model, steps):
        rows = by_model.get(model)
        if rows is None or rows.empty:
            return np.full(len(steps), np.nan)
        return np.interp(np.asarray(steps, float), rows.step.to_numpy(float), rows[x].to_numpy(float))

    return to_x


def compact(value: float, _pos=None) -> str:
    """1000 -> "1k", 2e9 -> "2B": short tick labels, and plain text is much faster to lay out than mathtext."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _symlog(ax, values: pd.Series) -> None:
    """Linear from 0 to the decade of the first positive value, logarithmic above; ticks at 0 and each decade."""
    positive = values[values > 0].astype(float)
    low = math.floor(math.log10(positive.min())) if len(positive) else 0
    high = math.ceil(math.log10(positive.max())) if len(positive) else 1
    ax.set_xscale("symlog", linthresh=10.0**low)
    ax.set_xticks([0, *(10.0**k for k in range(low, high + 1))])
    ax.set_xlim(0, float(values.max()) * 1.05 if len(positive) else 1)
    ax.xaxis.set_major_formatter(FuncFormatter(compact))


# ---------------------------------------------------------------------------------------------------- line grids
def line_grid(data: pd.DataFrame, panel: str, out_dir: Path, stem: str, title: str, ylabel: str,
              x: str = "step", styles: dict | None = None, chance: bool = True, stages: pd.DataFrame | None = None,
              ngram: pd.Series | None = None, groups: dict[str, list[str]] | None = None) -> list[Path]:
    """One panel per value of `panel`, one line per model (or seed group: mean, band over seeds) with its CI band.
    stages: rows of analyze's stage table whose `task` is the panel's value; ngram: the best n-gram accuracy per
    panel value (and its order, `ngram.attrs["order"]`)."""
    if data.empty:
        raise AnalysisError(f"no rows to draw for {stem!r}")
    styles = styles or model_styles(data)
    x = _x_column(data, x)
    groups = groups if groups is not None else seed_groups(data)
    to_x = _x_of(data, x)
    drawn = _seed_means(data, panel, x, groups)
    panels = sorted(data[panel].unique())
    skipped = "skipped_from" in data and bool(data.skipped_from.notna().any())
    titles = _short_titles(panels)
    lines = max(t.count("\n") + 1 for t in titles.values())
    ncols = min(NCOLS, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, (2.4 + 0.18 * lines) * nrows + 0.6), sharex=True,
                             sharey=chance, squeeze=False)
    for ax, name in zip(axes.flat, panels, strict=False):
        rows = drawn[drawn[panel] == name]
        for model, curve in sorted(rows.groupby("model"), key=lambda g: styles[g[0]]["order"]):
            curve = curve.sort_values(x)
            style = styles[model]
            ax.plot(curve[x], curve.acc, color=style["color"], ls=style["linestyle"], lw=1.6,
                    marker="." if skipped else None, ms=5)
            ax.fill_between(curve[x], curve.ci_low, curve.ci_high, color=style["color"], alpha=0.18, lw=0)
            if "same_weights_as" in curve:
                same = curve[curve.same_weights_as.notna()]
                ax.plot(same[x], same.acc, ls="", marker="o", ms=5, mfc="none", color=style["color"], mew=1.2)
        if chance:
            ax.axhline(CHANCE, color="0.5", ls="--", lw=1)
        elif rows.task.str.contains("perplexity").all() and (rows.acc > 0).all():
            ax.set_yscale("log")
        if ngram is not None and name in ngram.index:
            ax.axhline(ngram[name], color=NGRAM_COLOR, ls="-.", lw=1.2)
        if stages is not None and len(marks := stages[stages.task == name]):
            _stage_marks(ax, marks.assign(group=marks.model.map(
                {m: g for g, members in groups.items() for m in members})), to_x, styles)
        _x_axis(ax, data[x], x)
        ax.tick_params(labelbottom=True)  # shared x, but a panel above an empty slot still needs its ticks
        ax.set_title(titles[str(name)], fontsize=9.5)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.supxlabel(X_LABELS[x])
    fig.supylabel(ylabel)
    fig.tight_layout()
    extras = {}
    if any(set(members) & set(data.model) for members in groups.values()):
        extras["seed mean, band: range over seeds"] = {"color": "0.4", "lw": 6, "alpha": 0.3}
    if ngram is not None and len(ngram.index.intersection(panels)):
        extras["best n-gram baseline"] = {"color": NGRAM_COLOR, "ls": "-.", "lw": 1.2}
    if stages is not None and stages.task.isin(panels).any():
        extras["stage below chance"] = {"color": "0.3", "lw": 4}
        extras["stage: a drop"] = {"color": "0.3", "lw": 1.5}
    if "same_weights_as" in data and data.same_weights_as.notna().any():
        extras["same weights as an\nearlier step"] = {"color": "0.2", "ls": "", "marker": "o", "mfc": "none"}
    if skipped:
        extras["evaluated checkpoint\n(lines between: interpolated)"] = {"color": "0.2", "ls": "", "marker": "."}
    _legend(fig, styles, drawn.model.unique(), chance, extras)
    # Figures against loss sit beside those against steps: phenomena_by_loss.png next to phenomena.png.
    return save(fig, out_dir, stem + ("_by_loss" if x == "loss" else ""))


def _x_axis(ax, values: pd.Series, x: str) -> None:
    if x == "loss":
        ax.set_xlim(float(values.max()), float(values.min()))  # high loss (early training) on the left
    else:
        _symlog(ax, values)


def phenomenon_grid(curves: pd.DataFrame, out_dir: Path, x: str = "step", stages: pd.DataFrame | None = None,
                    ngram: pd.DataFrame | None = None) -> list[Path]:
    rows = curves[curves.level == Level.PHENOMENON]
    marks = stages[stages.level == Level.PHENOMENON].assign(task=lambda d: d.phenomenon) if stages is not None \
        else None
    best = _best_ngram(ngram.groupby(["phenomenon", "order"]).acc.mean()) if ngram is not None else None
    return line_grid(rows, "phenomenon", out_dir, "phenomena", "Accuracy per phenomenon over training (95% CI)",
                     "accuracy (mean over paradigms)", x, model_styles(curves), stages=marks, ngram=best)


def field_grid(curves: pd.DataFrame, out_dir: Path, x: str = "step") -> list[Path]:
    rows = curves[curves.level == Level.FIELD]
    return line_grid(rows, "phenomenon", out_dir, "fields", "Accuracy per field (BLiMP's morphology, syntax, "
                     "semantics, syntax-semantics) over training (95% CI)", "accuracy (mean over paradigms)", x,
                     model_styles(curves))


def paradigm_grid(curves: pd.DataFrame, phenomenon: str, out_dir: Path, x: str = "step",
                  stages: pd.DataFrame | None = None, ngram: pd.DataFrame | None = None) -> list[Path]:
    rows = curves[(curves.level == Level.PARADIGM) & (curves.phenomenon == phenomenon)]
    marks = stages[stages.level == Level.PARADIGM] if stages is not None else None
    best = _best_ngram(ngram.set_index(["task", "order"]).acc) if ngram is not None else None
    return line_grid(rows, "task", out_dir, f"paradigms_{phenomenon}",
                     f"Paradigms of {phenomenon} over training (95% CI)", "accuracy", x, model_styles(curves),
                     stages=marks, ngram=best)


def _best_ngram(acc: pd.Series) -> pd.Series:
    """The best order's accuracy per unit, from accuracies indexed by (unit, order)."""
    return acc.groupby(level=0).max()


def other_metrics(curves: pd.DataFrame, out_dir: Path, x: str = "step") -> list[Path]:
    """Tasks and metrics without a phenomenon (e.g. imported lm-eval results), one panel each."""
    rows = curves[curves.level.isin([Level.PARADIGM, Level.METRIC]) & (curves.phenomenon.fillna("") == "")]
    return line_grid(rows, "task", out_dir, "other_metrics", "Other lm-eval tasks and metrics over training",
                     "value (accuracy unless named)", x, model_styles(curves), chance=False)


# ---------------------------------------------------------------------------------------------------- others
def heatmap(curves: pd.DataFrame, model: str, out_dir: Path) -> list[Path]:
    """Phenomenon x checkpoint accuracy of one model, diverging around chance."""
    rows = curves[(curves.level == Level.PHENOMENON) & (curves.model == model)]
    everyone = curves[curves.level == Level.PHENOMENON]
    # Same row order and colour scale for every model, so their heatmaps can be compared side by side.
    order = everyone.groupby("phenomenon").acc.mean().sort_values(ascending=False).index
    spread = max(float((everyone.acc - CHANCE).abs().max()), 0.05)
    matrix = rows.pivot_table(index="phenomenon", columns="step", values="acc").reindex(order).dropna(how="all")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * matrix.shape[1] + 3), 0.35 * len(matrix) + 1.6))
    sns.heatmap(matrix, ax=ax, cmap="vlag", center=CHANCE, vmin=CHANCE - spread, vmax=CHANCE + spread,
                cbar_kws={"label": "accuracy (0.5 = chance)"}, xticklabels="auto")
    ax.set_title(f"{model}: accuracy per phenomenon and checkpoint")
    ax.set_xlabel("checkpoint (training step; one column each, not to scale)")
    ax.set_ylabel("phenomenon")
    ax.tick_params(axis="y", rotation=0)
    fig.tight_layout()
    return save(fig, out_dir, f"heatmap_{model}")


def final_step(curves: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Each model's row at the latest step every model has, else at its own last step; and a caption."""
    last = curves.groupby("model").step.transform("max")
    shared = set.intersection(*(set(g.step) for _, g in curves.groupby("model")))
    if shared:
        step = max(shared)
        return curves[curves.step == step], f"step {step:,}"
    return curves[curves.step == last], "each model's last checkpoint"


def scaling(curves: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Final accuracy against parameter count, one panel per phenomenon, one line per data variant."""
    rows = curves[(curves.level == Level.PHENOMENON) & curves.params.notna()]
    rows, when = final_step(rows)
    styles = model_styles(curves)
    panels = sorted(rows.phenomenon.unique())
    # Tick each size at its parameter count, labelled with its name.
    sizes = rows.assign(p=rows.params.astype(float)).groupby("p")["size"].first()
    ncols = min(NCOLS, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.6 * nrows + 0.6), sharex=True, sharey=True,
                             squeeze=False)
    for ax, name in zip(axes.flat, panels, strict=False):
        panel = rows[rows.phenomenon == name].sort_values("params")
        for deduped, variant in panel.groupby("deduped"):
            params = variant.params.astype(float)
            ax.plot(params, variant.acc, color="0.3", ls=":" if deduped else "-", lw=1.2, zorder=1)
            ax.errorbar(params, variant.acc, yerr=[variant.acc - variant.ci_low, variant.ci_high - variant.acc],
                        fmt="none", ecolor="0.3", lw=1, zorder=1)
            ax.scatter(params, variant.acc, c=[styles[m]["color"] for m in variant.model],
                       marker="s" if deduped else "o", s=28, zorder=2)
        ax.axhline(CHANCE, color="0.5", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xticks(sizes.index, sizes.tolist(), minor=False)
        ax.set_xticks([], minor=True)
        ax.tick_params(labelbottom=True)
        ax.set_title(name, fontsize=10)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"Accuracy at {when} against model size (95% CI)")
    fig.supxlabel("model size (parameters, log scale)")
    fig.supylabel("accuracy (mean over paradigms)")
    fig.tight_layout()
    _legend(fig, styles, rows.model.unique(), chance=True)
    return save(fig, out_dir, "scaling")


def acquisition_plot(acq: pd.DataFrame, curves: pd.DataFrame, out_dir: Path,
                     level: str = Level.PHENOMENON) -> list[Path]:
    """Acquisition step (with 95% CI) per unit and model; units ordered by their median acquisition step."""
    rows = acq[(acq.level == level) & acq.acquired]
    if rows.empty:
        raise AnalysisError(f"no {level} was acquired by any model; nothing to plot")
    styles = model_styles(curves)
    order = rows.groupby("task").acq_step.median().sort_values().index.tolist()
    models = sorted(rows.model.unique(), key=lambda m: styles[m]["order"])
    fig, ax = plt.subplots(figsize=(7.5, 0.4 * len(order) * max(1, len(models) / 4) + 1.6))
    for i, model in enumerate(models):
        r = rows[rows.model == model]
        y = np.array([order.index(t) for t in r.task]) + (i - (len(models) - 1) / 2) * 0.8 / max(len(models), 1)
        high = r.ci_high.replace(np.inf, r.last_step.max())
        style = styles[model]
        ax.errorbar(r.acq_step, y, xerr=[r.acq_step - r.ci_low, high - r.acq_step], fmt="s" if ":" in
                    style["linestyle"] else "o", color=style["color"], ms=4, lw=1, label=model)
    ax.set_yticks(range(len(order)), [display_name(t) for t in order])
    ax.invert_yaxis()
    _symlog(ax, rows.acq_step)
    fraction = rows.fraction.iloc[0]
    ax.set_xlabel(f"acquisition step: first checkpoint {fraction:g} of the way from chance to final (symlog)")
    ax.set_title(f"When each {level} is acquired (95% CI)")
    ax.legend(title="model", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return save(fig, out_dir, f"acquisition_{level}")


def kappa_heatmap(kappa: pd.DataFrame, curves: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Cohen's kappa between every pair of models at matched accuracy (agreement.kappa_at_matched_accuracy), one
    models x models panel per phenomenon: do two models get the same items right, beyond their accuracies?"""
    from trajectories.agreement import kappa_matrix

    if kappa.empty:
        raise AnalysisError("no kappa to draw")
    styles = model_styles(curves)
    models = sorted(set(kappa.model_a) | set(kappa.model_b), key=lambda m: styles[m]["order"])
    units = sorted(kappa.unit.unique())
    titles = _short_titles(units)
    ncols = min(3, len(units))
    nrows = math.ceil(len(units) / ncols)
    side = 0.9 + 0.3 * len(models)
    # Constrained layout keeps the suptitle off the top row's titles (tight_layout does not).
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols + 1.5, side * nrows + 0.8), squeeze=False,
                             layout="constrained")
    for i, (ax, unit) in enumerate(zip(axes.flat, units, strict=False)):
        matrix = kappa_matrix(kappa, unit).reindex(index=models, columns=models)
        sns.heatmap(matrix, ax=ax, cmap="viridis", vmin=0, vmax=1, square=True, cbar=i == len(units) - 1,
                    cbar_kws={"label": "Cohen's kappa"}, annot=len(models) <= 8, fmt=".2f",
                    annot_kws={"fontsize": 7}, xticklabels=i // ncols == nrows - 1 or i + ncols >= len(units),
                    yticklabels=i % ncols == 0)
        ax.set_title(titles[unit], fontsize=9.5)
        ax.tick_params(labelsize=8)
    for ax in axes.flat[len(units):]:
        ax.set_visible(False)
    fig.suptitle("Item-level agreement between models at matched accuracy (Cohen's kappa per phenomenon)")
    return save(fig, out_dir, "kappa_matched")


# ---------------------------------------------------------------------------------------------------- all
def plot_all(curves: pd.DataFrame, out_dir: Path, x: str = "step", phenomenon: str | None = None,
             task: str | None = None, loss: pd.DataFrame | None = None, stages: pd.DataFrame | None = None,
             ngram: pd.DataFrame | None = None) -> list[Path]:
    """Every figure the table supports, under out_dir; returns the written paths.

    phenomenon: only that phenomenon's figures; task: a task name or glob (e.g. "lambada*"), only its curves.
    x: "step", "tokens" or "loss" (then `loss`, analysis.loss_table, places each checkpoint at its held-out
    loss). stages, ngram: analyze's stage and n-gram baseline tables, drawn on the grammar panels."""
    curves = check_curves(curves)
    out_dir = Path(out_dir)
    if x == "loss":
        if loss is None:
            raise AnalysisError("x='loss' needs a loss table (a perplexity task in the sweep)")
        curves = at_loss(curves, loss)
    _x_column(curves, x)
    if task:
        rows = curves[curves.task.map(lambda t: fnmatch.fnmatch(t, task))]
        if rows.empty:
            raise AnalysisError(f"no task matches {task!r}; tasks: {', '.join(sorted(curves.task.unique()))}")
        minimal_pairs = (rows.phenomenon.fillna("") != "").all()
        return line_grid(rows, "task", out_dir, f"task_{task}", f"{task} over training", "accuracy"
                         if minimal_pairs else "value", x, model_styles(curves), chance=minimal_pairs)
    grammar_rows = curves[curves.level != Level.FIELD]
    phenomena = sorted(p for p in grammar_rows.phenomenon.dropna().unique() if p)
    fields = curves[curves.level == Level.FIELD]
    if phenomenon:
        if phenomenon not in phenomena:
            raise AnalysisError(f"no phenomenon {phenomenon!r} in the table; phenomena: {', '.join(phenomena)}")
        phenomena = [phenomenon]
        curves, fields = curves[curves.phenomenon == phenomenon], fields.iloc[:0]
    grammar = curves[curves.phenomenon.isin(phenomena) & (curves.level != Level.FIELD)]
    paths = []
    if (grammar.level == Level.PHENOMENON).any():
        paths += phenomenon_grid(grammar, out_dir, x, stages, ngram)
        if x != "loss":
            paths += [p for model in sorted(grammar.model.unique()) for p in heatmap(grammar, model, out_dir)]
            if grammar[grammar.level == Level.PHENOMENON].dropna(subset=["params"]).model.nunique() >= 2:
                paths += scaling(grammar, out_dir)
    if len(fields):
        paths += field_grid(fields, out_dir, x)
    paths += [p for name in phenomena if ((grammar.phenomenon == name) & (grammar.level == Level.PARADIGM)).any()
              for p in paradigm_grid(grammar, name, out_dir, x, stages, ngram)]
    if not phenomenon and x != "loss" and (curves.phenomenon.fillna("") == "").any():
        paths += other_metrics(curves, out_dir, x)
    if not paths:
        raise AnalysisError("the curve table holds nothing to plot")
    return paths


# ---------------------------------------------------------------------------------------------------- memorization
def _at_last_checkpoint(table: pd.DataFrame, step: str = "step") -> pd.DataFrame:
    """Each model's rows at its own last checkpoint."""
    return table[table[step] == table.groupby("model")[step].transform("max")]


def _model_lines(ax, rows: pd.DataFrame, x: str, y: str, styles: dict, log: bool = False) -> None:
    """One line per model with its 95% interval (columns ci_low, ci_high) as error bars; models are set slightly
    apart along x so that equal values (often 0) stay readable."""
    models = sorted(rows.model.unique(), key=lambda m: styles[m]["order"])
    span = float(rows[x].max() - rows[x].min()) or 1.0
    for i, model in enumerate(models):
        line = rows[rows.model == model].sort_values(x)
        shift = (i - (len(models) - 1) / 2) * 0.06
        at = line[x] * 2**shift if log else line[x] + shift * span / 8
        style = styles[model]
        # Clipped at 0: an interval of a rate of 0 or 1 can miss it by a rounding error.
        yerr = np.clip([line[y] - line.ci_low, line.ci_high - line[y]], 0, None)
        ax.errorbar(at, line[y], yerr=yerr, color=style["color"], ls=style["linestyle"],
                    marker="s" if style["linestyle"] == ":" else "o", ms=3.5, lw=1.3, elinewidth=0.8, alpha=0.9)


def memorization_by_position(rates: pd.DataFrame, models: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Memorization rate against the step at which rows were seen, at each model's last checkpoint; a panel per
    row set (sampled rows, canaries)."""
    rows = _at_last_checkpoint(rates).assign(seen=lambda d: (d.seen_lo + d.seen_hi) / 2)
    styles = model_styles(models)
    sets = sorted(rows["rows"].unique(), reverse=True)  # sampled, then canaries
    fig, axes = plt.subplots(1, len(sets), figsize=(4.4 * len(sets), 3.4), squeeze=False)
    for ax, name in zip(axes.flat, sets, strict=True):
        _model_lines(ax, rows[rows["rows"] == name], "seen", "rate", styles)
        ax.set_title("sampled rows" if name == "sampled" else name, fontsize=10)
        ax.set_xlabel("step at which the rows were trained on")
        ax.xaxis.set_major_formatter(FuncFormatter(compact))
        ax.set_ylim(-0.03, 1.03)
    axes.flat[0].set_ylabel("share memorized (95% CI)")
    fig.suptitle("Memorization at each model's last checkpoint, by when rows were seen")
    fig.tight_layout()
    _legend(fig, styles, rows.model.unique(), chance=False)
    return save(fig, out_dir, "memorization_by_position")


def poisson_qq_plot(qq: pd.DataFrame, models: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Binned memorized counts of sampled rows against a Poisson of the same mean, at each model's last checkpoint:
    on the diagonal, memorization is spread over training like a Poisson process."""
    rows = _at_last_checkpoint(qq)
    styles = model_styles(models)
    names = sorted(rows.model.unique(), key=lambda m: styles[m]["order"])
    ncols = min(NCOLS, len(names))
    fig, axes = plt.subplots(math.ceil(len(names) / ncols), ncols, figsize=(3 * ncols, 3 * math.ceil(
        len(names) / ncols) + 0.5), squeeze=False)
    for ax, model in zip(axes.flat, names, strict=False):
        points = rows[rows.model == model]
        top = max(float(points[["poisson", "observed"]].max().max()), 1.0)
        ax.plot([0, top], [0, top], color="0.6", ls="--", lw=1)
        ax.scatter(points.poisson, points.observed, color=styles[model]["color"], s=14)
        ax.set_title(f"{model} step {compact(points.step.iloc[0])}", fontsize=10)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    fig.supxlabel("Poisson quantile (same mean)")
    fig.supylabel("memorized rows per bin of consecutive rows")
    fig.suptitle("Are memorized rows spread like a Poisson process? (Q-Q)")
    fig.tight_layout()
    return save(fig, out_dir, "poisson_qq")


def persistence_plot(persistence: pd.DataFrame, models: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Of the rows memorized at each checkpoint, the share still memorized at the model's last checkpoint."""
    rows = persistence[persistence.to_step == persistence.groupby("model").to_step.transform("max")]
    rows = rows.dropna(subset=["share"])
    if rows.empty:
        return []
    styles = model_styles(models)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    _model_lines(ax, rows, "from_step", "share", styles)
    ax.set_ylim(-0.03, 1.03)
    ax.xaxis.set_major_formatter(FuncFormatter(compact))
    ax.set_xlabel("checkpoint at which rows were memorized")
    ax.set_ylabel("share still memorized at the last (95% CI)")
    ax.set_title("Persistence: memorized rows that stay memorized")
    fig.tight_layout()
    _legend(fig, styles, rows.model.unique(), chance=False)
    return save(fig, out_dir, "persistence")


def repetition_plot(grid: pd.DataFrame, models: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Canaries memorized at each model's last checkpoint against their repetitions, a panel per third of training
    in which they were last seen."""
    rows = _at_last_checkpoint(grid)
    styles = model_styles(models)
    thirds = ["first third", "second third", "last third"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True, squeeze=False)
    for ax, third in zip(axes.flat, range(3), strict=True):
        _model_lines(ax, rows[rows.bin == third], "repetitions", "rate", styles, log=True)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_title(f"last seen in the {thirds[third]} of training", fontsize=10)
        ax.set_xlabel("repetitions in training")
        ax.set_ylim(-0.03, 1.03)
    axes.flat[0].set_ylabel("share of canaries memorized (95% CI)")
    fig.suptitle("Canaries: repetition and recency at each model's last checkpoint")
    fig.tight_layout()
    _legend(fig, styles, rows.model.unique(), chance=False)
    return save(fig, out_dir, "repetitions")


def memorization_figures(tables: dict[str, pd.DataFrame], models: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Every memorization figure the tables support (analysis.memorization_tables), under out_dir."""
    out_dir = Path(out_dir)
    paths = memorization_by_position(tables["memorization_by_position"], models, out_dir)
    if len(tables.get("canary_grid", ())):
        paths += repetition_plot(tables["canary_grid"], models, out_dir)
    if len(tables.get("poisson_qq", ())):
        paths += poisson_qq_plot(tables["poisson_qq"], models, out_dir)
    return paths + persistence_plot(tables["persistence"], models, out_dir)
