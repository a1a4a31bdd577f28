"""The results store: one folder per sweep, one pair of files per unit, every file written atomically.

    OUT/sweep.json                         the SweepSpec (a sweep with another spec is refused) and suite
    OUT/units/<model>/step<N>.items.parquet  per-item results (schema.ITEM_COLUMNS), written first
    OUT/units/<model>/step<N>.json         lm-eval's results + provenance; written last, so it marks the unit done
    OUT/units/<model>/step<N>.failed.json  why the unit failed (removed when it later succeeds)
    OUT/curves.parquet, OUT/curves.csv     the tidy curve table (schema.CURVE_COLUMNS), rebuilt after each sweep

A unit counts as done only when both its files exist, so a crash or kill at any moment leaves at worst a temp file
(ignored and cleaned up) and the unit is redone.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from trajectories.schema import Checkpoint, SweepSpec

TMP_MARK = ".tmp-"


class StoreError(ValueError):
    """OUT is missing, empty, or holds results of another spec."""


@contextmanager
def atomic_path(path: Path):
    """Yield a temp path beside `path`; rename it onto `path` only if the block finishes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=str, allow_nan=True))


def write_table(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)


class Store:
    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.units = self.out / "units"

    # ---------------------------------------------------------------- spec
    def open(self, spec: SweepSpec, checkpoints: list[Checkpoint], suite_description: str = "") -> None:
        """Create OUT for `spec`, or check that an existing OUT was made with the same spec; record the units
        asked for, so `status` can tell what is still pending."""
        manifest = self.out / "sweep.json"
        requested = {(c.model.name, c.step) for c in checkpoints}
        if manifest.exists():
            record = json.loads(manifest.read_text())
            existing = SweepSpec.from_dict(record["spec"])
            if existing != spec:
                diff = {k: (getattr(existing, k), getattr(spec, k)) for k in spec.__dataclass_fields__
                        if getattr(existing, k) != getattr(spec, k)}
                lines = "\n".join(f"  {k}: {old!r} there, {new!r} now" for k, (old, new) in diff.items())
                raise StoreError(
                    f"{self.out} holds a sweep with another spec; not mixing results:\n{lines}\n"
                    "Use another --out, or the same settings to resume."
                )
            requested |= {tuple(unit) for unit in record["requested"]}
        write_json(manifest, {
            "spec": spec.as_dict(), "suite_description": suite_description, "requested": sorted(requested),
        })
        self.clean_temp_files()

    def requested(self) -> list[tuple[str, int]]:
        self.spec()
        return [tuple(unit) for unit in json.loads((self.out / "sweep.json").read_text())["requested"]]

    def spec(self) -> SweepSpec:
        manifest = self.out / "sweep.json"
        if not manifest.exists():
            raise StoreError(f"{self.out} is not a sweep folder (no sweep.json); run `trajectories sweep` first")
        return SweepSpec.from_dict(json.loads(manifest.read_text())["spec"])

    def clean_temp_files(self) -> None:
        for tmp in self.out.rglob(f".*{TMP_MARK}*"):
            tmp.unlink(missing_ok=True)

    # ---------------------------------------------------------------- units
    def _base(self, model: str, step: int) -> Path:
        return self.units / model / f"step{step}"

    def is_done(self, ckpt: Checkpoint) -> bool:
        base = self._base(*ckpt.key)
        return base.with_suffix(".json").exists() and base.with_suffix(".items.parquet").exists()

    def save_unit(self, ckpt: Checkpoint, result, spec: SweepSpec) -> None:
        base = self._base(*ckpt.key)
        write_table(result.items, base.with_suffix(".items.parquet"))
        write_json(base.with_suffix(".json"), {
            "suite": ckpt.suite, "model": asdict(ckpt.model), "step": ckpt.step, "tokens": ckpt.tokens,
            "revision": ckpt.revision, "path": ckpt.path, "spec": spec.as_dict(), "tasks": result.tasks,
            "seconds": result.seconds, **result.provenance,
        })
        base.with_suffix(".failed.json").unlink(missing_ok=True)

    def save_failure(self, ckpt: Checkpoint, reason: str) -> None:
        write_json(self._base(*ckpt.key).with_suffix(".failed.json"), {
            "model": ckpt.model.name, "step": ckpt.step, "source": ckpt.source, "revision": ckpt.revision,
            "reason": reason,
        })

    def done_units(self) -> list[dict]:
        """Unit records (the json) of every completed unit, in model then step order."""
        records = []
        for path in sorted(self.units.glob("*/step*.json")):
            match = re.fullmatch(r"step(\d+)\.json", path.name)
            if match and path.with_suffix(".items.parquet").exists():
                records.append(json.loads(path.read_text()))
        return sorted(records, key=lambda r: (r["model"]["name"], r["step"]))

    def failures(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.units.glob("*/step*.failed.json"))]

    def items(self) -> pd.DataFrame:
        """Per-item results of every completed unit."""
        frames = [pd.read_parquet(self._base(r["model"]["name"], r["step"]).with_suffix(".items.parquet"))
                  for r in self.done_units()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
