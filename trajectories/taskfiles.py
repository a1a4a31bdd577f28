"""The one writer of task folders, used by `tasks add` and by the demo grammar: data-only lm-eval YAMLs sharing one
`include:` template, like lm-eval's own BLiMP tasks.

    <folder>/_template_yaml          what every task of the family shares (scoring, metric)
    <folder>/<paradigm>.yaml         include: _template_yaml, the task's name, its data file and metadata
    <folder>/<paradigm>.jsonl        one pair per line; `choices` = [good, bad] (and `prefix` for shared-prefix tasks)
    <folder>/_<family>.yaml          the group of the family's tasks
    <folder>/README.md               optional

A text family (`write_text_task`: held-out text scored by its loss) is one task: `<task>.yaml` and `<task>.jsonl`
(one document per line, field `text`), scored by lm-eval's loglikelihood_rolling (word and byte perplexity, bits
per byte).

User text lives only in the jsonl files. The YAMLs name fields (`doc_to_choice: choices`, `doc_to_text: prefix`) and
never hold templates over the text or code, so nothing in lm-eval renders, parses or evaluates a sentence. lm-eval
scores `target_delimiter + choice` (" " + sentence, as in its own BLiMP tasks) after the prefix, or after the
model's BOS/EOS token when there is none.

Stock lm-eval reads a relative `data_files` path against the working directory, not the YAML's folder (the only
paths it resolves beside a YAML are `include:` and `!function`; `datasets` resolves data files against the working
directory, or against `dataset_path`/`data_dir`, which are themselves relative to it). So a family's folder names its
data relative to itself, which keeps it movable (it ships inside the package, and users share it), and
`export_family` writes a copy for stock lm-eval whose YAMLs name the copied data by absolute path:
`lm_eval --include_path DIR` then runs it from any working directory.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from trajectories.files import atomic_dir
from trajectories.tasks import TaskError

TEMPLATE = "_template_yaml"  # lm-eval's name for a shared include; not itself indexed as a task


@dataclass(frozen=True)
class TaskFile:
    """One task of a family: a paradigm's pairs and what to record about them."""

    task: str  # lm-eval task name
    paradigm: str  # file stem of its YAML and jsonl
    phenomenon: str
    rows: list[dict]  # the jsonl rows; each has `choices` (good first) and, for shared-prefix scoring, `prefix`
    source: str = ""  # where the pairs came from, kept in the task's metadata
    field: str = ""  # BLiMP's field (morphology, syntax, semantics, ...), kept in the task's metadata


def _dump(header: str, config: dict) -> str:
    return f"# {header}\n" + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def template(shared_prefix: bool) -> dict:
    return {
        "dataset_path": "json",
        "dataset_name": None,
        "output_type": "multiple_choice",
        "validation_split": "train",
        # Field names, not templates: lm-eval returns a field's value untouched.
        "doc_to_text": "prefix" if shared_prefix else "",
        "target_delimiter": " ",
        "doc_to_target": 0,
        "doc_to_choice": "choices",
        "num_fewshot": 0,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def task_config(task: TaskFile) -> dict:
    metadata = ({"version": 1.0, "phenomenon": task.phenomenon} | ({"field": task.field} if task.field else {})
                | ({"source": task.source} if task.source else {}))
    return {
        "include": TEMPLATE,
        "task": task.task,
        "dataset_kwargs": {"data_files": {"train": f"{task.paradigm}.jsonl"}},
        "metadata": metadata,
    }


def write_family(folder: Path, family: str, tasks: list[TaskFile], shared_prefix: bool, header: str,
                 readme: str | None = None) -> Path:
    """Write (or replace, all or nothing) the task folder of one family; returns it."""
    with atomic_dir(folder) as tmp:
        (tmp / TEMPLATE).write_text(_dump(header, template(shared_prefix)), encoding="utf-8")
        for task in tasks:
            rows = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in task.rows)
            (tmp / f"{task.paradigm}.jsonl").write_text(rows, encoding="utf-8")
            (tmp / f"{task.paradigm}.yaml").write_text(_dump(header, task_config(task)), encoding="utf-8")
        group = {
            "group": family, "task": [t.task for t in tasks],
            "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": False}],
            "metadata": {"version": 1.0},
        }
        (tmp / f"_{family}.yaml").write_text(_dump(header, group), encoding="utf-8")
        if readme is not None:
            (tmp / "README.md").write_text(readme, encoding="utf-8")
    return folder


PERPLEXITY_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")


def write_text_task(folder: Path, task: str, documents: list[str], header: str, source: str = "",
                    readme: str | None = None) -> Path:
    """Write (or replace, all or nothing) a perplexity task over `documents`: lm-eval scores each one's
    log-likelihood from the model's BOS/EOS token on (in windows of the model's length when longer)."""
    config = {
        "task": task,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"train": f"{task}.jsonl"}},
        "output_type": "loglikelihood_rolling",
        "validation_split": "train",
        "doc_to_text": "",
        "doc_to_target": "text",  # a field name: lm-eval returns the field's value untouched
        "metric_list": [{"metric": metric} for metric in PERPLEXITY_METRICS],
        "metadata": {"version": 1.0, "documents": len(documents)} | ({"source": source} if source else {}),
    }
    with atomic_dir(folder) as tmp:
        rows = "".join(json.dumps({"text": doc}, ensure_ascii=False) + "\n" for doc in documents)
        (tmp / f"{task}.jsonl").write_text(rows, encoding="utf-8")
        (tmp / f"{task}.yaml").write_text(_dump(header, config), encoding="utf-8")
        if readme is not None:
            (tmp / "README.md").write_text(readme, encoding="utf-8")
    return folder


def _absolute(files, folder: Path):
    """`data_files` (a path, a list, or a dict of either) with relative paths made absolute against `folder`."""
    if isinstance(files, dict):
        return {split: _absolute(f, folder) for split, f in files.items()}
    if isinstance(files, list):
        return [_absolute(f, folder) for f in files]
    return str(folder / files)


def export_family(source: Path, target: Path) -> Path:
    """Copy the task folder `source` to `target` (all or nothing) with every relative `data_files` path made
    absolute, pointing at the copy: stock lm-eval then reads it from any working directory. Returns `target`."""
    header = (f"Exported by `trajectories tasks export` from {source}: data paths are absolute, so lm_eval reads "
              "them from any working directory; export again after moving this folder.")
    with atomic_dir(target) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
        for path in sorted(tmp.rglob("*")):
            is_yaml = path.suffix == ".yaml" or path.name == TEMPLATE
            if not is_yaml or "data_files" not in (text := path.read_text(encoding="utf-8")):
                continue  # copied as it is: it names no data (YAMLs with `!function` included)
            where = source / path.relative_to(tmp)
            try:
                config = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise TaskError(f"{where}: not a data-only task YAML ({getattr(err, 'problem', err)})") from err
            files = (config.get("dataset_kwargs") or {}).get("data_files") if isinstance(config, dict) else None
            if files is None:
                continue
            if missing := [f for f in _paths(_absolute(files, path.parent)) if not Path(f).is_file()]:
                raise TaskError(f"{where}: data files missing: {', '.join(missing)}")
            config["dataset_kwargs"]["data_files"] = _absolute(files, target.resolve() / path.parent.relative_to(tmp))
            path.write_text(_dump(header, config), encoding="utf-8")
    return target


def _paths(files) -> list[str]:
    if isinstance(files, dict):
        return [p for f in files.values() for p in _paths(f)]
    return [p for f in files for p in _paths(f)] if isinstance(files, list) else [files]
