"""Curves: a sweep's stored units, and imported lm-eval results, as the tidy learning-curve table
(schema.CURVE_COLUMNS), with phenomenon rows and confidence intervals.

Confidence intervals (95%): where per-item results exist, a percentile bootstrap over items ("bootstrap-items"):
items are resampled within each paradigm, and a phenomenon's replicate is the mean of its paradigms' replicates
(stats.py). Otherwise acc ± 1.96 × the reported standard error ("stderr"); a phenomenon's stderr combines its
paradigms'.

A unit not evaluated because its weights are byte-identical to another step's carries that step's results and its
number in `same_weights_as`; a step right after checkpoints that have no result (skipped by a coarse-to-fine or
adaptive sweep, or failed) has the first of them in `skipped_from` (schema.CURVE_OPTIONAL_COLUMNS; each column is
there only when some row has it).

Imported results (`collect(out, imports=...)`) are parsed once and kept in OUT/imported.parquet (their items, from
lm-eval's samples files, in OUT/imported.items.parquet), so a later collect (every sweep runs one) keeps them. A
sweep's own row wins over an imported row for the same (model, step, task); among imports, the file read last wins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trajectories.imports import expand_imports, import_lm_eval_json
from trajectories.planning import interpolated_spans
from trajectories.schema import (
    CURVE_COLUMNS,
    CURVE_DTYPES,
    CURVE_KEY,
    CURVE_OPTIONAL_COLUMNS,
    CURVE_OPTIONAL_DTYPES,
    Level,
    TaskResult,
    UnitRecord,
    phenomenon_key,
)
from trajectories.stats import N_BOOT, Z95, model_replicates
from trajectories.store import Store, StoreError, items_outside


def task_row(record: UnitRecord, task: str, result: TaskResult) -> dict:
    """A unit's row for one task: a paradigm's when the task is a minimal-pair paradigm, else a metric's."""
    model, acc, stderr = record.model, result.acc, result.acc_stderr
    level = Level.PARADIGM if result.phenomenon else Level.METRIC
    return {
        "model": model.name, "size": model.size, "params": model.params, "deduped": bool(model.deduped),
        "step": record.step, "tokens": record.tokens, "level": str(level),
        "task": task, "phenomenon": result.phenomenon, "acc": acc, "acc_stderr": stderr,
        "ci_low": acc - Z95 * stderr, "ci_high": acc + Z95 * stderr, "ci_method": "stderr", "n": result.n,
        "same_weights_as": record.same_weights_as,
    }


ALL_COLUMNS = [*CURVE_COLUMNS, *CURVE_OPTIONAL_COLUMNS]
ALL_DTYPES = CURVE_DTYPES | CURVE_OPTIONAL_DTYPES


def curves_from_units(records: list[UnitRecord]) -> pd.DataFrame:
    """One row per (model, step, task) of stored units."""
    rows = [task_row(record, task, result) for record in records for task, result in record.tasks.items()]
    return pd.DataFrame(rows, columns=ALL_COLUMNS).astype(ALL_DTYPES)


def with_phenomena(table: pd.DataFrame, items: pd.DataFrame | None = None, n_boot: int = N_BOOT,
                   seed: int = 0) -> pd.DataFrame:
    """Add phenomenon rows, and bootstrap CIs to paradigm rows that have items (items: ITEM_COLUMNS, any models)."""
    table = table[table.level != Level.PHENOMENON].reindex(columns=ALL_COLUMNS)  # a table may lack optional columns
    paradigms = table[(table.level == Level.PARADIGM) & table.acc.notna()]
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
        table.loc[use & (table.level == Level.PHENOMENON), "acc_stderr"] = table.boot_se
        table = table.drop(columns=["boot_low", "boot_high", "boot_se"])
    return tidy(table.sort_values(["model", "level", "task", "step"], ignore_index=True))


def tidy(table: pd.DataFrame) -> pd.DataFrame:
    """The table's columns in order and typed; an optional column only when some row has a value."""
    table = table.reindex(columns=ALL_COLUMNS).astype(ALL_DTYPES)
    return table.drop(columns=[c for c in CURVE_OPTIONAL_COLUMNS if table[c].isna().all()])


def with_skipped(table: pd.DataFrame, available: list[tuple[str, int]]) -> pd.DataFrame:
    """Mark where a model's curves are interpolated: each row right after checkpoints of `available` (the units
    asked for) that have no result gets `skipped_from`, the first of them (schema.CURVE_OPTIONAL_COLUMNS)."""
    grid: dict[str, list[int]] = {}
    for model, step in available:
        grid.setdefault(model, []).append(step)
    first = {(model, span.right): span.first for model, rows in table.groupby("model")
             for span in interpolated_spans(rows.step.unique(), grid.get(model, []))}
    return table.assign(skipped_from=[first.get(key) for key in zip(table.model, table.step)])


def _phenomenon_rows(paradigms: pd.DataFrame) -> pd.DataFrame:
    grouped = paradigms[paradigms.phenomenon != ""].groupby(["step", "phenomenon"])
    rows = grouped.agg(
        model=("model", "first"), size=("size", "first"), params=("params", "first"),
        deduped=("deduped", "first"), tokens=("tokens", "first"), same_weights_as=("same_weights_as", "first"),
        acc=("acc", "mean"),
        var=("acc_stderr", lambda se: (se**2).sum() / len(se) ** 2), n=("n", lambda n: n.sum(min_count=1)),
    ).reset_index()
    rows["acc_stderr"] = np.sqrt(rows.pop("var"))
    rows["ci_low"], rows["ci_high"] = rows.acc - Z95 * rows.acc_stderr, rows.acc + Z95 * rows.acc_stderr
    return rows.assign(level=str(Level.PHENOMENON), task=rows.phenomenon.map(phenomenon_key), ci_method="stderr")


def collect(out: str | Path, imports: list[str | Path] | str | None = None, n_boot: int = N_BOOT,
            seed: int = 0) -> pd.DataFrame:
    """Rebuild OUT/curves.parquet and OUT/curves.csv from OUT's completed units and imported results (added to
    OUT/imported.parquet by `imports`: paths or globs of lm-eval results JSON files); return the table."""
    store = Store(out)
    if imports:
        new = import_lm_eval_json(expand_imports(imports))
        old, old_items = store.imported(), store.imported_items()
        both = pd.concat([old, new.curves], ignore_index=True) if old is not None else new.curves
        store.save_imported(both.drop_duplicates(list(CURVE_KEY), keep="last").astype(CURVE_DTYPES))
        # A new file's row replaces an old one, with its items or with none.
        kept = items_outside(old_items, new.curves) if old_items is not None else None
        store.save_imported_items(pd.concat([kept, new.items], ignore_index=True) if kept is not None else new.items)
    imported = store.imported()
    if imported is None:
        store.spec()  # a clear error if OUT is neither a sweep folder nor holds imports
    records = store.records() if store.is_sweep() else []
    store.warn_damaged()
    if not records and imported is None:
        raise StoreError(f"{store.out} has no completed units yet; `trajectories status {store.out}` shows why")
    parts = [t for t in (curves_from_units(records), imported) if t is not None and len(t)]
    table = pd.concat(parts, ignore_index=True).drop_duplicates(list(CURVE_KEY), keep="first")
    # One model's items at a time: a full suite's items need not fit in memory together.
    table = tidy(pd.concat([with_phenomena(rows, store.items(model, records), n_boot, seed)
                            for model, rows in table.groupby("model")], ignore_index=True))
    table = tidy(with_skipped(table, store.requested() if store.is_sweep() else []))
    store.save_curves(table)
    return table
