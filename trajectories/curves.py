"""Collect: turn a sweep's stored units into the tidy learning-curve table (schema.CURVE_COLUMNS)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from trajectories.schema import CURVE_COLUMNS
from trajectories.store import Store, StoreError, write_table

Z95 = 1.959963984540054


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
    table = pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
    return table.astype({"params": "Int64", "tokens": "Int64", "step": "int64", "n": "int64"})


def collect(out: str | Path) -> pd.DataFrame:
    """Rebuild OUT/curves.parquet and OUT/curves.csv from OUT's completed units; return the table."""
    store = Store(out)
    store.spec()  # a clear error if OUT is not a sweep folder
    units = store.done_units()
    if not units:
        raise StoreError(f"{store.out} has no completed units yet; `trajectories status {store.out}` shows why")
    table = curves_from_units(units)
    write_table(table, store.out / "curves.parquet")
    write_table(table, store.out / "curves.csv")
    return table
