"""Figures of learning curves (PNG and SVG), drawn from the curve table alone.

Every figure encodes a model the same way: colour = model size ordered by parameter count, solid = standard data,
dotted = deduplicated data. Steps (or tokens) are on a symlog axis, so step 0 and the log-spaced early checkpoints
are visible; the dashed grey line is chance (0.5) for minimal-pair tasks. On the curves, an open circle marks a
checkpoint whose weights are identical to an earlier step's (`same_weights_as`): its value is that step's. Where
checkpoints were skipped (a coarse-to-fine sweep cut short, an adaptive sweep: `skipped_from`), a dot marks each
evaluated checkpoint, so a straight stretch between dots reads as interpolated, not measured.
"""

from __future__ import annotations

import fnmatch
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from trajectories.analysis import CHANCE, AnalysisError, check_curves  # noqa: E402
from trajectories.schema import Level, display_name  # noqa: E402

FORMATS = ("png", "svg")
X_LABELS = {"step": "training step (symlog scale)", "tokens": "tokens seen (symlog scale)"}
NCOLS = 4


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


def _legend(fig, styles: dict, models, chance: bool, same_weights: bool = False, skipped: bool = False) -> None:
    """Sizes and variants of the models drawn (colours stay those of the whole table)."""
    styles = {m: styles[m] for m in models}
    handles = [Line2D([], [], color=s["color"], lw=2, label=s["size"])
               for s in sorted(styles.values(), key=lambda s: s["order"])]
    handles = list({h.get_label(): h for h in handles}.values())
    if any(s["linestyle"] == ":" for s in styles.values()):
        handles += [Line2D([], [], color="0.2", ls="-", label="standard"),
                    Line2D([], [], color="0.2", ls=":", lw=2, label="deduped")]
    if chance:
        handles.append(Line2D([], [], color="0.5", ls="--", lw=1, label="chance"))
    if same_weights:
        handles.append(Line2D([], [], color="0.2", ls="", marker="o", mfc="none", label="same weights as an\n"
                                                                                         "earlier step"))
    if skipped:
        handles.append(Line2D([], [], color="0.2", ls="", marker=".", label="evaluated checkpoint\n(lines between: "
                                                                             "interpolated)"))
    fig.legend(handles=handles, title="model size", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def _x_column(curves: pd.DataFrame, x: str) -> str:
    if x not in X_LABELS:
        raise AnalysisError(f"x must be one of {', '.join(X_LABELS)}, not {x!r}")
    if curves[x].isna().all():
        raise AnalysisError(f"the curve table has no {x} values (tokens per step unknown for this suite); use x='step'")
    return x


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
              x: str = "step", styles: dict | None = None, chance: bool = True) -> list[Path]:
    """One panel per value of `panel`, one line per model with its CI band."""
    if data.empty:
        raise AnalysisError(f"no rows to draw for {stem!r}")
    styles = styles or model_styles(data)
    x = _x_column(data, x)
    panels = sorted(data[panel].unique())
    skipped = "skipped_from" in data and bool(data.skipped_from.notna().any())
    ncols = min(NCOLS, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.6 * nrows + 0.6), sharex=True,
                             sharey=chance, squeeze=False)
    for ax, name in zip(axes.flat, panels, strict=False):
        rows = data[data[panel] == name]
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
        _symlog(ax, data[x])
        ax.tick_params(labelbottom=True)  # shared x, but a panel above an empty slot still needs its ticks
        ax.set_title(display_name(str(name)), fontsize=10)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.supxlabel(X_LABELS[x])
    fig.supylabel(ylabel)
    fig.tight_layout()
    _legend(fig, styles, data.model.unique(), chance,
            "same_weights_as" in data and bool(data.same_weights_as.notna().any()), skipped)
    return save(fig, out_dir, stem)


def phenomenon_grid(curves: pd.DataFrame, out_dir: Path, x: str = "step") -> list[Path]:
    rows = curves[curves.level == Level.PHENOMENON]
    return line_grid(rows, "phenomenon", out_dir, "phenomena", "Accuracy per phenomenon over training (95% CI)",
                     "accuracy (mean over paradigms)", x, model_styles(curves))


def paradigm_grid(curves: pd.DataFrame, phenomenon: str, out_dir: Path, x: str = "step") -> list[Path]:
    rows = curves[(curves.level == Level.PARADIGM) & (curves.phenomenon == phenomenon)]
    return line_grid(rows, "task", out_dir, f"paradigms_{phenomenon}",
                     f"Paradigms of {phenomenon} over training (95% CI)", "accuracy", x, model_styles(curves))


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


# ---------------------------------------------------------------------------------------------------- all
def plot_all(curves: pd.DataFrame, out_dir: Path, x: str = "step", phenomenon: str | None = None,
             task: str | None = None) -> list[Path]:
    """Every figure the table supports, under out_dir; returns the written paths.

    phenomenon: only that phenomenon's figures; task: a task name or glob (e.g. "lambada*"), only its curves."""
    curves = check_curves(curves)
    out_dir = Path(out_dir)
    _x_column(curves, x)
    if task:
        rows = curves[curves.task.map(lambda t: fnmatch.fnmatch(t, task))]
        if rows.empty:
            raise AnalysisError(f"no task matches {task!r}; tasks: {', '.join(sorted(curves.task.unique()))}")
        minimal_pairs = (rows.phenomenon.fillna("") != "").all()
        return line_grid(rows, "task", out_dir, f"task_{task}", f"{task} over training", "accuracy"
                         if minimal_pairs else "value", x, model_styles(curves), chance=minimal_pairs)
    phenomena = sorted(p for p in curves.phenomenon.dropna().unique() if p)
    if phenomenon:
        if phenomenon not in phenomena:
            raise AnalysisError(f"no phenomenon {phenomenon!r} in the table; phenomena: {', '.join(phenomena)}")
        phenomena = [phenomenon]
        curves = curves[curves.phenomenon == phenomenon]
    grammar = curves[curves.phenomenon.isin(phenomena)]
    paths = []
    if (grammar.level == Level.PHENOMENON).any():
        paths += phenomenon_grid(grammar, out_dir, x)
        paths += [p for model in sorted(grammar.model.unique()) for p in heatmap(grammar, model, out_dir)]
        if grammar[grammar.level == Level.PHENOMENON].dropna(subset=["params"]).model.nunique() >= 2:
            paths += scaling(grammar, out_dir)
    paths += [p for name in phenomena if ((grammar.phenomenon == name) & (grammar.level == Level.PARADIGM)).any()
              for p in paradigm_grid(grammar, name, out_dir, x)]
    if not phenomenon and (curves.phenomenon.fillna("") == "").any():
        paths += other_metrics(curves, out_dir, x)
    if not paths:
        raise AnalysisError("the curve table holds nothing to plot")
    return paths
