"""Sweep: evaluate every pending (model, step) unit and store it; resumable, one failure never stops the rest."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from trajectories.curves import collect
from trajectories.evaluate import Evaluator
from trajectories.schema import Checkpoint, EvalSettings, SweepSpec
from trajectories.store import Store


@dataclass
class SweepSummary:
    out: Path
    done: list[Checkpoint] = field(default_factory=list)
    skipped: list[Checkpoint] = field(default_factory=list)
    failed: list[tuple[Checkpoint, str]] = field(default_factory=list)
    seconds: float = 0.0
    model_loads: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    def report(self) -> str:
        lines = [
            f"sweep: {len(self.done)} evaluated, {len(self.skipped)} already done, {len(self.failed)} failed "
            f"in {self.seconds:.1f} s"
        ]
        lines += [f"  FAILED {ckpt.model.name} step {ckpt.step}: {reason}" for ckpt, reason in self.failed]
        lines += [f"results: {self.out / 'units'}", f"curves:  {self.out / 'curves.parquet'} (and .csv)"]
        return "\n".join(lines)


def run_sweep(
    spec: SweepSpec, checkpoints: list[Checkpoint], out: str | Path, settings: EvalSettings, force: bool = False,
    suite_description: str = "", progress: bool = True,
) -> SweepSummary:
    started = time.perf_counter()
    store = Store(out)
    store.open(spec, checkpoints, suite_description)
    summary = SweepSummary(store.out)
    pending = []
    for ckpt in checkpoints:
        (pending if force or not store.is_done(ckpt) else summary.skipped).append(ckpt)
    if pending:
        evaluator = Evaluator(spec, settings)  # built only when there is work: a finished sweep resumes instantly
        bar = tqdm(pending, desc="checkpoints", unit="ckpt", disable=not progress, dynamic_ncols=True)
        for i, ckpt in enumerate(bar):
            bar.set_postfix_str(f"{ckpt.model.name} step {ckpt.step}")
            next_ckpt = pending[i + 1] if i + 1 < len(pending) else None
            try:
                store.save_unit(ckpt, evaluator.evaluate(ckpt, next_ckpt), spec)
                summary.done.append(ckpt)
            except Exception as err:  # noqa: BLE001 - a failed unit is recorded and the sweep goes on
                reason = f"{type(err).__name__}: {err}"
                store.save_failure(ckpt, reason)
                summary.failed.append((ckpt, reason))
        summary.model_loads = evaluator.model_loads
    if store.done_units():
        collect(store.out)
    summary.seconds = time.perf_counter() - started
    return summary
