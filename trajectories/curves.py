"""Collect: turn a sweep's stored units, and lm-eval results JSON files from other runs, into the tidy
learning-curve table (schema.CURVE_COLUMNS).

Rows by `level`:
  "paradigm"    a task's accuracy at one (model, step) (any task: BLiMP paradigms, user tasks, imported tasks);
  "phenomenon"  the mean of a phenomenon's paradigm accuracies, task = "phenomenon:<name>";
  "metric"      any other metric lm-eval reported for a task, task = "<task>/<metric>" (e.g.
                "lambada_openai/perplexity"); the value is in the `acc` column and its stderr in `acc_stderr`.
Tasks without a phenomenon (phenomenon "") are kept, so any lm-eval metric can be followed over training.

Confidence intervals (95%): where per-item results exist, a percentile bootstrap over items ("bootstrap-items"):
items are resampled within each paradigm, and a phenomenon's replicate is the mean of its paradigms' replicates.
Otherwise acc ± 1.96 × the reported standard error ("stderr"); a phenomenon's stderr combines its paradigms'.

Imported results (`collect(out, imports=...)`) are parsed once and kept in OUT/imported.parquet, so a later
collect (every sweep runs one) keeps them. A sweep's own row wins over an imported row for the same
(model, step, task); among imports, the file read last wins.
"""

from __future__ import annotations

import glob
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trajectories.errors import UserError
from trajectories.schema import CURVE_COLUMNS, ModelInfo
from trajectories.store import Store, StoreError, write_table
from trajectories.tasks import TaskCatalog

Z95 = 1.959963984540054
N_BOOT = 1000
KEY = ["model", "step", "level", "task"]
DTYPES = {"params": "Int64", "tokens": "Int64", "step": "int64", "n": "Int64", "deduped": "bool"}


class ResultsImportError(UserError):
    """An lm-eval results file cannot be imported; the message names the file and what is missing."""


def curves_from_units(units: list[dict]) -> pd.DataFrame:
    """One paradigm-level row per (model, step, task) from unit records (the units' json)."""
    rows = []
    for unit in units:
        model = unit["model"]
        for task, result in unit["tasks"].items():
            acc, stderr = result["acc"], result["acc_stderr"]
            rows.append({
                "model": model["name"], "size": model["size"], "params": model.get("params"),
                "deduped": bool(model.get("deduped")), "step": unit["step"], "tokens": unit.get("tokens"),
                "level": "paradigm", "task": task, "phenomenon": result.get("phenomenon", ""),
                "acc": acc, "acc_stderr": stderr, "ci_low": acc - Z95 * stderr, "ci_high": acc + Z95 * stderr,
                "ci_method": "stderr", "n": result["n"],
            })
    return _typed(pd.DataFrame(rows, columns=list(CURVE_COLUMNS)))


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    return table.astype(DTYPES)


# ---------------------------------------------------------------------------------------------------- bootstrap
@dataclass
class Replicates:
    """Accuracy replicates of one (model, task or phenomenon) curve: reps[i, b] is replicate b at steps[i]."""

    steps: np.ndarray
    acc: np.ndarray
    reps: np.ndarray
    from_items: np.ndarray  # per step: replicates resampled from items (else drawn around acc with its stderr)


