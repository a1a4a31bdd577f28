"""The results store: the only reader and writer of a results folder (OUT). Every file is written atomically.

    OUT/sweep.json                           the SweepSpec (a sweep with another spec is refused), the units asked for
    OUT/units/<model>/step<N>.items.parquet  per-item results (schema.ITEM_COLUMNS), written first
    OUT/units/<model>/step<N>.json           the UnitRecord; written last, so it marks the unit done
    OUT/units/<model>/step<N>.failed.json    the FailureRecord (removed when the unit later succeeds)
    OUT/units/<model>/step<N>.lock           held while a process evaluates the unit (locks.py)
    OUT/jobs/                                submitit's job files and logs; <job>.units.json: a job's units
    OUT/imported.parquet                     curve rows imported from lm-eval results files
    OUT/imported.items.parquet               per-item results (schema.ITEM_COLUMNS) from their samples files
    OUT/curves.parquet, OUT/curves.csv       the tidy curve table (schema.CURVE_COLUMNS), rebuilt after each sweep
    OUT/plots/, OUT/report/                  figures and the analysis report
    OUT/wandb.json                           the W&B run of the sweep and the checkpoints logged to it

A unit counts as done only when both its files exist, so a crash or kill at any moment leaves at worst a temp file
(ignored and cleaned up) and the unit is redone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from trajectories import locks
from trajectories.errors import UserError
from trajectories.files import remove_temp_files, write_json, write_table, write_text
from trajectories.schema import Checkpoint, FailureRecord, SweepSpec, UnitRecord, UnitResult, with_curve_defaults

TEMP_GRACE_S = 60  # a temp file younger than this may be another sweep's write in progress
_UNIT_FILE = re.compile(r"step(\d+)\.json")

Key = tuple[str, int]  # (model, step)


def items_outside(items: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """The rows of `items` whose (model, step, task) has no row in `other`."""
    keys = ["model", "step", "task"]
    found = items.merge(other[keys].drop_duplicates(), on=keys, how="left", indicator=True)._merge == "both"
    return items[~found.to_numpy()]


class StoreError(UserError):
    """OUT is missing, empty, or holds results of another spec."""


class Store:
    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.units = self.out / "units"
        self.jobs_dir = self.out / "jobs"
        self.plots_dir = self.out / "plots"
        self.report_dir = self.out / "report"
        self.manifest_path = self.out / "sweep.json"
        self.curves_path = self.out / "curves.parquet"
        self.imported_path = self.out / "imported.parquet"
        self.imported_items_path = self.out / "imported.items.parquet"
        self.wandb_path = self.out / "wandb.json"

    # ---------------------------------------------------------------- spec
    def open(self, spec: SweepSpec, checkpoints: list[Checkpoint], suite_description: str = "") -> None:
        """Create OUT for `spec`, or check that an existing OUT was made with the same spec; record the units
        asked for, so `status` can tell what is still pending."""
        requested = {c.key for c in checkpoints}
        if self.manifest_path.exists():
            manifest = json.loads(self.manifest_path.read_text())
            existing = SweepSpec.from_dict(manifest["spec"])
            if existing != spec:
                lines = "\n".join(f"  {k}: {old!r} there, {new!r} now"
                                  for k, (old, new) in existing.differences(spec).items())
                raise StoreError(
                    f"{self.out} holds a sweep with another spec; not mixing results:\n{lines}\n"
                    "Use another --out, or the same settings to resume."
                )
            requested |= {tuple(unit) for unit in manifest["requested"]}
        write_json(self.manifest_path, {
            "spec": spec.as_dict(), "suite_description": suite_description, "requested": sorted(requested),
        })
        remove_temp_files(self.out, older_than=TEMP_GRACE_S)

    def is_sweep(self) -> bool:
        return self.manifest_path.exists()

    def _read_manifest(self) -> dict:
        if not self.manifest_path.exists():
            raise StoreError(f"{self.out} is not a sweep folder (no sweep.json); run `trajectories sweep` first")
        return json.loads(self.manifest_path.read_text())

    def spec(self) -> SweepSpec:
        return SweepSpec.from_dict(self._read_manifest()["spec"])

    def requested(self) -> list[Key]:
        return [tuple(unit) for unit in self._read_manifest()["requested"]]

    # ---------------------------------------------------------------- units
    def _path(self, key: Key, suffix: str) -> Path:
        model, step = key
        return self.units / model / f"step{step}{suffix}"

    def is_done(self, key: Key) -> bool:
        return self._path(key, ".json").exists() and self._path(key, ".items.parquet").exists()

    def record(self, key: Key) -> UnitRecord | None:
        """The unit's record if it is done, else None."""
        try:
            return UnitRecord.from_json(json.loads(self._path(key, ".json").read_text())) if self.is_done(key) else None
        except FileNotFoundError:
            return None

    def failure(self, key: Key) -> FailureRecord | None:
        """The unit's last failure record (with `at`, when it was written), or None."""
        path = self._path(key, ".failed.json")
        try:
            return FailureRecord.from_json(json.loads(path.read_text()), at=path.stat().st_mtime)
        except FileNotFoundError:
            return None

    def save_unit(self, ckpt: Checkpoint, result: UnitResult, spec: SweepSpec, by: dict | None = None,
                  same_weights_as: int | None = None) -> None:
        """`by`: who evaluated it (sweep, job, host, pid, log), as `locks.owner` gives it; `same_weights_as`: the step
        whose results these are, for a unit not evaluated because its weights are identical to that step's."""
        write_table(result.items, self._path(ckpt.key, ".items.parquet"))
        write_json(self._path(ckpt.key, ".json"), UnitRecord.of(ckpt, result, spec, by, same_weights_as).to_json())
        self._path(ckpt.key, ".failed.json").unlink(missing_ok=True)

    def save_failure(self, ckpt: Checkpoint, reason: str, by: dict | None = None) -> None:
        write_json(self._path(ckpt.key, ".failed.json"), FailureRecord.of(ckpt, reason, by).to_json())

    def _unit_keys(self) -> list[Key]:
        keys = []
        for path in self.units.glob("*/step*.json"):
            if match := _UNIT_FILE.fullmatch(path.name):
                keys.append((path.parent.name, int(match[1])))
        return sorted(keys)

    def records(self) -> list[UnitRecord]:
        """Every completed unit's record, in model then step order."""
        return [r for r in map(self.record, self._unit_keys()) if r is not None]

    def failures(self) -> list[FailureRecord]:
        found = []
        for path in sorted(self.units.glob("*/step*.failed.json")):
            found.append(FailureRecord.from_json(json.loads(path.read_text()), at=path.stat().st_mtime))
        return found

    def unit_items(self, key: Key) -> pd.DataFrame:
        """Per-item results of one completed unit."""
        return pd.read_parquet(self._path(key, ".items.parquet"))

    def written_at(self, key: Key) -> float:
        """When the unit's record was written (a POSIX time)."""
        return self._path(key, ".json").stat().st_mtime

    def items(self, model: str | None = None) -> pd.DataFrame | None:
        """Per-item results of every completed unit (of one model), and of imported results for tasks no unit
        has; None when there are none."""
        frames = [self.unit_items(r.key) for r in self.records() if model is None or r.model.name == model]
        imported = self.imported_items()
        if imported is not None and model is not None:
            imported = imported[imported.model == model]
        if imported is not None and len(imported):
            # A unit's row wins over an imported one (curves.collect), and so do its items.
            frames.append(items_outside(imported, pd.concat(frames)) if frames else imported)
        return pd.concat(frames, ignore_index=True) if frames else None

    # ---------------------------------------------------------------- locks
    def lock(self, ckpt: Checkpoint, owner: dict) -> bool:
        """Take the unit's lock (locks.acquire); once it is ours, leftover temp files of the unit are removed: no one
        else can be writing them."""
        if not locks.acquire(self._path(ckpt.key, ".lock"), owner):
            return False
        remove_temp_files(self._path(ckpt.key, "").parent, f"step{ckpt.step}.*")
        return True

    def is_locked(self, key: Key) -> bool:
        return self._path(key, ".lock").exists()

    def unlock(self, ckpt: Checkpoint, owner: dict) -> None:
        locks.release(self._path(ckpt.key, ".lock"), owner)

    def locks(self) -> list[dict]:
        """Every unit lock: its holder's record plus model, step, seconds since its heartbeat, and whether it is
        stale (then the next sweep reclaims it)."""
        found = []
        me = locks.owner()
        for path in sorted(self.units.glob("*/step*.lock")):
            holder = locks.read(path)
            if holder is not None:
                found.append(holder | {"model": path.parent.name, "step": int(path.stem.removeprefix("step")),
                                       "stale": locks.is_stale(holder, me)})
        return found

    # ---------------------------------------------------------------- jobs
    def save_job(self, job: str, record: dict) -> None:
        """What a worker process or Slurm job was given (its units, log, executor), for `status`."""
        write_json(self.jobs_dir / f"{job}.units.json", record)

    def jobs(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.jobs_dir.glob("*.units.json"))]

    # ---------------------------------------------------------------- tables
    def curves(self) -> pd.DataFrame:
        if not self.curves_path.exists():
            raise StoreError(f"{self.out} has no curves table; run `trajectories sweep` or "
                             f"`trajectories collect {self.out}` first")
        return with_curve_defaults(pd.read_parquet(self.curves_path))

    def save_curves(self, table: pd.DataFrame) -> tuple[Path, Path]:
        csv = self.curves_path.with_suffix(".csv")
        write_table(table, self.curves_path)
        write_table(table, csv)
        return self.curves_path, csv

    def imported(self) -> pd.DataFrame | None:
        return with_curve_defaults(pd.read_parquet(self.imported_path)) if self.imported_path.exists() else None

    def save_imported(self, table: pd.DataFrame) -> None:
        write_table(table, self.imported_path)

    def report_table(self, name: str) -> pd.DataFrame | None:
        """A table `analyze` wrote (OUT/report/<name>.csv), or None."""
        path = self.report_dir / f"{name}.csv"
        return pd.read_csv(path) if path.exists() else None


    def imported_items(self) -> pd.DataFrame | None:
        return pd.read_parquet(self.imported_items_path) if self.imported_items_path.exists() else None

    def save_imported_items(self, items: pd.DataFrame) -> None:
        write_table(items, self.imported_items_path)

    def wandb_run(self) -> dict | None:
        """{"project", "entity", "run_id", "logged": [[model, step], ...]} of the sweep's W&B run, if any."""
        return json.loads(self.wandb_path.read_text()) if self.wandb_path.exists() else None

    def save_wandb_run(self, run: dict) -> None:
        write_json(self.wandb_path, run)

    def save_report_table(self, name: str, table: pd.DataFrame) -> Path:
        write_table(table, self.report_dir / f"{name}.csv")
        return self.report_dir / f"{name}.csv"

    def save_report_file(self, name: str, text: str) -> Path:
        write_text(self.report_dir / name, text)
        return self.report_dir / name
