"""What the package knows about Slurm: job states (squeue), its --time formats, and submitting a job array through
submitit. The executor that uses them is executors.SlurmExecutor; unit locks ask here whether a holder's job ended.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from trajectories.errors import UserError

# squeue's final states, and ENDED for a job it no longer lists.
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "ENDED", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT"}
MAX_REQUEUES = 20  # a job that times out or is preempted is requeued up to this many times


class SlurmError(UserError):
    """Slurm is not available here, or an option is not in a form Slurm takes."""


def job_states(job_ids: list[str]) -> dict[str, str] | None:
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


def minutes(text: str) -> int:
    """Slurm's --time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) as whole minutes, which submitit needs."""
    days, _, clock = text.strip().rpartition("-")
    try:
        parts = [int(p) for p in clock.split(":")]
        days_n = int(days) if days else 0
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3:
        raise SlurmError(f"--time {text!r}: expected minutes, H:M:S or D-H:M:S")
    if days:
        hours, minutes_, seconds = (parts + [0, 0])[:3]
    else:
        hours, minutes_, seconds = parts if len(parts) == 3 else [0, *parts, 0][:3]
    return (days_n * 24 + hours) * 60 + minutes_ + (seconds > 0)


@dataclass(frozen=True)
class ArrayOptions:
    """Resources of each job of an array."""

    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int | None = None
    mem: str | None = None
    time: str = "4:00:00"
    array_parallelism: int = 64


def check_available() -> None:
    import submitit

    if submitit.SlurmExecutor.affinity() < 0:
        raise SlurmError("--executor slurm: no Slurm here (srun not found); use local or processes")


def submit_array(folder, job, groups: list, options: ArrayOptions) -> list:
    """Submit `job(group)` for every group as one job array; submitit's job objects, in the groups' order. Jobs are
    submitted with --signal=USR2 before their time limit, on which submitit requeues them (MAX_REQUEUES times)."""
    import submitit

    executor = submitit.SlurmExecutor(folder, max_num_timeout=MAX_REQUEUES)
    extra = {"partition": options.partition, "cpus_per_task": options.cpus_per_job, "mem": options.mem}
    executor.update_parameters(
        job_name="trajectories", time=minutes(options.time), gpus_per_node=options.gpus_per_job or None,
        array_parallelism=options.array_parallelism, stderr_to_stdout=True,
        **{k: v for k, v in extra.items() if v is not None},
    )
    return executor.map_array(job, groups)
