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

from trajectories import fields
from trajectories.imports import expand_imports, import_lm_eval_json, metric_rows
from trajectories.planning import interpolated_spans
from trajectories.schema import (
    CURVE_COLUMNS,
    CURVE_DTYPES,
    CURVE_KEY,
    CURVE_OPTIONAL_COLUMNS,
    CURVE_OPTIONAL_DTYPES,
    GRAMMAR,
    Level,
    TaskResult,
    UnitRecord,
    phenomenon_key,
    with_curve_defaults,
)
from trajectories.stats import N_BOOT, Z95, model_replicates
from trajectories.store import Store, StoreError, items_outside


def task_rows(record: UnitRecord, task: str, result: TaskResult) -> list[dict]:
    """A unit's rows for one task: a paradigm's when the task is a minimal-pair paradigm, a metric's for another
    task with an accuracy, and one metric row per value lm-eval reported for a task without one (a perplexity
    task: "<task>/word_perplexity", "<task>/byte_perplexity", "<task>/bits_per_byte")."""
    model = record.model
    if np.isnan(result.acc) and result.lm_eval:
        rows = [row | {"phenomenon": "", "n": result.n} for row in metric_rows({"results": {task: result.lm_eval}})]
    else:
        level = Level.PARADIGM if result.phenomenon else Level.METRIC
        rows = [{"level": level, "task": task, "phenomenon": result.phenomenon, "acc": result.acc,
                 "acc_stderr": result.acc_stderr, "n": result.n}]
    unit = {"model": model.name, "size": model.size, "params": model.params, "deduped": bool(model.deduped),
            "step": record.step, "tokens": record.tokens, "seed": model.seed, "grouping": "",
            "same_weights_as": record.same_weights_as}
    return [unit | row | {"level": str(row["level"]), "ci_low": row["acc"] - Z95 * row["acc_stderr"],
                          "ci_high": row["acc"] + Z95 * row["acc_stderr"], "ci_method": "stderr"} for row in rows]


ALL_COLUMNS = [*CURVE_COLUMNS, *CURVE_OPTIONAL_COLUMNS]
ALL_DTYPES = CURVE_DTYPES | CURVE_OPTIONAL_DTYPES


def curves_from_units(records: list[UnitRecord]) -> pd.DataFrame:
    """One row per (model, step, task) of stored units."""
    rows = [row for record in records for task, result in record.tasks.items()
            for row in task_rows(record, task, result)]
    return pd.DataFrame(rows, columns=ALL_COLUMNS).astype(ALL_DTYPES)


def with_phenomena(table: pd.DataFrame, items: pd.DataFrame | None = None, n_boot: int = N_BOOT,
                   seed: int = 0, grouping: str = "data") -> pd.DataFrame:
    """Add phenomenon rows (their `grouping` column says which grouping the paradigms' phenomena follow), and
    bootstrap CIs to paradigm rows that have items (items: ITEM_COLUMNS, any models)."""
    # A table may lack optional columns, or those added since it was written.
    table = with_curve_defaults(table[~table.level.isin([Level.PHENOMENON, Level.FIELD])]).reindex(
        columns=ALL_COLUMNS)
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
        phenomena.append(_phenomenon_rows(rows).assign(grouping=grouping))
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
        deduped=("deduped", "first"), tokens=("tokens", "first"), seed=("seed", "first"),
        same_weights_as=("same_weights_as", "first"), acc=("acc", "mean"),
        var=("acc_stderr", lambda se: (se**2).sum() / len(se) ** 2), n=("n", lambda n: n.sum(min_count=1)),
    ).reset_index()
    rows["acc_stderr"] = np.sqrt(rows.pop("var"))
    rows["ci_low"], rows["ci_high"] = rows.acc - Z95 * rows.acc_stderr, rows.acc + Z95 * rows.acc_stderr
    return rows.assign(level=str(Level.PHENOMENON), task=rows.phenomenon.map(phenomenon_key), ci_method="stderr")


def collect(out: str | Path, imports: list[str | Path] | str | None = None, n_boot: int = N_BOOT,
            seed: int = 0, grouping: str | None = None) -> pd.DataFrame:
    """Rebuild OUT/curves.parquet and OUT/curves.csv from OUT's completed units and imported results (added to
    OUT/imported.parquet by `imports`: paths or globs of lm-eval results JSON files); return the table.

    Phenomenon rows follow `grouping` ("data" or "paper", fields.GROUPINGS; None: the grouping OUT's curves
    already have, else "data"); field rows are added for paradigms whose field is known."""
    store = Store(out)
    if store.is_sweep() and store.spec().kind != GRAMMAR:
        raise StoreError(f"{store.out} holds a {store.spec().kind} run, which has no learning curves; "
                         f"`trajectories analyze {store.out}` reports it")
    if grouping is None:
        grouping = _current_grouping(store)
    fields.phenomena(grouping)  # a clear error for an unknown grouping, before any work
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
    table = fields.grouped(table, grouping)
    field_of = fields.BLIMP_FIELDS | {task: result.field for record in records
                                      for task, result in record.tasks.items() if result.field}
    # One model's items at a time: a full suite's items need not fit in memory together.
    per_model = []
    for model, rows in table.groupby("model"):
        items = store.items(model, records)
        per_model += [with_phenomena(rows, items, n_boot, seed, grouping),
                      fields.field_rows(rows, items, field_of, n_boot, seed)]
    table = pd.concat([t for t in per_model if len(t)], ignore_index=True)
    table = tidy(table.sort_values(["model", "level", "task", "step"], ignore_index=True))
    table = tidy(with_skipped(table, store.requested() if store.is_sweep() else []))
    store.save_curves(table)
    return table


def _current_grouping(store: Store) -> str:
    if not store.curves_path.exists():
        return "data"
    try:
        curves = store.curves()
    except StoreError:  # a damaged table is what this collect rebuilds; its grouping cannot be read back
        return "data"
    used = set(curves.get("grouping", ())) - {""}
    return used.pop() if len(used) == 1 else "data"
