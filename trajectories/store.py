"""The results store: the only reader and writer of a results folder (OUT). Every file is written atomically.

An OUT holds one experiment: a grammar sweep (schema.SweepSpec) or a memorization run (schema.MemorizationSpec).

    OUT/sweep.json                           the spec (a run with another spec is refused), the units asked for
    OUT/rows.parquet                         memorization: the training rows scored (schema.ROW_COLUMNS)
    OUT/units/<model>/step<N>.items.parquet  per-item results (schema.ITEM_COLUMNS; memorization: one line per row,
                                             schema.MEMORIZATION_COLUMNS), written first
    OUT/units/<model>/step<N>.json           the UnitRecord; written last, so it marks the unit done
    OUT/units/<model>/step<N>.failed.json    the FailureRecord (removed when the unit later succeeds)
    OUT/units/<model>/step<N>.lock           held while a process evaluates the unit (locks.py)
    OUT/damaged/<model>/                     files of damaged units, moved here by a sweep (never deleted)
    OUT/jobs/                                submitit's job files and logs; <job>.units.json: a job's units
    OUT/imported.parquet                     curve rows imported from lm-eval results files
    OUT/imported.items.parquet               per-item results (schema.ITEM_COLUMNS) from their samples files
    OUT/curves.parquet, OUT/curves.csv       grammar: the tidy curve table (schema.CURVE_COLUMNS), rebuilt after each
                                             sweep
    OUT/plots/, OUT/report/                  figures and the analysis report
    OUT/wandb.json                           the W&B run of the sweep and the checkpoints logged to it
    OUT/adaptive.jsonl                       an adaptive sweep's decisions (schema.Decision), one JSON line each

A unit's state (schema.UnitState) is decided in one place, `Store.unit`: it is done only when its record parses, is
the record of its (model, step), matches the folder's spec, and its items file is readable with the rows the record
counts (memorization: the rows its model's data has that the step has seen). A crash or kill at any moment leaves at
worst a temp file (ignored and cleaned up) or items without a record (the unit is pending and redone). Anything else
is damaged: `status` names it, `collect` and `analyze` skip it, and a sweep moves its files to OUT/damaged/ and
evaluates it again.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trajectories import locks
from trajectories.errors import SkippedWarning, UserError
from trajectories.files import move_aside, remove_temp_files, write_json, write_table, write_text
from trajectories.schema import (
    ITEM_COLUMNS,
    MEMORIZATION,
    MEMORIZATION_COLUMNS,
    ROW_COLUMNS,
    Checkpoint,
    Decision,
    FailureRecord,
    MemorizationSpec,
    StoredUnit,
    SweepSpec,
    UnitRecord,
    UnitResult,
    UnitState,
    data_variant,
    spec_from_dict,
    with_curve_defaults,
)
from trajectories.suites import suite_name

TEMP_GRACE_S = 60  # a temp file younger than this may be another sweep's write in progress
_UNIT_FILE = re.compile(r"step(\d+)(?:\.failed)?\.json")
_LOCK_FILE = re.compile(r"step(\d+)\.lock")
# What reading a damaged file raises: bad JSON or bytes (ValueError), a record of the wrong shape (KeyError,
# TypeError, AttributeError), an unreadable Parquet file (pyarrow's errors), a folder or no permission (OSError).
_DAMAGE = (ValueError, KeyError, TypeError, AttributeError, OSError, pa.ArrowException)

Key = tuple[str, int]  # (model, step)
REIMPORT = "move it aside and import the lm-eval results files again with `collect --import`"


def items_outside(items: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """The rows of `items` whose (model, step, task) has no row in `other`."""
    keys = ["model", "step", "task"]
    found = items.merge(other[keys].drop_duplicates(), on=keys, how="left", indicator=True)._merge == "both"
    return items[~found.to_numpy()]


class StoreError(UserError):
    """OUT is missing, empty, damaged, or holds results of another spec."""


def _why(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


class Store:
    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.units = self.out / "units"
        self.damaged_dir = self.out / "damaged"
        self.jobs_dir = self.out / "jobs"
        self.plots_dir = self.out / "plots"
        self.report_dir = self.out / "report"
        self.manifest_path = self.out / "sweep.json"
        self.curves_path = self.out / "curves.parquet"
        self.imported_path = self.out / "imported.parquet"
        self.imported_items_path = self.out / "imported.items.parquet"
        self.wandb_path = self.out / "wandb.json"
        self.decisions_path = self.out / "adaptive.jsonl"
        self.rows_path = self.out / "rows.parquet"
        self._manifest_cache: dict | None = None
        self._rows_cache: pd.DataFrame | None = None

    # ---------------------------------------------------------------- spec
    def open(self, spec: SweepSpec | MemorizationSpec, checkpoints: list[Checkpoint], suite_description: str = "",
             rows: pd.DataFrame | None = None) -> None:
        """Create OUT for `spec`, or check that an existing OUT was made with the same spec; record the units
        asked for, so `status` can tell what is still pending. rows: a memorization run's rows to score
        (schema.ROW_COLUMNS), recorded once; other rows for the same spec (the data files changed) are refused.

        A folder written before suites were identified names its suite as typed then (`local:suite`): it is the same
        suite when that resolves, from here, to `spec`'s; the folder is then upgraded in place, keeping the old name
        for its units' records."""
        if file := next((p for p in (self.out, *self.out.parents) if p.exists() and not p.is_dir()), None):
            raise StoreError(f"--out {self.out}: {file} is a file, not a folder; choose another --out")
        requested = {c.key for c in checkpoints}
        aliases: tuple[str, ...] = ()
        if self.manifest_path.exists():
            manifest = self._manifest()
            existing, aliases = manifest["spec"], manifest["suite_aliases"]
            if existing.kind != spec.kind:
                raise StoreError(f"{self.out} holds a {existing.kind} experiment, not a {spec.kind} one; one "
                                 "experiment per results folder: use another --out")
            if (existing.suite != spec.suite and not existing.suite_fingerprint
                    and suite_name(existing.suite) == spec.suite):
                aliases, existing = (*aliases, existing.suite), replace(existing, suite=spec.suite)
            if conflicts := existing.conflicts(spec, aliases):
                lines = "\n".join(f"  {k}: {old!r} there, {new!r} now" for k, (old, new) in conflicts.items())
                raise StoreError(
                    f"{self.out} holds a sweep with another spec; not mixing results:\n{lines}\n"
                    "Use another --out, or the same settings to resume."
                )
            fingerprint = dict(existing.suite_fingerprint) | dict(spec.suite_fingerprint)
            spec = replace(spec, suite_fingerprint=tuple(sorted(fingerprint.items())))
            requested |= set(manifest["requested"])
        if rows is not None:
            self._record_rows(rows)
        write_json(self.manifest_path, {
            "spec": spec.as_dict(), "suite_aliases": list(aliases), "suite_description": suite_description,
            "requested": sorted(requested),
        })
        self._manifest_cache = None
        remove_temp_files(self.out, older_than=TEMP_GRACE_S)

    def _record_rows(self, rows: pd.DataFrame) -> None:
        """Write the rows, or check them against those recorded. A damaged rows file is moved to OUT/damaged/ and
        written again: the spec determines the rows, and the units are checked against them (Store.unit)."""
        rows = rows.reset_index(drop=True)
        if self.rows_path.exists():
            try:
                recorded = self.rows()
            except StoreError:
                move_aside(self.rows_path, self.damaged_dir)
            else:
                try:
                    pd.testing.assert_frame_equal(recorded, rows, check_dtype=False)
                except AssertionError:
                    raise StoreError(f"{self.out} scores other training rows than these data files give (they "
                                     "changed, or are other files): not mixing results. Use another --out.") from None
                return
        write_table(rows, self.rows_path)
        self._rows_cache = None

    def rows(self) -> pd.DataFrame:
        """The training rows a memorization run scores (schema.ROW_COLUMNS)."""
        if self._rows_cache is None:
            if not self.rows_path.exists():
                raise StoreError(f"{self.out} records no training rows: not a memorization folder")
            rows = self._table(self.rows_path, "run the memorization command that made this folder again: it moves "
                                               "the file aside and writes it again")
            if tuple(rows.columns) != ROW_COLUMNS:
                raise StoreError(f"{self.rows_path} is damaged (columns {', '.join(rows.columns)}); run the "
                                 "memorization command that made this folder again: it moves the file aside and "
                                 "writes it again")
            self._rows_cache = rows
        return self._rows_cache

    def is_sweep(self) -> bool:
        return self.manifest_path.exists()

    def _manifest(self) -> dict:
        """sweep.json, parsed: spec, suite_aliases, requested."""
        if self._manifest_cache is not None:
            return self._manifest_cache
        if not self.manifest_path.exists():
            raise StoreError(f"{self.out} is not a sweep folder (no sweep.json); run `trajectories sweep` first")
        try:
            data = json.loads(self.manifest_path.read_text())
            self._manifest_cache = {
                "spec": spec_from_dict(data["spec"]),
                "suite_aliases": tuple(map(str, data.get("suite_aliases") or ())),
                "requested": [(str(model), int(step)) for model, step in data["requested"]],
            }
        except _DAMAGE as err:
            raise StoreError(
                f"{self.manifest_path} is damaged ({_why(err)}). It records what this folder measures; to recover, "
                "move it aside and run the sweep command that made this folder again: units that match the command "
                f"are kept, the others are moved to {self.damaged_dir} and evaluated again"
            ) from err
        return self._manifest_cache

    def spec(self) -> SweepSpec | MemorizationSpec:
        return self._manifest()["spec"]

    def requested(self) -> list[Key]:
        return list(self._manifest()["requested"])

    # ---------------------------------------------------------------- units
    def _path(self, key: Key, suffix: str) -> Path:
        model, step = key
        return self.units / model / f"step{step}{suffix}"

    def unit(self, key: Key) -> StoredUnit:
        """What OUT holds for the unit: done, failed, damaged (with the reason) or pending. Never raises for a
        damaged unit file."""
        path = self._path(key, ".json")
        try:
            text, written_at = path.read_bytes(), path.stat().st_mtime
        except FileNotFoundError:
            return self._failure_state(key)
        except OSError as err:
            return StoredUnit(key, UnitState.DAMAGED, damage=f"{path}: cannot be read ({_why(err)})")
        record, problem = self._check_record(key, text)
        if problem:
            return StoredUnit(key, UnitState.DAMAGED, damage=f"{path}: {problem}")
        return StoredUnit(key, UnitState.DONE, record=record, written_at=written_at)

    def _check_record(self, key: Key, text: bytes) -> tuple[UnitRecord | None, str]:
        """The record, or why it does not count: unparseable, another unit's, another spec's, or its items file
        unreadable or short."""
        if not text.strip():
            return None, "empty file"
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                return None, f"holds a JSON {type(data).__name__}, not a unit record"
            record = UnitRecord.from_json(data)
            expected_rows = sum(result.item_rows for result in record.tasks.values())
        except _DAMAGE as err:
            return None, f"not a unit record ({_why(err)})"
        if record.key != key:
            return None, f"holds the record of {record.model.name} step {record.step}"
        if self.is_sweep():
            folder = self._manifest()
            conflicts = folder["spec"].conflicts(replace(record.spec, suite_fingerprint=tuple(
                (m, d) for m, d in record.spec.suite_fingerprint if m == key[0])), folder["suite_aliases"])
            if conflicts:
                return None, "made with another spec (" + ", ".join(
                    f"{k}: {mine!r} here, {theirs!r} in the unit" for k, (mine, theirs) in conflicts.items()) + ")"
        if record.spec.kind == MEMORIZATION:
            try:
                expected_rows = self._rows_seen(record)
            except StoreError as err:  # the folder's rows file: a run writes it again, then the unit may check out
                return None, f"cannot be checked: {err}"
            return self._check_items(key, MEMORIZATION_COLUMNS, expected_rows, record)
        if set(record.tasks) != set(record.spec.tasks):
            return None, "its results do not hold the tasks of its spec"
        if record.spec.limit and any(result.n > record.spec.limit for result in record.tasks.values()):
            return None, f"counts more items per task than its limit {record.spec.limit}"
        return self._check_items(key, ITEM_COLUMNS, expected_rows, record)

    def _check_items(self, key: Key, columns: tuple[str, ...], expected_rows: int,
                     record: UnitRecord) -> tuple[UnitRecord | None, str]:
        items = self._path(key, ".items.parquet")
        try:
            meta = pq.read_metadata(items)
        except FileNotFoundError:
            return None, f"its items file {items.name} is missing"
        except _DAMAGE as err:
            return None, f"its items file {items.name} is unreadable ({_why(err)})"
        if tuple(meta.schema.names) != columns:
            return None, f"its items file {items.name} has columns {', '.join(meta.schema.names)}"
        if meta.num_rows != expected_rows:
            return None, f"its items file {items.name} has {meta.num_rows} rows; expected {expected_rows}"
        return record, ""

    def _rows_seen(self, record: UnitRecord) -> int:
        """How many of the folder's rows a memorization unit scores: those of its model's data seen before its
        step."""
        rows = self.rows()
        return int(((rows.data == data_variant(record.model)) & (rows.seen_at_step < record.step)).sum())

    def _failure_state(self, key: Key) -> StoredUnit:
        path = self._path(key, ".failed.json")
        try:
            failure = FailureRecord.from_json(json.loads(path.read_bytes()), at=path.stat().st_mtime)
        except FileNotFoundError:
            return StoredUnit(key, UnitState.PENDING)
        except _DAMAGE as err:
            return StoredUnit(key, UnitState.DAMAGED, damage=f"{path}: not a failure record ({_why(err)})")
        if failure.key != key:
            return StoredUnit(key, UnitState.DAMAGED,
                              damage=f"{path}: holds the failure of {failure.model} step {failure.step}")
        return StoredUnit(key, UnitState.FAILED, failure=failure)

    def is_done(self, key: Key) -> bool:
        return self.unit(key).state is UnitState.DONE

    def record(self, key: Key) -> UnitRecord | None:
        """The unit's record if it is done, else None."""
        return self.unit(key).record

    def failure(self, key: Key) -> FailureRecord | None:
        """The unit's last failure record (with `at`, when it was written) if it failed, else None."""
        return self.unit(key).failure

    def save_unit(self, ckpt: Checkpoint, result: UnitResult, spec: SweepSpec, by: dict | None = None,
                  same_weights_as: int | None = None) -> None:
        """`by`: who evaluated it (sweep, job, host, pid, log), as `locks.owner` gives it; `same_weights_as`: the step
        whose results these are, for a unit not evaluated because its weights are identical to that step's."""
        write_table(result.items, self._path(ckpt.key, ".items.parquet"))
        write_json(self._path(ckpt.key, ".json"), UnitRecord.of(ckpt, result, spec, by, same_weights_as).to_json())
        self._path(ckpt.key, ".failed.json").unlink(missing_ok=True)

    def save_failure(self, ckpt: Checkpoint, reason: str, by: dict | None = None) -> None:
        write_json(self._path(ckpt.key, ".failed.json"), FailureRecord.of(ckpt, reason, by).to_json())

    def set_aside(self, key: Key) -> list[Path]:
        """Move a damaged unit's files to OUT/damaged/<model>/ (never overwriting one set aside before), so the unit
        can be stored again; call it holding the unit's lock. Returns where they went."""
        moved = []
        for suffix in (".json", ".items.parquet", ".failed.json"):
            try:
                moved.append(move_aside(self._path(key, suffix), self.damaged_dir / key[0]))
            except FileNotFoundError:
                pass
        return moved

    def _unit_keys(self) -> list[Key]:
        keys = set()
        for path in self.units.glob("*/step*.json"):
            if match := _UNIT_FILE.fullmatch(path.name):
                keys.add((path.parent.name, int(match[1])))
        return sorted(keys)

    def stored_units(self) -> list[StoredUnit]:
        """Every unit OUT holds a record or a failure record of, in model then step order."""
        return [self.unit(key) for key in self._unit_keys()]

    def records(self) -> list[UnitRecord]:
        """Every completed unit's record, in model then step order."""
        return [u.record for u in self.stored_units() if u.state is UnitState.DONE]

    def failures(self) -> list[FailureRecord]:
        return [u.failure for u in self.stored_units() if u.state is UnitState.FAILED]

    def damaged(self) -> list[StoredUnit]:
        return [u for u in self.stored_units() if u.state is UnitState.DAMAGED]

    def warn_damaged(self) -> None:
        """A warning naming the damaged units that are left out (`collect`, `analyze`)."""
        if damaged := self.damaged():
            listed = "; ".join(f"{u.key[0]} step {u.key[1]}: {u.damage}" for u in damaged)
            warnings.warn(f"skipping {len(damaged)} damaged units ({listed}); `trajectories sweep` with the same "
                          f"options moves their files to {self.damaged_dir} and evaluates them again",
                          SkippedWarning, stacklevel=2)

    def unit_items(self, key: Key) -> pd.DataFrame:
        """Per-item results of one completed unit."""
        return pd.read_parquet(self._path(key, ".items.parquet"))

    def written_at(self, key: Key) -> float:
        """When the unit's record was written (a POSIX time)."""
        return self._path(key, ".json").stat().st_mtime

    def items(self, model: str | None = None, records: list[UnitRecord] | None = None) -> pd.DataFrame | None:
        """Per-item results of every completed unit (of one model), and of imported results for tasks no unit
        has; None when there are none. `records`: the completed units' records, when the caller has them already."""
        frames = []
        for record in self.records() if records is None else records:
            if model is not None and record.model.name != model:
                continue
            try:
                frames.append(self.unit_items(record.key))
            except _DAMAGE as err:  # its footer read, but a page inside is broken
                warnings.warn(f"skipping the items of {record.model.name} step {record.step}: "
                              f"{self._path(record.key, '.items.parquet')} is damaged ({_why(err)})", SkippedWarning,
                              stacklevel=2)
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
            match, holder = _LOCK_FILE.fullmatch(path.name), locks.read(path)
            if match and holder is not None:
                found.append(holder | {"model": path.parent.name, "step": int(match[1]),
                                       "stale": locks.is_stale(holder, me)})
        return found

    # ---------------------------------------------------------------- jobs
    def save_job(self, job: str, record: dict) -> None:
        """What a worker process or Slurm job was given (its units, log, executor), for `status`."""
        write_json(self.jobs_dir / f"{job}.units.json", record)

    def jobs(self) -> tuple[list[dict], list[str]]:
        """The job records, and what is wrong with each damaged one."""
        found, damaged = [], []
        for path in sorted(self.jobs_dir.glob("*.units.json")):
            try:
                record = json.loads(path.read_bytes())
                record["units"] = [(str(model), int(step)) for model, step in record["units"]]
                record = record | {k: str(record[k]) for k in ("executor", "job", "host", "log")}
            except _DAMAGE as err:
                damaged.append(f"{path}: not a job record ({_why(err)})")
                continue
            found.append(record)
        return found, damaged

    # ---------------------------------------------------------------- adaptive sweeps
    def decisions(self) -> list[Decision]:
        """Every decision adaptive sweeps into OUT made, in order (empty when none did)."""
        try:
            lines = self.decisions_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        try:
            return [Decision.from_json(line) for line in lines if line.strip()]
        except _DAMAGE as err:
            raise StoreError(
                f"{self.decisions_path} is damaged ({_why(err)}); it only explains the choices made (the next choices "
                "depend on the results alone): move it aside and run the adaptive sweep again") from err

    def add_decisions(self, decisions: list[Decision]) -> None:
        """Append decisions, before the checkpoints they choose are evaluated, so a run that is stopped resumes
        them. The file is rewritten whole (atomically): a crash leaves the old decisions or the new, never half."""
        if decisions:
            lines = [d.to_json() for d in self.decisions() + list(decisions)]
            write_text(self.decisions_path, "\n".join(lines) + "\n")

    # ---------------------------------------------------------------- tables
    @staticmethod
    def _table(path: Path, recovery: str) -> pd.DataFrame:
        try:
            return pd.read_parquet(path)
        except _DAMAGE as err:
            raise StoreError(f"{path} is damaged ({_why(err)}); {recovery}") from err

    def curves(self) -> pd.DataFrame:
        if not self.curves_path.exists():
            raise StoreError(f"{self.out} has no curves table; run `trajectories sweep` or "
                             f"`trajectories collect {self.out}` first")
        return with_curve_defaults(self._table(self.curves_path, f"rebuild it with `trajectories collect {self.out}`"))

    def save_curves(self, table: pd.DataFrame) -> tuple[Path, Path]:
        csv = self.curves_path.with_suffix(".csv")
        write_table(table, self.curves_path)
        write_table(table, csv)
        return self.curves_path, csv

    def imported(self) -> pd.DataFrame | None:
        if not self.imported_path.exists():
            return None
        return with_curve_defaults(self._table(self.imported_path, REIMPORT))

    def save_imported(self, table: pd.DataFrame) -> None:
        write_table(table, self.imported_path)

    def report_table(self, name: str) -> pd.DataFrame | None:
        """A table `analyze` wrote (OUT/report/<name>.csv), or None."""
        path = self.report_dir / f"{name}.csv"
        return pd.read_csv(path) if path.exists() else None

    def imported_items(self) -> pd.DataFrame | None:
        return self._table(self.imported_items_path, REIMPORT) if self.imported_items_path.exists() else None

    def save_imported_items(self, items: pd.DataFrame) -> None:
        write_table(items, self.imported_items_path)

    def wandb_run(self) -> dict | None:
        """{"project", "entity", "run_id", "logged": [[model, step], ...]} of the sweep's W&B run, if any."""
        if not self.wandb_path.exists():
            return None
        try:
            return dict(json.loads(self.wandb_path.read_bytes()))
        except _DAMAGE as err:
            raise StoreError(f"{self.wandb_path} is damaged ({_why(err)}); move it aside to log to a new run") from err

    def save_wandb_run(self, run: dict) -> None:
        write_json(self.wandb_path, run)

    def save_report_table(self, name: str, table: pd.DataFrame) -> Path:
        write_table(table, self.report_dir / f"{name}.csv")
        return self.report_dir / f"{name}.csv"

    def save_report_file(self, name: str, text: str) -> Path:
        write_text(self.report_dir / name, text)
        return self.report_dir / name
