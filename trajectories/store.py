"""The results store: one folder per sweep, one pair of files per unit, every file written atomically.

    OUT/sweep.json                         the SweepSpec (a sweep with another spec is refused) and suite
    OUT/units/<model>/step<N>.items.parquet  per-item results (schema.ITEM_COLUMNS), written first
    OUT/units/<model>/step<N>.json         lm-eval's results + provenance; written last, so it marks the unit done
    OUT/units/<model>/step<N>.failed.json  why the unit failed (removed when it later succeeds)
    OUT/units/<model>/step<N>.lock         held while a process evaluates the unit: owner, host, pid, job, log
    OUT/curves.parquet, OUT/curves.csv     the tidy curve table (schema.CURVE_COLUMNS), rebuilt after each sweep

A unit counts as done only when both its files exist, so a crash or kill at any moment leaves at worst a temp file
(ignored and cleaned up) and the unit is redone.

Several sweeps may work on one OUT at once (local runs, worker processes, Slurm jobs): a unit is evaluated only
under its lock, created atomically with O_CREAT|O_EXCL. A background thread touches every lock a process holds, so
a lock's mtime is its holder's heartbeat. A lock whose heartbeat stopped, whose process is gone from this host or
whose Slurm job has ended is stale and reclaimed, so a crash, kill -9 or scancel never blocks a unit for good.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from trajectories.errors import UserError
from trajectories.schema import Checkpoint, SweepSpec

TMP_MARK = ".tmp-"
TEMP_GRACE_S = 60  # a temp file younger than this may be another sweep's write in progress
LOCK_HEARTBEAT_S = 30
LOCK_STALE_S = 600  # no heartbeat for this long: the holder is dead or cut off
# squeue's final states, and ENDED for a job it no longer lists.
SLURM_ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "ENDED", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
               "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT"}


class StoreError(UserError):
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
        self.clean_temp_files(self.out, older_than=TEMP_GRACE_S)

    def requested(self) -> list[tuple[str, int]]:
        self.spec()
        return [tuple(unit) for unit in json.loads((self.out / "sweep.json").read_text())["requested"]]

    def spec(self) -> SweepSpec:
        manifest = self.out / "sweep.json"
        if not manifest.exists():
            raise StoreError(f"{self.out} is not a sweep folder (no sweep.json); run `trajectories sweep` first")
        return SweepSpec.from_dict(json.loads(manifest.read_text())["spec"])

    @staticmethod
    def clean_temp_files(folder: Path, pattern: str = "*", older_than: float = 0) -> None:
        for tmp in folder.rglob(f".{pattern}{TMP_MARK}*"):
            try:
                if time.time() - tmp.stat().st_mtime >= older_than:
                    tmp.unlink()
            except FileNotFoundError:
                pass

    # ---------------------------------------------------------------- units
    def _base(self, model: str, step: int) -> Path:
        return self.units / model / f"step{step}"

    def is_done(self, ckpt: Checkpoint) -> bool:
        base = self._base(*ckpt.key)
        return base.with_suffix(".json").exists() and base.with_suffix(".items.parquet").exists()

    def record(self, ckpt: Checkpoint) -> dict | None:
        """The unit's record if it is done, else None."""
        try:
            return json.loads(self._base(*ckpt.key).with_suffix(".json").read_text()) if self.is_done(ckpt) else None
        except FileNotFoundError:
            return None

    def failure(self, ckpt: Checkpoint) -> dict | None:
        """The unit's last failure record (with `at`, when it was written), or None."""
        path = self._base(*ckpt.key).with_suffix(".failed.json")
        try:
            return json.loads(path.read_text()) | {"at": path.stat().st_mtime}
        except FileNotFoundError:
            return None

    def save_unit(self, ckpt: Checkpoint, result, spec: SweepSpec, by: dict | None = None) -> None:
        """`by`: who evaluated it (sweep, job, host, pid, log), as `lock_owner` gives it."""
        base = self._base(*ckpt.key)
        write_table(result.items, base.with_suffix(".items.parquet"))
        write_json(base.with_suffix(".json"), {
            "suite": ckpt.suite, "model": asdict(ckpt.model), "step": ckpt.step, "tokens": ckpt.tokens,
            "revision": ckpt.revision, "path": ckpt.path, "spec": spec.as_dict(), "tasks": result.tasks,
            "seconds": result.seconds, **result.provenance, "by": by,
        })
        base.with_suffix(".failed.json").unlink(missing_ok=True)

    def save_failure(self, ckpt: Checkpoint, reason: str, by: dict | None = None) -> None:
        write_json(self._base(*ckpt.key).with_suffix(".failed.json"), {
            "model": ckpt.model.name, "step": ckpt.step, "source": ckpt.source, "revision": ckpt.revision,
            "reason": reason, "by": by,
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

    # ---------------------------------------------------------------- locks
    def _lock_path(self, ckpt: Checkpoint) -> Path:
        return self._base(*ckpt.key).with_suffix(".lock")

    def lock(self, ckpt: Checkpoint, owner: dict) -> bool:
        """Take the unit's lock for this process (reclaiming a stale one); False if another live process holds it.
        Leftover temp files of the unit are removed once it is ours: no one else can be writing them."""
        path = self._lock_path(ckpt)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not _create_lock(path, owner):
            holder = read_lock(path)
            if holder is not None and not lock_is_stale(holder, owner):
                return False
            if not _reclaim(path, holder, owner):
                return False
        _heartbeat.hold(path)
        self.clean_temp_files(path.parent, f"step{ckpt.step}.")
        return True

    def is_locked(self, ckpt: Checkpoint) -> bool:
        return self._lock_path(ckpt).exists()

    def unlock(self, ckpt: Checkpoint, owner: dict) -> None:
        path = self._lock_path(ckpt)
        _heartbeat.release(path)
        holder = read_lock(path)
        if holder and holder.get("token") == owner["token"]:  # never remove a lock that was reclaimed from us
            path.unlink(missing_ok=True)

    def locks(self) -> list[dict]:
        """Every unit lock: its holder's record plus model, step, seconds since its heartbeat, and whether it is
        stale (then the next sweep reclaims it)."""
        found = []
        for path in sorted(self.units.glob("*/step*.lock")):
            holder = read_lock(path)
            if holder is not None:
                found.append(holder | {"model": path.parent.name, "step": int(path.stem.removeprefix("step")),
                                       "stale": lock_is_stale(holder, lock_owner())})
        return found


def lock_owner(sweep: str | None = None, job: str | None = None, log: str | None = None,
               executor: str | None = None) -> dict:
    """This process as a lock holder and evaluator: `sweep` is the id of the sweep it works for, `job` names the
    Slurm or worker job running it, `log` where it writes, `executor` is submitit's ("slurm" or "local")."""
    return {"sweep": sweep, "host": socket.gethostname(), "pid": os.getpid(), "job": job, "log": log,
            "executor": executor, "token": f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}",
            "since": time.time()}


def read_lock(path: Path) -> dict | None:
    """The holder's record with its heartbeat age; None if the lock is gone. A lock created but not yet written
    reads as a fresh holder with no identity."""
    try:
        age = time.time() - path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        holder = {}
    return holder | {"heartbeat_age": age}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_is_stale(holder: dict, me: dict) -> bool:
    if holder["heartbeat_age"] > LOCK_STALE_S:
        return True
    if holder.get("job") is not None and holder["job"] == me["job"]:
        return holder.get("pid") != me["pid"]  # a requeued Slurm job runs again under its id: its old lock is its own
    if holder.get("host") == me["host"] and holder.get("pid") is not None:
        return holder["pid"] != me["pid"] and not pid_alive(holder["pid"])
    if holder.get("executor") == "slurm":  # scancel or a node failure: Slurm knows before the heartbeat times out
        return (slurm_states([holder["job"]]) or {}).get(holder["job"]) in SLURM_ENDED
    return False


def _create_lock(path: Path, owner: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(owner, f)
    return True


def _reclaim(path: Path, stale: dict | None, owner: dict) -> bool:
    """Replace a stale lock by ours. A guard file makes the check-and-replace one step, so two processes reclaiming
    the same lock cannot both win; a guard left by a process that died within those microseconds expires."""
    guard = path.with_name(path.name + ".reclaim")
    if not _create_lock(guard, owner):
        holder = read_lock(guard)
        if holder is not None and holder["heartbeat_age"] > TEMP_GRACE_S:
            guard.unlink(missing_ok=True)
        return False
    try:
        now = read_lock(path)
        if now is not None:
            if stale is None or now.get("token") != stale.get("token") or not lock_is_stale(now, owner):
                return False  # it changed hands meanwhile: a live process holds it now
            path.unlink()
        return _create_lock(path, owner)
    finally:
        guard.unlink(missing_ok=True)


class _Heartbeat:
    """One daemon thread per process touching the locks it holds, so their mtime shows the holder is alive."""

    def __init__(self):
        self.held: set[Path] = set()
        self.mutex = threading.Lock()
        self.thread: threading.Thread | None = None

    def hold(self, path: Path) -> None:
        with self.mutex:
            self.held.add(path)
            if self.thread is None:
                self.thread = threading.Thread(target=self._beat, name="lock-heartbeat", daemon=True)
                self.thread.start()

    def release(self, path: Path) -> None:
        with self.mutex:
            self.held.discard(path)

    def _beat(self) -> None:
        while True:
            time.sleep(LOCK_HEARTBEAT_S)
            with self.mutex:
                for path in self.held:
                    try:
                        os.utime(path)
                    except FileNotFoundError:
                        pass


_heartbeat = _Heartbeat()


def slurm_states(job_ids: list[str]) -> dict[str, str] | None:
    """Each job's state as squeue reports it, "ENDED" once squeue no longer lists it; None if Slurm did not
    answer (not installed, or the controller is busy)."""
    if not job_ids:
        return {}
    try:
        listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(job_ids)],
                                capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    if listed.returncode and "Invalid job id" not in listed.stderr:
        return None
    states = dict(line.split("|", 1) for line in listed.stdout.split())
    return {job: states.get(job, "ENDED") for job in job_ids}
