"""`trajectories status OUT`: what a results folder holds and who is working on it: done, failed and pending units
per model, why units failed, who holds each unit being evaluated, and the jobs that still have units left."""

from __future__ import annotations

import socket

from trajectories import locks, slurm
from trajectories.integrity import reuse_lines
from trajectories.schema import UnitState
from trajectories.store import Store


def status_lines(store: Store) -> list[str]:
    spec, requested = store.spec(), store.requested()
    units = {u.key: u for u in store.stored_units()}
    done = {k for k, u in units.items() if u.state is UnitState.DONE}
    failed = {k: u.failure.reason for k, u in units.items() if u.state is UnitState.FAILED}
    damaged = {k: u.damage for k, u in units.items() if u.state is UnitState.DAMAGED}
    lines = [f"{store.out}: {spec.kind}, {spec.describe()}",
             f"{'model':<24}{'done':>6}{'failed':>8}{'damaged':>9}{'pending':>9}"]
    for model in sorted({m for m, _ in requested}):
        mine = [u for u in requested if u[0] == model]
        n_done, n_failed, n_damaged = (sum(u in found for u in mine) for found in (done, failed, damaged))
        lines.append(f"{model:<24}{n_done:>6}{n_failed:>8}{n_damaged:>9}{len(mine) - n_done - n_failed - n_damaged:>9}")
    last = {d.model: d for d in store.decisions()}
    lines += [f"  adaptive, last decision: {d.describe()}" for _, d in sorted(last.items())]
    if last:
        lines.append(f"  (decisions in {store.decisions_path}; checkpoints not chosen count as pending)")
    lines += [f"  failed {model} step {step}: {reason}" for (model, step), reason in sorted(failed.items())]
    reused = {k: u.record.same_weights_as for k, u in units.items()
              if u.state is UnitState.DONE and u.record.same_weights_as is not None}
    lines += [f"  done {line} (results reused)" for line in reuse_lines(reused)]
    lines += [f"  damaged {model} step {step}: {why}" for (model, step), why in sorted(damaged.items())]
    if damaged:
        lines.append(f"  the next sweep with the same options moves damaged units' files to {store.damaged_dir} and "
                     "evaluates them again")
    return lines + job_lines(store, done | set(failed))


def job_lines(store: Store, finished: set[tuple[str, int]]) -> list[str]:
    """Who holds each unit being evaluated (job, state, host, heartbeat, log), then each recorded job that still has
    units left, with its state and log, and job records that cannot be read."""
    held = store.locks()
    jobs, damaged_jobs = store.jobs()
    open_jobs = [r | {"left": [u for u in r["units"] if u not in finished]} for r in jobs]
    open_jobs = [r for r in open_jobs if r["left"]]
    slurm_jobs = {r["job"] for r in open_jobs if r["executor"] == "slurm"}
    slurm_jobs |= {h["job"] for h in held if h.get("executor") == "slurm"}
    states = slurm.job_states(sorted(slurm_jobs)) or {}
    lines = ["in progress:"] if held else []
    for h in held:
        stale = ", STALE: its holder is gone, the next sweep takes the unit over" if h["stale"] else ""
        if not h.get("token"):
            lines.append(f"  {h['model']} step {h['step']}: an empty or unreadable lock, {h['heartbeat_age']:.0f} s "
                         f"old{stale}")
            continue
        who = f"job {h['job']} {states.get(h['job'], '')}".rstrip() if h.get("job") else "sweep"
        lines.append(f"  {h['model']} step {h['step']}: {who} on {h.get('host')} pid {h.get('pid')}, "
                     f"heartbeat {h['heartbeat_age']:.0f} s ago{stale}")
        if h.get("log"):
            lines.append(f"    log {h['log']}")
    lines += ["jobs with units left:"] if open_jobs else []
    for r in open_jobs:
        if r["executor"] == "slurm":
            state = states.get(r["job"], "UNKNOWN")
        else:
            here = r["host"] == socket.gethostname() and r["job"].isdigit()  # a worker process: its pid
            state = "RUNNING" if here and locks.pid_alive(int(r["job"])) else "ENDED"
        lines.append(f"  {r['job']} {state}: {len(r['left'])} of {len(r['units'])} units left; log {r['log']}")
    return lines + [f"damaged job record {why}" for why in damaged_jobs]
