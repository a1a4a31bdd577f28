"""Weights & Biases: a results folder's learning curves as one W&B run per sweep (optional: `pip install
'trajectories[wandb]'`; wandb is imported only here, and only when asked for).

One history row per evaluated (model, checkpoint): `step` and `tokens`, and that model's accuracies under
`<model>/phenomenon/<name>`, `<model>/paradigm/<task>` and `<model>/metric/<task>`, charted against `step` (`tokens`
is the second x-axis to choose in W&B). The figures (drawn now), the curves table and OUT/report/ (if `analyze` made
it) go up as artifacts. OUT/wandb.json remembers the run and the checkpoints logged to it, so uploading again
(another sweep into OUT, or `trajectories wandb OUT`) adds only new checkpoints to the same run. W&B's own settings
apply: WANDB_MODE=offline keeps the run on disk (under WANDB_DIR) for a later `wandb sync`.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pandas as pd

from trajectories.errors import UserError
from trajectories.schema import Level, display_name
from trajectories.store import Store

EXTRA = "pip install 'trajectories[wandb]'"
LEVELS = (Level.FIELD, Level.PHENOMENON, Level.PARADIGM, Level.METRIC)


class WandbError(UserError):
    """wandb is not installed, or W&B refused the run."""


def require_wandb():
    """The wandb module, or a WandbError naming the extra to install."""
    try:
        # By name: wandb is an optional extra, not a dependency (shared/tools/check-deps reads only dependencies).
        return importlib.import_module("wandb")
    except ImportError as err:
        raise WandbError(f"logging to Weights & Biases needs the wandb package: {EXTRA}") from err


def history_rows(curves: pd.DataFrame, skip: frozenset | set = frozenset()) -> dict[tuple[str, int], dict]:
    """W&B history rows by (model, step), one per checkpoint of the curve table, in model then step order; `skip`:
    (model, step) keys already logged."""
    rows = {}
    curves = curves[curves.level.isin([str(level) for level in LEVELS])]
    for (model, step), at in curves.groupby(["model", "step"], sort=True):
        if (model, int(step)) in skip:
            continue
        row = {"step": int(step)} | ({"tokens": int(at.tokens.iloc[0])} if pd.notna(at.tokens.iloc[0]) else {})
        row |= {f"{model}/{r.level}/{display_name(r.task)}": float(r.acc) for r in at.itertuples() if pd.notna(r.acc)}
        rows[(model, int(step))] = row
    return rows


def to_wandb(out: str | Path, project: str | None = None, entity: str | None = None) -> str:
    """Log OUT's curves to the sweep's W&B run in `project` (default: $WANDB_PROJECT), created on the first upload;
    returns the run's URL, or its local folder when offline."""
    wandb = require_wandb()
    from trajectories.plots import plot_all

    store = Store(out)
    curves = store.curves()
    state = store.wandb_run()
    same_run = state is not None and state["project"] == project and state.get("entity") == entity
    run_id = state["run_id"] if same_run else None  # None: W&B names a new run
    logged = {(m, s) for m, s in state["logged"]} if same_run else set()
    name = store.out.resolve().name
    config = {"spec": store.spec().as_dict()} if store.is_sweep() else {}
    try:
        run = wandb.init(project=project, entity=entity, id=run_id, name=name, resume="allow", config=config,
                         job_type="trajectories")
    except wandb.errors.Error as err:  # not logged in, no network, no such entity, ...
        raise WandbError(f"W&B did not start the run ({type(err).__name__}: {err}); the results in {store.out} are "
                         f"complete: `trajectories wandb {store.out}` tries again") from err
    try:
        run.define_metric("step")
        run.define_metric("tokens")
        for model in curves.model.unique():
            run.define_metric(f"{model}/*", step_metric="step")
        for key, row in history_rows(curves, logged).items():
            run.log(row)
            logged.add(key)
        figures = plot_all(curves, store.plots_dir)
        tag = re.sub(r"[^\w.-]+", "-", name)
        for kind, files in (("curves", [store.curves_path, store.curves_path.with_suffix(".csv")]),
                            ("figures", figures),
                            ("report", sorted(p for p in store.report_dir.glob("*") if p.is_file()))):
            if files:
                artifact = wandb.Artifact(f"{tag}-{run.id}-{kind}", type=kind)  # one sweep's, versioned per upload
                for path in files:
                    artifact.add_file(str(path), name=str(Path(path).relative_to(store.out)))
                run.log_artifact(artifact)
        where = run.url or run.dir
    finally:
        run.finish()
    store.save_wandb_run({"project": project, "entity": entity, "run_id": run.id, "logged": sorted(logged)})
    return where
