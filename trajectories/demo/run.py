"""The offline demo: train a mini Pythia suite on a toy English grammar, sweep every checkpoint on the grammar's
minimal-pair tasks (the built-in `minigrammar` family) through the public API, then collect, plot and analyse. No
network needed."""

from __future__ import annotations

import time
from pathlib import Path

import trajectories as tj
from trajectories.demo import train

DEMO_TASKS = "minigrammar"
QUICK_LIMIT = 100  # pairs per paradigm in --quick: enough to see every curve, a fraction of the time


def final_accuracies(curves) -> str:
    """Final accuracy per paradigm (rows) and model (columns), as text."""
    rows = curves[curves.level == "paradigm"]
    final = rows[rows.step == rows.groupby("model").step.transform("max")]
    table = final.pivot_table(index="task", columns="model", values="acc")
    table.index = table.index.str.removeprefix(f"{DEMO_TASKS}_")
    return table.round(3).to_string()


def run_demo(out: str | Path = "results/demo", quick: bool = False, device: str | None = None,
             config: train.TrainConfig | None = None, limit: int | None = None) -> int:
    """The whole demo; `config` and `limit` override the preset (tests use a smaller one)."""
    config = config or (train.QUICK if quick else train.DEFAULT)
    limit = limit or (QUICK_LIMIT if quick else None)
    started = time.perf_counter()
    out = Path(out)

    print(f"1/3 training the suite in {out / 'suite'} (reuses finished models)", flush=True)
    suite_dir = train.build_suite(out / "suite", config)

    print(f"2/3 sweeping every checkpoint on the {DEMO_TASKS} tasks", flush=True)
    summary = tj.sweep(f"local:{suite_dir}", DEMO_TASKS, out=out / "sweep", limit=limit, device=device)
    print(summary.report())

    print("3/3 figures and acquisition report", flush=True)
    analysis = tj.analyze(out / "sweep")
    print("\nfinal accuracy per paradigm and model:")
    print(final_accuracies(tj.load_curves(out / "sweep")))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    print(f"  suite:   {suite_dir}")
    print(f"  curves:  {out / 'sweep' / 'curves.csv'}")
    print(f"  figures: {analysis.figures[0].parent}")
    print(f"  report:  {analysis.html}")
    return 0 if summary.ok else 1