def bootstrap_items(correct: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Accuracy replicates (steps x n_boot) from a steps x items 0/1 matrix (NaN: item not run at that step).

    The same resampled items are used at every step, so a replicate is one redraw of the test set and
    differences between steps keep their pairing; per step it is the ordinary bootstrap over items."""
    present = ~np.isnan(correct)
    n_items = correct.shape[1]
    counts = rng.multinomial(n_items, np.full(n_items, 1 / n_items), size=n_boot).T
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(present, correct, 0.0) @ counts) / (present @ counts)


def _rng(seed: int, *keys: str) -> np.random.Generator:
    # Seeded per curve, so a curve's replicates do not change when other models or tasks are added.
    return np.random.default_rng([seed, zlib.crc32("/".join(keys).encode())])


def task_replicates(rows: pd.DataFrame, items: pd.DataFrame | None, n_boot: int = N_BOOT, seed: int = 0) -> Replicates:
    """Replicates of one (model, task) curve: items resampled at steps that have items, normal draws around acc
    with the reported stderr at steps that do not (imported results)."""
    rows = rows.sort_values("step")
    steps, acc = rows.step.to_numpy(), rows.acc.to_numpy(float)
    rng = _rng(seed, rows.model.iloc[0], rows.task.iloc[0])
    reps = acc[:, None] + rows.acc_stderr.to_numpy(float)[:, None] * rng.standard_normal((len(steps), n_boot))
    has_items = np.zeros(len(steps), bool)
    if items is not None and len(items):
        correct = items.pivot_table(index="step", columns="item", values="correct", aggfunc="mean")
        has_items = np.isin(steps, correct.index)
        if has_items.any():
            matrix = correct.reindex(steps[has_items]).to_numpy(float)
            reps[has_items] = bootstrap_items(matrix, n_boot, rng)
    return Replicates(steps, acc, reps, has_items)


def model_replicates(paradigms: pd.DataFrame, items: pd.DataFrame | None, n_boot: int = N_BOOT,
                     seed: int = 0) -> dict[str, Replicates]:
    """Replicates of every paradigm of one model (keyed by task) and of every phenomenon (keyed
    "phenomenon:<name>", the mean over its paradigms at the steps where any were measured)."""
    by_task = dict(tuple(items.groupby("task"))) if items is not None and len(items) else {}
    out = {task: task_replicates(rows, by_task.get(task), n_boot, seed) for task, rows in paradigms.groupby("task")}
    for phenomenon, rows in paradigms[paradigms.phenomenon != ""].groupby("phenomenon"):
        parts = [out[task] for task in rows.task.unique()]
        steps = np.unique(np.concatenate([p.steps for p in parts]))
        acc = np.full((len(parts), len(steps)), np.nan)
        reps = np.full((len(parts), len(steps), n_boot), np.nan)
        from_items = np.ones((len(parts), len(steps)), bool)
        for i, part in enumerate(parts):
            at = np.searchsorted(steps, part.steps)
            acc[i, at], reps[i, at], from_items[i, at] = part.acc, part.reps, part.from_items
        out[f"phenomenon:{phenomenon}"] = Replicates(
            steps, np.nanmean(acc, 0), np.nanmean(reps, 0), from_items.all(0)
        )
    return out


def with_phenomena(table: pd.DataFrame, items: pd.DataFrame | None = None, n_boot: int = N_BOOT,
                   seed: int = 0) -> pd.DataFrame:
    """Add phenomenon rows, and bootstrap CIs to paradigm rows that have items (items: ITEM_COLUMNS, any models)."""
    table = table[table.level != "phenomenon"]
    paradigms = table[(table.level == "paradigm") & table.acc.notna()]
    items_by_model = dict(tuple(items.groupby("model"))) if items is not None and len(items) else {}
    boot, phenomena = [], []
    for model, rows in paradigms.groupby("model"):
        model_items = items_by_model.get(model)
        # Without items there is nothing to resample: CIs stay closed-form from the stderr.
        reps = model_replicates(rows, model_items, n_boot, seed) if model_items is not None else {}
        for task, rep in reps.items():
            at = rep.from_items
            low, high = np.quantile(rep.reps[at], [0.025, 0.975], axis=1)
            boot.append(pd.DataFrame({"model": model, "step": rep.steps[at], "task": task, "boot_low": low,
                                      "boot_high": high, "boot_se": rep.reps[at].std(axis=1)}))
        phenomena.append(_phenomenon_rows(rows))
    table = pd.concat([table, *phenomena], ignore_index=True)
    if boot:
        table = table.merge(pd.concat(boot), on=["model", "step", "task"], how="left")
        use = table.boot_low.notna()
        table.loc[use, "ci_low"], table.loc[use, "ci_high"] = table.boot_low[use], table.boot_high[use]
        table.loc[use, "ci_method"] = "bootstrap-items"
        # A phenomenon's stderr is the bootstrap's; a paradigm keeps lm-eval's own.
        table.loc[use & (table.level == "phenomenon"), "acc_stderr"] = table.boot_se
        table = table.drop(columns=["boot_low", "boot_high", "boot_se"])
    return _typed(table[list(CURVE_COLUMNS)].sort_values(["model", "level", "task", "step"], ignore_index=True))


def _phenomenon_rows(paradigms: pd.DataFrame) -> pd.DataFrame:
    grouped = paradigms[paradigms.phenomenon != ""].groupby(["step", "phenomenon"])
    rows = grouped.agg(
        model=("model", "first"), size=("size", "first"), params=("params", "first"),
        deduped=("deduped", "first"), tokens=("tokens", "first"), acc=("acc", "mean"),
        var=("acc_stderr", lambda se: (se**2).sum() / len(se) ** 2), n=("n", lambda n: n.sum(min_count=1)),
    ).reset_index()
    rows["acc_stderr"] = np.sqrt(rows.pop("var"))
    rows["ci_low"], rows["ci_high"] = rows.acc - Z95 * rows.acc_stderr, rows.acc + Z95 * rows.acc_stderr
    return rows.assign(level="phenomenon", task="phenomenon:" + rows.phenomenon, ci_method="stderr")


# ---------------------------------------------------------------------------------------------------- import
def _model_args(config: dict) -> dict:
    args = config.get("model_args") or {}
    if isinstance(args, str):
        args = dict(kv.split("=", 1) for kv in args.split(",") if "=" in kv)
    return args


def _step_in(text: str) -> int | None:
    found = re.findall(r"step[-_]?(\d+)", str(text))
    return int(found[-1]) if found else None


def _model_info(name: str, params: int | None) -> ModelInfo:
    from trajectories.suites import PYTHIA, SuiteError

    if re.search(r"(^|/)pythia-", name, re.I):
        try:
            return PYTHIA.model(name)
        except SuiteError:
            pass  # not one of the suite's models (e.g. a fine-tune): described from its name below
    short = name.rstrip("/").split("/")[-1]
    deduped = bool(re.search(r"dedup", short, re.I))
    return ModelInfo(name=short, size=re.sub(r"[-_]dedup(ed)?$", "", short), params=params, deduped=deduped)


def _read_results_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResultsImportError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ResultsImportError(f"{path}: no 'results' dict; not an lm-eval results file")
    return data


def _checkpoint_of(path: Path, data: dict) -> tuple[ModelInfo, int]:
    """The model (from pretrained=..., else lm-eval's model name) and step (revision=step<N>, else a step<N> in
    the model path, the file name or its folders') a results file describes."""
    config = data.get("config") or {}
    args = _model_args(config)
    source = str(args.get("pretrained") or data.get("model_name") or config.get("model") or "")
    if _step_in(Path(source).name) is not None:  # a local checkpoint folder <model>/step<N>
        source = str(Path(source).parent)
    if not source or source in ("hf", "hf-causal", "hf-auto", "huggingface", "vllm"):
        raise ResultsImportError(f"{path}: the file does not say which model it evaluated (no pretrained=...)")
    candidates = (args.get("revision", ""), config.get("model_revision", ""), args.get("pretrained", ""), path.name,
                  *(p.name for p in path.parents))
    step = next((s for s in map(_step_in, candidates) if s is not None), None)
    if step is None:
        raise ResultsImportError(
            f"{path}: cannot tell the training step: no revision=step<N> in its model_args and no step<N> in its "
            "file or folder name; rename it to include step<N>"
        )
    return _model_info(source, config.get("model_num_parameters")), step


def _metric_rows(data: dict) -> list[dict]:
    """(task, value, stderr, n) per numeric metric: `acc` keeps the task's name, others become "<task>/<metric>"."""
    n_samples = data.get("n-samples") or {}
    rows = []
    for task, metrics in data["results"].items():
        n = (n_samples.get(task) or {}).get("effective") or metrics.get("sample_len")
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")  # 0.4 names are "<metric>,<filter>"; 0.3 names are bare
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if not numeric or metric.endswith("_stderr") or metric in ("sample_len", "sample_count"):
                continue
            stderr = metrics.get(f"{metric}_stderr" + (f",{filt}" if filt else ""))
            label = metric if filt in ("", "none") else key
            rows.append({
                "level": "paradigm" if label == "acc" else "metric",
                "task": task if label == "acc" else f"{task}/{label}", "acc": float(value),
                "acc_stderr": float(stderr) if isinstance(stderr, int | float) else np.nan, "n": n,
            })
    return rows


def _import_one(path: Path) -> pd.DataFrame:
    data = _read_results_json(path)
    model, step = _checkpoint_of(path, data)
    rows = _metric_rows(data)
    if not rows:
        raise ResultsImportError(f"{path}: its results hold no numeric metrics")
    table = pd.DataFrame(rows).assign(
        model=model.name, size=model.size, params=model.params, deduped=model.deduped, step=step,
        tokens=step * model.tokens_per_step if model.tokens_per_step else None, ci_method="stderr",
    )
    table["ci_low"], table["ci_high"] = table.acc - Z95 * table.acc_stderr, table.acc + Z95 * table.acc_stderr
    return table


def import_lm_eval_json(paths: list[str | Path]) -> pd.DataFrame:
    """Curve rows (paradigm and metric level) from lm-eval results JSON files, 0.3 or 0.4 layout.

    Model and step come from the file's model_args (`pretrained=...,revision=step<N>`), else the step from its
    file or folder names (`...step<N>...`); a file whose step cannot be found raises ResultsImportError."""
    frames = [_import_one(Path(p)) for p in paths]
    if not frames:
        raise ResultsImportError("no lm-eval results files to import")
    table = pd.concat(frames, ignore_index=True).drop_duplicates(KEY, keep="last")
    catalog = TaskCatalog()
    tasks = table.task[table.level == "paradigm"].unique()
    table["phenomenon"] = table.task.map({t: catalog.phenomenon(t) for t in tasks}).fillna("")
    return _typed(table[list(CURVE_COLUMNS)].reset_index(drop=True))


def expand_imports(patterns: list[str | Path] | str) -> list[Path]:
    """Files named by paths or glob patterns (`**` allowed); a pattern that matches nothing is an error."""
    paths = []
    for pattern in [patterns] if isinstance(patterns, str | Path) else patterns:
        found = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
        if not found:
            raise ResultsImportError(f"--import {pattern}: no such files")
        paths += [Path(p) for p in found if Path(p).is_file()]
    return paths


# ---------------------------------------------------------------------------------------------------- collect
def read_items(paths: list[Path]) -> pd.DataFrame | None:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True) if paths else None


def collect(out: str | Path, imports: list[str | Path] | str | None = None, n_boot: int = N_BOOT,
            seed: int = 0) -> pd.DataFrame:
    """Rebuild OUT/curves.parquet and OUT/curves.csv from OUT's completed units and imported results (added to
    OUT/imported.parquet by `imports`: paths or globs of lm-eval results JSON files); return the table."""
    store = Store(out)
    imported_path = store.out / "imported.parquet"
    if imports:
        new = import_lm_eval_json(expand_imports(imports))
        old = pd.read_parquet(imported_path) if imported_path.exists() else None
        both = pd.concat([old, new], ignore_index=True) if old is not None else new
        write_table(_typed(both.drop_duplicates(KEY, keep="last")), imported_path)
    imported = pd.read_parquet(imported_path) if imported_path.exists() else None
    if imported is None:
        store.spec()  # a clear error if OUT is neither a sweep folder nor holds imports
    units = store.done_units() if (store.out / "sweep.json").exists() else []
    if not units and imported is None:
        raise StoreError(f"{store.out} has no completed units yet; `trajectories status {store.out}` shows why")
    parts = [t for t in (curves_from_units(units), imported) if t is not None and len(t)]
    table = pd.concat(parts, ignore_index=True).drop_duplicates(KEY, keep="first")
    # One model's items at a time: a full suite's items need not fit in memory together.
    done = {}
    for unit in units:
        done.setdefault(unit["model"]["name"], []).append(store.units / unit["model"]["name"] /
                                                          f"step{unit['step']}.items.parquet")
    table = pd.concat([with_phenomena(rows, read_items(done.get(model, [])), n_boot, seed)
                       for model, rows in table.groupby("model")], ignore_index=True)
    write_table(table, store.out / "curves.parquet")
    write_table(table, store.out / "curves.csv")
    return table
