"""Import lm-eval results JSON files (0.3 and 0.4 layouts) from other runs as curve rows, and the per-item results
of their samples files.

Model and step come from the file's model_args (`pretrained=...,revision=step<N>`), else the step from its file name
(`...step<N>...`), never from folders above it; files that `trajectories export` wrote say them exactly (the
"trajectories" key). Each file's line on stderr says where its step came from; two files with results for the same
model, step and task are refused. A task's `acc` is a paradigm row when the task is a minimal-pair paradigm (it has a
phenomenon: in its config's metadata, as our task YAMLs record it, or known here), else a metric row; every other
numeric metric becomes a metric row named "<task>/<metric>" (e.g. "lambada_openai/perplexity"), its value in `acc`
and its stderr in `acc_stderr`. A paradigm's items come from lm-eval's `samples_<task>_<date>.jsonl` beside
`results_<date>.json` (written with `--log_samples`), so its confidence intervals are bootstrapped over items as for
a sweep.
"""

from __future__ import annotations

import glob
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trajectories.errors import UserError
from trajectories.schema import (
    CURVE_COLUMNS,
    CURVE_DTYPES,
    CURVE_KEY,
    CURVE_OPTIONAL_COLUMNS,
    CURVE_OPTIONAL_DTYPES,
    ITEM_COLUMNS,
    Level,
    ModelInfo,
)
from trajectories.stats import Z95
from trajectories.tasks import TaskCatalog


class ResultsImportError(UserError):
    """An lm-eval results file cannot be imported; the message names the file and what is missing."""


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


def _checkpoint_of(path: Path, data: dict) -> tuple[ModelInfo, int, int | None, int | None, str]:
    """The model (from pretrained=..., else lm-eval's model name), step, tokens (when known), same_weights_as, and
    where the step came from: the file's model_args (revision=step<N>, or a pretrained=<model>/step<N> folder), else
    the file's own name. Folders above the file say nothing: results of a final model kept under `step7/` are not
    step 7."""
    if isinstance(ours := data.get("trajectories"), dict):  # written by `trajectories export`: exact
        return (ModelInfo.from_dict(ours["model"]), int(ours["step"]), ours.get("tokens"),
                ours.get("same_weights_as"), "its trajectories record")
    config = data.get("config") or {}
    args = _model_args(config)
    source = str(args.get("pretrained") or data.get("model_name") or config.get("model") or "")
    if _step_in(Path(source).name) is not None:  # a local checkpoint folder <model>/step<N>
        source = str(Path(source).parent)
    if not source or source in ("hf", "hf-causal", "hf-auto", "huggingface", "vllm"):
        raise ResultsImportError(f"{path}: the file does not say which model it evaluated (no pretrained=...)")
    candidates = (("model_args revision", args.get("revision", "")),
                  ("config model_revision", config.get("model_revision", "")),
                  ("model_args pretrained", Path(str(args.get("pretrained", ""))).name), ("the file name", path.name))
    step, where = next(((s, where) for where, text in candidates if (s := _step_in(text)) is not None), (None, ""))
    if step is None:
        raise ResultsImportError(
            f"{path}: cannot tell the training step: no revision=step<N> in its model_args and no step<N> in its "
            "file name; rename it to include step<N>"
        )
    model = _model_info(source, config.get("model_num_parameters"))
    return model, step, step * model.tokens_per_step if model.tokens_per_step else None, None, where


def metric_rows(data: dict) -> list[dict]:
    """(task, value, stderr, n) per numeric metric: `acc` keeps the task's name, others become "<task>/<metric>".
    Groups (lm-eval 0.4 lists them among the results too) are left out: phenomenon rows are computed here."""
    n_samples = data.get("n-samples") or {}
    rows = []
    for task, metrics in data["results"].items():
        if task in (data.get("groups") or {}):
            continue
        n = (n_samples.get(task) or {}).get("effective") or metrics.get("sample_len")
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")  # 0.4 names are "<metric>,<filter>"; 0.3 names are bare
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if not numeric or metric.endswith("_stderr") or metric in ("sample_len", "sample_count"):
                continue
            stderr = metrics.get(f"{metric}_stderr" + (f",{filt}" if filt else ""))
            label = metric if filt in ("", "none") else key
            rows.append({
                "level": Level.PARADIGM if label == "acc" else Level.METRIC,
                "task": task if label == "acc" else f"{task}/{label}", "acc": float(value),
                "acc_stderr": float(stderr) if isinstance(stderr, int | float) else np.nan, "n": n,
            })
    return rows


