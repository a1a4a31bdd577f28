"""trajectories: when do language models learn grammar? Sweep minimal-pair tasks over training checkpoints.

The Python API (the `trajectories` command is a thin layer over it):

    sweep(suite, tasks, steps=..., out=..., **options) -> SweepSummary
    audit(suite, models=..., steps=...)                    -> Audit (what the checkpoints hold, what is out of line)
    plan(suite, models=..., budget=..., adaptive=...)      -> the checkpoints a sweep would take first (DataFrame)
    collect(out), load_curves(out), load_items(out)        -> pandas DataFrames
    plot(out, ...), analyze(out, ...), add_task(source, name, ...)
    measure_memorization(suite, data=..., steps=..., out=..., **options) -> SweepSummary
    export(out, dest)                                       -> lm-eval results files
    to_wandb(out, project)                                  -> a Weights & Biases run of the curves
"""

__version__ = "0.1.0"

# No name here may be a module of the package too: importing the module would replace the function.
__all__ = ["Analysis", "SweepSummary", "__version__", "add_task", "analyze", "audit", "collect", "export",
           "load_curves", "load_items", "measure_memorization", "plan", "plot", "sweep", "to_wandb"]


def __getattr__(name: str):
    # Imported on first use: `import trajectories` stays cheap, and a worker job sets its environment before
    # lm-eval, transformers and huggingface_hub read theirs.
    if name in __all__:
        from trajectories import api

        return getattr(api, name)
    raise AttributeError(f"module 'trajectories' has no attribute {name!r}")
