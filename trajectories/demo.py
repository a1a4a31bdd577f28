"""The offline demo: train a mini Pythia suite on a toy English grammar, sweep every checkpoint on the grammar's
minimal-pair tasks through the ordinary sweep engine, then collect, plot and analyse. No network needed."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from trajectories import grammar, train
from trajectories.report import write_report
from trajectories.schema import EvalSettings, SweepSpec
from trajectories.suites import get_suite, resolve_checkpoints
from trajectories.sweep import run_sweep
from trajectories.tasks import TaskCatalog, default_tasks_dir

DEMO_TASKS = "minigrammar"
QUICK_LIMIT = 100  # pairs per paradigm in --quick: enough to see every curve, a fraction of the time


def final_accuracies(curves) -> str:
    """Final accuracy per paradigm (rows) and model (columns), as text."""
    rows = curves[curves.level == "paradigm"]
    final = rows[rows.step == rows.groupby("model").step.transform("max")]
    table = final.pivot_table(index="task", columns="model", values="acc")
    table.index = table.index.str.removeprefix(f"{DEMO_TASKS}_")
    return table.round(3).to_string()


def run_demo(out: str | Path = "results/demo", quick: bool = False, device: str = "cpu",
             config: train.TrainConfig | None = None, limit: int | None = None) -> int:
    """The whole demo; `config` and `limit` override the preset (tests use a smaller one)."""
    config = config or (train.QUICK if quick else train.DEFAULT)
    limit = limit or (QUICK_LIMIT if quick else None)
    started = time.perf_counter()
    out = Path(out)
    task_dir = default_tasks_dir() / DEMO_TASKS
    if not (task_dir / f"_{DEMO_TASKS}.yaml").exists():
        grammar.write_tasks(task_dir)

    print(f"1/3 training the suite in {out / 'suite'} (reuses finished models)", flush=True)
    suite_dir = train.build_suite(out / "suite", config)
    suite = get_suite(f"local:{suite_dir}")
    checkpoints = resolve_checkpoints(suite, None, "all")

    print(f"2/3 sweeping {len(checkpoints)} checkpoints on the {DEMO_TASKS} tasks", flush=True)
    spec = SweepSpec(suite.name, tuple(TaskCatalog().expand(DEMO_TASKS)), limit)
    summary = run_sweep(spec, checkpoints, out / "sweep", EvalSettings(device), suite_description=suite.description)
    print(summary.report())

    print("3/3 figures and acquisition report", flush=True)
    report = write_report(out / "sweep")
    print("\nfinal accuracy per paradigm and model:")
    print(final_accuracies(pd.read_parquet(out / "sweep" / "curves.parquet")))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    print(f"  suite:   {suite_dir}")
    print(f"  curves:  {out / 'sweep' / 'curves.csv'}")
    print(f"  figures: {out / 'sweep' / 'plots'}")
    print(f"  report:  {report / 'report.html'}")
    return 0 if summary.ok else 1