def _import_one(path: Path) -> pd.DataFrame:
    data = _read_results_json(path)
    model, step, tokens, same_weights_as, where = _checkpoint_of(path, data)
    rows = metric_rows(data)
    if not rows:
        raise ResultsImportError(f"{path}: its results hold no numeric metrics")
    print(f"import {path}: {model.name} step {step} (the step from {where})", file=sys.stderr)
    configs = data.get("configs") or {}
    table = pd.DataFrame(rows).assign(
        model=model.name, size=model.size, params=model.params, deduped=model.deduped, step=step, tokens=tokens,
        ci_method="stderr", same_weights_as=same_weights_as, seed=model.seed, grouping="",
    )
    table["phenomenon"] = table.task.map(lambda task: _config_phenomenon(configs.get(task)))
    table["ci_low"], table["ci_high"] = table.acc - Z95 * table.acc_stderr, table.acc + Z95 * table.acc_stderr
    return table


def _config_phenomenon(config) -> str:
    metadata = config.get("metadata") if isinstance(config, dict) else None
    return str(metadata.get("phenomenon") or "") if isinstance(metadata, dict) else ""


def _samples_items(results: Path, model: str, step: int, task: str) -> pd.DataFrame | None:
    """Items of one task from lm-eval's samples file beside `results` (None if there is none): the target choice's
    log-prob against the best other choice's, and lm-eval's acc, as a sweep records them (evaluate.items_of)."""
    date = results.stem.removeprefix("results_")
    path = results.with_name(f"samples_{task}_{date}.jsonl")
    if not path.is_file():
        return None
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
            logps = [float(resp[0]) for resp in sample["filtered_resps"]]
            target = int(sample["target"])
            others = [lp for i, lp in enumerate(logps) if i != target]
            rows.append((model, step, task, int(sample["doc_id"]), logps[target], max(others), bool(sample["acc"])))
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise ResultsImportError(f"{path}:{n}: not a multiple-choice sample with acc ({err!r})") from err
    return pd.DataFrame(rows, columns=list(ITEM_COLUMNS))


@dataclass(frozen=True)
class Imported:
    curves: pd.DataFrame  # paradigm and metric rows (schema.CURVE_COLUMNS)
    items: pd.DataFrame  # per-item results of the paradigms whose samples files were found (schema.ITEM_COLUMNS)


def import_lm_eval_json(paths: list[str | Path]) -> Imported:
    """Curve rows (paradigm and metric level) from lm-eval results JSON files, 0.3 or 0.4 layout, and the items of
    their paradigms from the samples files beside them.

    Model and step come from the file's model_args (`pretrained=...,revision=step<N>`), else the step from its
    file name (`...step<N>...`); a file whose step cannot be found raises ResultsImportError, and so do two files
    with results for the same model, step and task (which one holds the truth is not ours to guess)."""
    files = [(path, _import_one(path)) for path in dict.fromkeys(Path(p).resolve() for p in paths)]
    if not files:
        raise ResultsImportError("no lm-eval results files to import")
    first: dict[tuple, Path] = {}
    for path, table in files:
        for model, step, task in zip(table.model, table.step, table.task, strict=True):
            if (other := first.setdefault((model, step, task), path)) != path:
                raise ResultsImportError(f"{other} and {path} both hold {model} step {step} ({task}); import one of "
                                         "them")
    catalog = TaskCatalog()
    known: dict[str, str] = {}
    for _, table in files:
        unknown = (table.level == Level.PARADIGM) & (table.phenomenon == "")
        table.loc[unknown, "phenomenon"] = table.task[unknown].map(
            lambda task: known.setdefault(task, catalog.phenomenon(task)))
        # An accuracy is a paradigm's only when the task is a minimal-pair paradigm (it has a phenomenon).
        table.loc[(table.level == Level.PARADIGM) & (table.phenomenon == ""), "level"] = Level.METRIC
    curves = pd.concat([t for _, t in files], ignore_index=True).drop_duplicates(list(CURVE_KEY), keep="last")
    curves["level"] = curves.level.astype(str)
    items, taken = [], set()
    for path, table in reversed(files):  # a paradigm's items come from the file its row came from: the last
        for row in table[table.level == Level.PARADIGM].itertuples():
            if (row.model, row.step, row.task) not in taken:
                taken.add((row.model, row.step, row.task))
                items.append(_samples_items(path, row.model, row.step, row.task))
    items = [i for i in items if i is not None]
    items = pd.concat(items, ignore_index=True) if items else pd.DataFrame(columns=list(ITEM_COLUMNS))
    columns = [*CURVE_COLUMNS, *CURVE_OPTIONAL_COLUMNS]
    return Imported(curves.reindex(columns=columns).reset_index(drop=True).astype(CURVE_DTYPES | CURVE_OPTIONAL_DTYPES),
                    items)


def expand_imports(patterns: list[str | Path] | str) -> list[Path]:
    """Files named by paths or glob patterns (`**` allowed); a pattern that matches nothing is an error."""
    paths = []
    for pattern in [patterns] if isinstance(patterns, str | Path) else patterns:
        found = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
        if not found:
            raise ResultsImportError(f"--import {pattern}: no such files")
        paths += [Path(p) for p in found if Path(p).is_file()]
    return paths
