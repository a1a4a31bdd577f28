"""`trajectories analyze OUT`: run the acquisition analysis on a results folder and write OUT/report/:
acquisition.csv, order.csv, agreement.csv, dedup.csv, onedim.csv, suspicious.csv, report.md, and report.html
(self-contained: figures embedded as base64). Figures are (re)drawn under OUT/plots/.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from trajectories import analysis, plots
from trajectories.analysis import AnalysisError
from trajectories.curves import N_BOOT, read_items

CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1.5em}"
       "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}th{background:#f3f3f3}"
       "img{max-width:100%;margin:.5em 0}figcaption{font-size:.9em;color:#555;margin-bottom:1.5em}")


# ---------------------------------------------------------------------------------------------------- inputs
def read_results(out: Path) -> tuple[pd.DataFrame, dict[str, Path]]:
    """OUT's curve table and, per model, the item files of its completed units."""
    out = Path(out)
    if not out.is_dir():
        raise AnalysisError(f"{out} does not exist; give the --out folder of a sweep")
    path = out / "curves.parquet"
    if not path.exists():
        raise AnalysisError(f"{out} holds no curves.parquet; run `trajectories collect {out}` first")
    curves = analysis.check_curves(pd.read_parquet(path))
    files: dict[str, list[Path]] = {}
    for unit in sorted((out / "units").glob("*/step*.json")):
        items = unit.with_name(unit.name.removesuffix(".json") + ".items.parquet")
        if items.exists():  # a unit counts as done only with both files
            files.setdefault(unit.parent.name, []).append(items)
    return curves, files


