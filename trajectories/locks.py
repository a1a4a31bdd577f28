"""Unit locks: a unit is evaluated only under its lock file, so any number of sweeps (local runs, worker processes,
Slurm jobs) can work on one results folder at once without evaluating a unit twice.

A lock is created atomically with O_CREAT|O_EXCL and holds its owner's record (sweep, host, pid, job, log). A
background thread touches every lock a process holds, so a lock's mtime is its holder's heartbeat. A lock whose
heartbeat stopped, whose process is gone from this host or whose Slurm job has ended is stale and reclaimed, so a
crash, kill -9 or scancel never blocks a unit for good.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from trajectories import slurm
from trajectories.errors import WriteError

HEARTBEAT_S = 30
STALE_S = 600  # no heartbeat for this long: the holder is dead or cut off
RECLAIM_GUARD_S = 60  # a reclaim guard older than this was left by a process that died while reclaiming
UNWRITTEN_S = 10  # a lock is written microseconds after it is created: one still empty or unreadable after this is
# the leftover of a process that died in between, or of a full disk


def owner(sweep: str | None = None, job: str | None = None, log: str | None = None,
          executor: str | None = None) -> dict:
    """This process as a lock holder and evaluator: `sweep` is the id of the sweep it works for, `job` names the
    Slurm or worker job running it, `log` where it writes, `executor` is submitit's ("slurm" or "local")."""
    return {"sweep": sweep, "host": socket.gethostname(), "pid": os.getpid(), "job": job, "log": log,
            "executor": executor, "token": f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}",
            "since": time.time()}


def read(path: Path) -> dict | None:
    """The holder's record with its heartbeat age; None if the lock is gone. A lock created but not yet written, or
    unreadable, reads as a holder with no identity (no token)."""
    try:
        age = time.time() - path.stat().st_mtime
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = {}
    return (holder if isinstance(holder, dict) else {}) | {"heartbeat_age": age}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(holder: dict, me: dict) -> bool:
    if holder["heartbeat_age"] > STALE_S or (not holder.get("token") and holder["heartbeat_age"] > UNWRITTEN_S):
        return True
    if holder.get("job") is not None and holder["job"] == me["job"]:
        return holder.get("pid") != me["pid"]  # a requeued Slurm job runs again under its id: its old lock is its own
    if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int):
        return holder["pid"] != me["pid"] and not pid_alive(holder["pid"])
    if holder.get("executor") == "slurm":  # scancel or a node failure: Slurm knows before the heartbeat times out
        return (slurm.job_states([holder["job"]]) or {}).get(holder["job"]) in slurm.ENDED
    return False


def acquire(path: Path, me: dict) -> bool:
    """Take the lock at `path` for `me` (reclaiming a stale one); False if another live process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not _create(path, me):
        holder = read(path)
        if holder is not None and not is_stale(holder, me):
            return False
        if not _reclaim(path, holder, me):
            return False
    _heartbeat.hold(path)
    return True


def release(path: Path, me: dict) -> None:
    _heartbeat.release(path)
    holder = read(path)
    if holder and holder.get("token") == me["token"]:  # never remove a lock that was reclaimed from us
        path.unlink(missing_ok=True)


def _create(path: Path, me: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as err:
        raise WriteError(err.errno, err.strerror, str(path)) from err
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
    except OSError as err:  # a full disk: an empty lock would only make others wait
        path.unlink(missing_ok=True)
        raise WriteError(err.errno, err.strerror, str(path)) from err
    return True


def _reclaim(path: Path, stale: dict | None, me: dict) -> bool:
    """Replace a stale lock by ours. A guard file makes the check-and-replace one step, so two processes reclaiming
    the same lock cannot both win; a guard left by a process that died within those microseconds expires."""
    guard = path.with_name(path.name + ".reclaim")
    if not _create(guard, me):
        holder = read(guard)
        if holder is not None and holder["heartbeat_age"] > RECLAIM_GUARD_S:
            guard.unlink(missing_ok=True)
        return False
    try:
        now = read(path)
        if now is not None:
            if stale is None or now.get("token") != stale.get("token") or not is_stale(now, me):
                return False  # it changed hands meanwhile: a live process holds it now
            path.unlink()
        return _create(path, me)
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
            time.sleep(HEARTBEAT_S)
            with self.mutex:
                for path in self.held:
                    try:
                        os.utime(path)
                    except FileNotFoundError:
                        pass


_heartbeat = _Heartbeat()
