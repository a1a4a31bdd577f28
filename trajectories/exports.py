"""Export a results folder in lm-eval 0.4's own layout, one folder per checkpoint, as
`lm_eval --output_path DIR/<model>/step<N>/results.json --log_samples` would write it:

    DIR/<model>/step<N>/results_<date>.json             results, configs, versions, n-shot, higher_is_better,
                                                        n-samples, config (model_args "pretrained=...,revision=..."),
                                                        and "trajectories": the checkpoint as the sweep knew it
    DIR/<model>/step<N>/samples_<task>_<date>.jsonl     per item: doc_id, target, the choices' log-probs (resps,
                                                        filtered_resps) and acc

<date> is when the checkpoint was evaluated. A sample lists the target choice first and the best other choice
second, the two log-probs a sweep keeps (for a minimal pair: the good and the bad sentence); whether a choice was
the greedy continuation is not kept, so it is null. `collect --import 'DIR/**/results_*.json'` reads the export back
into the same curves.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

from trajectories import lmeval
from trajectories.files import write_json, write_text
from trajectories.schema import UnitRecord
from trajectories.store import Store, StoreError
from trajectories.tasks import BLIMP_PAIRS, BLIMP_PARADIGMS, TaskCatalog, count_lines


def _date_id(when: float) -> str:
    return datetime.datetime.fromtimestamp(when).isoformat().replace(":", "-")  # lm-eval's, as in its file names


def _task_config(catalog: TaskCatalog, task: str, phenomenon: str) -> dict:
    """lm-eval's full config of a task known here; else what the record says. The phenomenon is always in its
    metadata, where the importer reads it."""
    config = lmeval.full_config(catalog.config(task)) if task in catalog.index.entries else {"task": task}
    return config | {"metadata": (config.get("metadata") or {}) | {"phenomenon": phenomenon}}


def _task_size(catalog: TaskCatalog, task: str) -> int | None:
    """How many documents a task has where that is known without loading it: BLiMP's, or counted in local data."""
    if task.startswith("blimp_") and task.removeprefix("blimp_") in BLIMP_PARADIGMS:
        return BLIMP_PAIRS
    files = catalog.data_files(task) if task in catalog.index.entries else []
    if not files or not all(f.is_file() for f in files):
        return None
    return sum(count_lines(f) for f in files)


def results_file(record: UnitRecord, configs: dict[str, dict], sizes: dict[str, int | None], when: float) -> dict:
    """One checkpoint's results in lm-eval 0.4's layout; configs and sizes (documents per task) by task."""
    pretrained = record.path or record.model.repo or record.model.name
    revision = record.revision or f"step{record.step}"
    dtype = record.provenance.get("dtype") or record.spec.dtype
    versions = record.provenance.get("versions") or {}
    limit = record.spec.limit
    configs = {t: configs[t] for t in record.tasks}
    return {
        "results": {t: r.lm_eval or {"alias": t, "acc,none": r.acc, "acc_stderr,none": r.acc_stderr}
                    for t, r in record.tasks.items()},
        "group_subtasks": {},
        "configs": configs,
        "versions": {t: c["metadata"].get("version") for t, c in configs.items()},
        "n-shot": {t: c.get("num_fewshot") or 0 for t, c in configs.items()},
        "higher_is_better": {t: {"acc": True} for t in record.tasks},
        # "original": all the task's documents; n unless --limit cut them
        "n-samples": {t: {"original": r.n if limit is None or r.n < limit else sizes[t], "effective": r.n}
                      for t, r in record.tasks.items()},
        "config": {
            "model": "hf", "model_args": f"pretrained={pretrained},revision={revision},dtype={dtype}",
            "model_num_parameters": record.model.params, "model_dtype": dtype, "model_revision": revision,
            "model_sha": record.provenance.get("commit") or "", "batch_size": str(record.provenance.get("batch_size")),
            "device": record.provenance.get("device"), "limit": limit,
        },
        "date": when,
        "transformers_version": versions.get("transformers"),
        "lm_eval_version": versions.get("lm_eval"),
        "model_source": "hf",
        "model_name": pretrained,
        "model_name_sanitized": re.sub(r"[\"<>:/|\\?*\[\]]+", "__", pretrained),  # lm-eval's sanitize_model_name
        "total_evaluation_time_seconds": str(sum(record.seconds.values())),
        "trajectories": {"suite": record.suite, "model": record.to_json()["model"], "step": record.step,
                         "tokens": record.tokens, "revision": record.revision, "path": record.path,
                         "same_weights_as": record.same_weights_as,
                         "trajectories_version": versions.get("trajectories")},
    }


def samples_lines(items) -> str:
    """A task's items (schema.ITEM_COLUMNS rows) as lm-eval's samples jsonl."""
    lines = []
    for item in items.sort_values("item").itertuples():
        good, bad = repr(float(item.logp_good)), repr(float(item.logp_bad))  # strings, as lm-eval writes them
        lines.append(json.dumps({
            "doc_id": int(item.item), "target": "0", "resps": [[[good, None]], [[bad, None]]],
            "filtered_resps": [[good, None], [bad, None]], "filter": "none", "metrics": ["acc"],
            "acc": float(item.correct),
        }))
    return "".join(line + "\n" for line in lines)


def export_lm_eval(out: str | Path, dest: str | Path, tasks_dir: str | Path | None = None) -> list[Path]:
    """Write every completed unit of OUT in lm-eval's layout under DEST; returns the results files. The task configs
    come from the task folders (`tasks_dir`: the user's, as for the sweep)."""
    store = Store(out)
    records = store.records() if store.is_sweep() else []
    if not records:
        raise StoreError(f"{store.out} has no completed units to export")
    catalog = TaskCatalog(tasks_dir)
    phenomena = {t: r.phenomenon for record in records for t, r in record.tasks.items()}
    configs = {t: _task_config(catalog, t, phenomenon) for t, phenomenon in phenomena.items()}
    sizes = {t: _task_size(catalog, t) for t in phenomena}
    written = []
    for record in records:
        when = (record.by or {}).get("since") or store.written_at(record.key)
        folder = Path(dest) / record.model.name / f"step{record.step}"
        date = _date_id(when)
        path = folder / f"results_{date}.json"
        write_json(path, results_file(record, configs, sizes, when))
        items = store.unit_items(record.key)
        for task, rows in items.groupby("task"):
            write_text(folder / f"samples_{task}_{date}.jsonl", samples_lines(rows))
        for stale in [*folder.glob("results_*.json"), *folder.glob("samples_*.jsonl")]:
            if not stale.name.endswith((f"_{date}.json", f"_{date}.jsonl")):
                stale.unlink()  # an earlier export of a checkpoint evaluated again since
        written.append(path)
    return written