def _per_model(curves: pd.DataFrame, item_files: dict[str, list[Path]], fraction: float, n_boot: int,
               seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    # One model's items at a time: a full suite's items do not need to fit in memory together.
    acq, suspicious = [], []
    grammar = analysis.grammar_units(curves)
    for model in sorted(curves.model.unique()):
        items = read_items(item_files.get(model, []))
        rows = curves[curves.model == model]
        if (grammar.model == model).any():
            acq.append(analysis.acquisition(rows, items, fraction, n_boot, seed))
            suspicious.append(analysis.suspicious_checkpoints(rows, items))
    if not acq:
        raise AnalysisError("the curve table holds no minimal-pair results (rows with a phenomenon) to analyse")
    found = [s for s in suspicious if len(s)]
    return pd.concat(acq, ignore_index=True), (pd.concat(found, ignore_index=True) if found else suspicious[0])


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
        names = [f"{t.removeprefix('phenomenon:')} ({_cell(s)})" for t, s in zip(rows.task, rows.acq_step, strict=True)]
        lines.append(f"{model}: " + " < ".join(names))
    return lines


# ---------------------------------------------------------------------------------------------------- document
def _summary(out: Path, curves: pd.DataFrame, item_files: dict) -> list[tuple]:
    grammar = analysis.grammar_units(curves)
    steps = curves.groupby("model").step.agg(["nunique", "min", "max"])
    lines = [
        f"Models: {len(steps)}; checkpoints per model: " + ", ".join(
            f"{m} {r['nunique']} (steps {r['min']:,}–{r['max']:,})" for m, r in steps.iterrows()) + ".",
        f"Minimal-pair tasks: {grammar[grammar.level == 'paradigm'].task.nunique()} paradigms in "
        f"{grammar.phenomenon.nunique()} phenomena. Other tasks and metrics: "
        f"{curves[curves.phenomenon.fillna('') == ''].task.nunique()}.",
        f"Models with per-item results: {len(item_files)} of {curves.model.nunique()}.",
        "CI methods in the curve table: " + "; ".join(
            f"{level} rows: " + ", ".join(f"{m} {n}" for m, n in g.ci_method.value_counts().items())
            for level, g in curves.groupby("level")) + ".",
    ]
    lines += _missing(out, curves)
    return [("h2", "Data"), *(("p", line) for line in lines)]


def _missing(out: Path, curves: pd.DataFrame) -> list[str]:
    lines = []
    manifest = out / "sweep.json"
    if manifest.exists():
        requested = {tuple(u) for u in json.loads(manifest.read_text()).get("requested", [])}
        have = set(zip(curves.model, curves.step, strict=True))
        missing = sorted(requested - have)
        if missing:
            shown = ", ".join(f"{m} step {s:,}" for m, s in missing[:20]) + (" …" if len(missing) > 20 else "")
            lines.append(f"Requested but absent from the curves ({len(missing)}): {shown}. Partial sweeps are "
                         "analysed as they are; re-run the sweep (and `trajectories collect`) to complete them.")
    for failed in sorted((out / "units").glob("*/step*.failed.json")):
        record = json.loads(failed.read_text())
        lines.append(f"Failed unit: {record.get('model')} step {record.get('step')}: {record.get('reason', '')[:200]}")
    return lines


def _acquisition_section(acq: pd.DataFrame, order: pd.DataFrame, fraction: float) -> list[tuple]:
    phen = acq[acq.level == "phenomenon"].assign(cell=lambda d: d.apply(_step_ci, axis=1))
    table = phen.pivot(index="task", columns="model", values="cell").rename(lambda t: t.removeprefix("phenomenon:"))
    methods = ", ".join(f"{m} for {n} units" for m, n in acq.ci_method.value_counts().items())
    return [
        ("h2", "Acquisition"),
        ("p", f"Acquisition step: the first checkpoint at which the isotonic (monotone) fit of a unit's accuracy "
              f"reaches {fraction:g} of the way from chance (0.5) to its final fitted value. 95% CIs are percentile "
              f"bootstrap intervals of that step; CI method: {methods} (bootstrap-items: items resampled per paradigm; "
              "stderr: draws from the reported standard errors). ∞ as an upper bound: some replicates never rise "
              "above chance. Not acquired: final accuracy within 1.96 standard errors of chance. A model's final value "
              "is at its own last checkpoint (last_step), so a model with fewer checkpoints is measured against "
              "less training. Every unit is in acquisition.csv."),
        ("table", table.reset_index().rename(columns={"task": "phenomenon"})),
        ("h3", "Acquisition order (phenomena)"),
        *(("p", line) for line in _orders(order, "phenomenon")),
    ]


def _agreement_section(agreement: pd.DataFrame) -> list[tuple]:
    blocks = [("h2", "Agreement of acquisition orders between models"),
              ("p", "Kendall's tau and Spearman's rho between two models' acquisition steps, over the units both "
                    "acquired (scipy.stats; p-values test no association).")]
    if agreement.empty:
        return [*blocks, ("p", "Fewer than two models: no pairs to compare.")]
    for level, rows in agreement.groupby("level"):
        blocks += [("h3", f"over {level} units"), ("table", rows.drop(columns="level"))]
    return blocks


def _figure_blocks(figures: list[Path]) -> list[tuple]:
    return [("h2", "Figures"), *(("fig", p) for p in figures if p.suffix == ".png")]


def _document(out: Path, curves, item_files, results: dict, fraction: float, figures: list[Path]) -> list[tuple]:
    suspicious = results["suspicious"]
    return [
        ("h1", f"Grammar acquisition report: {out.resolve().name}"),
        *_summary(out, curves, item_files),
        *_acquisition_section(results["acquisition"], results["order"], fraction),
        *_agreement_section(results["agreement"]),
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
        *_figure_blocks(figures),
    ]


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


# ---------------------------------------------------------------------------------------------------- entry
def analyze(curves: pd.DataFrame, item_files: dict[str, list[Path]], fraction: float = 0.5, n_boot: int = N_BOOT,
            seed: int = 0) -> dict[str, pd.DataFrame]:
    """Every analysis table, by the name of its CSV."""
    acq, suspicious = _per_model(curves, item_files, fraction, n_boot, seed)
    return {
        "acquisition": acq, "order": analysis.acquisition_order(acq), "agreement": analysis.order_agreement(acq),
        "dedup": analysis.dedup_differences(acq, curves), "onedim": analysis.one_dimensionality(curves),
        "suspicious": suspicious,
    }


def write_report(out: Path, fraction: float = 0.5, n_boot: int = N_BOOT, seed: int = 0) -> Path:
    """Analyse OUT and write OUT/report/ (CSVs, report.md, report.html); return the report folder."""
    out = Path(out)
    curves, item_files = read_results(out)
    results = analyze(curves, item_files, fraction, n_boot, seed)
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    for name, table in results.items():
        table.to_csv(report / f"{name}.csv", index=False)
    figures = plots.plot_all(curves, out / "plots")
    acq = results["acquisition"]
    if (acq.acquired & (acq.level == "phenomenon")).any():
        figures = plots.acquisition_plot(acq, curves, out / "plots") + figures
    blocks = _document(out, curves, item_files, results, fraction, figures)
    (report / "report.md").write_text(to_markdown(blocks, out))
    (report / "report.html").write_text(to_html(blocks, f"Grammar acquisition report: {out.resolve().name}"))
    return report
