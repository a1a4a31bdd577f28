"""`trajectories status OUT`: what a results folder holds and who is working on it: done, failed and pending units
per model, why units failed, who holds each unit being evaluated, and the jobs that still have units left."""

from __future__ import annotations

import socket

from trajectories import locks, slurm
from trajectories.integrity import reuse_lines
from trajectories.store import Store


def status_lines(store: Store) -> list[str]:
    spec, requested = store.spec(), store.requested()
    records = store.records()
    done = {r.key for r in records}
    failures = {f.key: f.reason for f in store.failures() if f.key not in done}
    lines = [f"{store.out}: suite {spec.suite}, {len(spec.tasks)} tasks, limit {spec.limit}, dtype {spec.dtype}",
             f"{'model':<24}{'done':>6}{'failed':>8}{'pending':>9}"]
    for model in sorted({m for m, _ in requested}):
        units = [u for u in requested if u[0] == model]
        n_done, n_failed = sum(u in done for u in units), sum(u in failures for u in units)
        lines.append(f"{model:<24}{n_done:>6}{n_failed:>8}{len(units) - n_done - n_failed:>9}")
    lines += [f"  failed {model} step {step}: {reason}" for (model, step), reason in sorted(failures.items())]
    reused = {r.key: r.same_weights_as for r in records if r.same_weights_as is not None}
    lines += [f"  done {line} (results reused)" for line in reuse_lines(reused)]
    return lines + job_lines(store, done | set(failures))


def job_lines(store: Store, finished: set[tuple[str, int]]) -> list[str]:
    """Who holds each unit being evaluated (job, state, host, heartbeat, log), then each recorded job that still has
    units left, with its state and log."""
    held = store.locks()
    open_jobs = [r | {"left": [u for u in r["units"] if tuple(u) not in finished]} for r in store.jobs()]
    open_jobs = [r for r in open_jobs if r["left"]]
    slurm_jobs = {r["job"] for r in open_jobs if r["executor"] == "slurm"}
    slurm_jobs |= {h["job"] for h in held if h.get("executor") == "slurm"}
    states = slurm.job_states(sorted(slurm_jobs)) or {}
    lines = ["in progress:"] if held else []
    for h in held:
        who = f"job {h['job']} {states.get(h['job'], '')}".rstrip() if h.get("job") else "sweep"
        stale = ", STALE: its holder is gone, the next sweep takes the unit over" if h["stale"] else ""
        lines.append(f"  {h['model']} step {h['step']}: {who} on {h.get('host')} pid {h.get('pid')}, "
                     f"heartbeat {h['heartbeat_age']:.0f} s ago{stale}")
        if h.get("log"):
            lines.append(f"    log {h['log']}")
    lines += ["jobs with units left:"] if open_jobs else []
    for r in open_jobs:
        if r["executor"] == "slurm":
            state = states.get(r["job"], "UNKNOWN")
        else:
            state = "RUNNING" if r["host"] == socket.gethostname() and locks.pid_alive(int(r["job"])) else "ENDED"
        lines.append(f"  {r['job']} {state}: {len(r['left'])} of {len(r['units'])} units left; log {r['log']}")
    return lines
