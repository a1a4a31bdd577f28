"""The Python API, for notebooks and scripts; the `trajectories` command is a thin layer over these functions.

    import trajectories as tj
    summary = tj.sweep("local:runs/suite", "minigrammar", out="results/mini", limit=100)
    curves = tj.load_curves("results/mini")          # the tidy curve table (pandas)
    tj.plot("results/mini"); report = tj.analyze("results/mini")
    tj.measure_memorization("local:runs/suite", out="results/mini_mem"); tj.analyze("results/mini_mem")
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from trajectories.engine import SweepSummary
from trajectories.errors import UserError
from trajectories.integrity import Audit
from trajectories.schema import (
    DATA_VARIANTS,
    DTYPES,
    DUPLICATE_POLICIES,
    EVICT_POLICIES,
    EXECUTORS,
    ITEM_COLUMNS,
    MEMORIZATION,
    MEMORIZATION_COLUMNS,
    ORDERS,
    TOKEN_DTYPES,
    AdaptiveSettings,
    EvalSettings,
    MemorizationSpec,
    SweepSpec,
    data_variant,
)
from trajectories.store import Store
from trajectories.wandb_runs import require_wandb


def default_out(suite: str, tasks: str, limit: int | None = None) -> Path:
    """results/<suite>_<tasks>[_limit<N>]: a folder name that says what the sweep measured."""
    suite_name = re.sub(r"[^A-Za-z0-9.]+", "-", Path(suite.split(":", 1)[-1]).name).strip("-")
    task_names = re.sub(r"[^A-Za-z0-9.]+", "-", tasks).strip("-")
    return Path("results") / (f"{suite_name}_{task_names}" + (f"_limit{limit}" if limit else ""))


class OptionError(UserError):
    """An option's value is not one it takes; the message names the value and what is valid."""


DEVICES = "cpu, cuda, cuda:<N>, mps"


def _count(option: str, value, minimum: int = 1, also: str = "") -> None:
    """`value` must be a whole number >= minimum (or None, or the word in `also`)."""
    if value is None or (also and value == also):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        valid = f"a whole number >= {minimum}" + (f", or {also}" if also else "")
        raise OptionError(f"{option} {value!r}: expected {valid}")


def _choice(option: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise OptionError(f"{option} {value!r}: expected one of {', '.join(choices)}")


def check_device(device: str, here: bool = True) -> None:
    """A device lm-eval's model can use; `here`: it must exist on this machine (not for Slurm jobs)."""
    kind, colon, index = device.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (colon and (kind != "cuda" or not index.isdigit())):
        raise OptionError(f"--device {device!r}: expected one of {DEVICES}")
    if not here or kind == "cpu":
        return
    import torch

    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise OptionError(f"--device {device!r}: this machine has no MPS device; valid here: cpu")
        return
    found = torch.cuda.device_count()
    if not found:
        raise OptionError(f"--device {device!r}: this machine has no CUDA device (torch {torch.__version__} finds "
                          "none); valid here: cpu")
    if int(index or 0) >= found:
        valid = ", ".join(["cpu", "cuda", *(f"cuda:{i}" for i in range(found))])
        raise OptionError(f"--device {device!r}: this machine has {found} CUDA devices; valid here: {valid}")


def _device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _run_device(device: str | None, dtype: str, batch_size: int | str, evict: str, executor: str,
                workers: int | None, units_per_job: int, slurm_options: dict) -> str:
    """Check the options of how units run (both experiments' runs take them); returns the device to run on."""
    _count("--batch-size", batch_size, also="auto")
    _choice("--dtype", dtype, DTYPES)
    _choice("--evict", evict, EVICT_POLICIES)
    _choice("--executor", executor, EXECUTORS)
    _count("--workers", workers)
    _count("--units-per-job", units_per_job)
    _count("--gpus-per-job", slurm_options.get("gpus_per_job"), minimum=0)
    _count("--cpus-per-job", slurm_options.get("cpus_per_job"))
    _count("--array-parallelism", slurm_options.get("array_parallelism"))
    if executor == "slurm" and not device:  # the jobs' device, not this machine's
        device = "cuda" if slurm_options.get("gpus_per_job") else "cpu"
    device = _device(device)
    check_device(device, here=executor != "slurm")
    return device


def _executor(executor: str, workers: int | None, slurm_options: dict, units_per_job: int):
    from trajectories import executors, slurm

    if executor == "processes":
        import torch

        return executors.ProcessesExecutor(workers or torch.cuda.device_count() or 1)
    if executor == "slurm":
        return executors.SlurmExecutor(slurm.ArrayOptions(**slurm_options), units_per_job)
    return executors.LocalExecutor()


def _adaptive_options(order: str, adaptive: bool, budget, tolerance, force: bool) -> AdaptiveSettings | None:
    """Check --adaptive, --budget and --tolerance together; the adaptive settings, or None."""
    from trajectories.planning import parse_budget

    if budget is not None:
        budget = str(parse_budget(budget))
    if tolerance is not None and not adaptive:
        raise OptionError("--tolerance is for adaptive sweeps: add --adaptive --budget N")
    if not adaptive:
        if budget is not None and order != "coarse-to-fine":
            raise OptionError(f"--budget with --order {order}: a budget cuts the coarse-to-fine order (or use "
                              "--adaptive)")
        return None
    if budget is None:
        raise OptionError("--adaptive needs --budget: checkpoints per model (e.g. 40) or a percentage (e.g. 30%)")
    if force:
        raise OptionError("--adaptive plans from the results in --out; --force would evaluate them again: use "
                          "another --out")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, int | float)
                                  or not tolerance >= 0):
        raise OptionError(f"--tolerance {tolerance!r}: expected a number >= 0 (CI half-widths)")
    return AdaptiveSettings(budget, 1.0 if tolerance is None else float(tolerance))


def sweep(suite: str, tasks: str | list[str], steps: str = "all", out: str | Path | None = None,
          models: list[str] | str | None = None, limit: int | None = None, device: str | None = None,
          dtype: str = "auto", batch_size: int | str = "auto", blimp_dir: str | Path | None = None,
          tasks_dir: str | Path | None = None, evict: str = "auto", force: bool = False,
          trust_remote_code: bool = False, executor: str = "local", workers: int | None = None,
          units_per_job: int = 16, slurm_options: dict | None = None, duplicates: str = "reuse",
          progress: bool = True, wandb_project: str | None = None, order: str = "coarse-to-fine",
          adaptive: bool = False, budget: int | str | None = None, tolerance: float | None = None) -> SweepSummary:
    """Evaluate `tasks` on every checkpoint `suite`, `models` and `steps` name, into `out`; resumable: completed
    units are skipped, so running the same call again finishes an interrupted sweep.

    The checkpoints are audited first (see `audit`); of byte-identical checkpoints one is evaluated and the others
    get its results (duplicates="reuse"), unless duplicates="evaluate".

    suite: "pythia", "hf:<org/repo>" or "local:<dir>"; tasks: "blimp", "blimp:<phenomenon>", a task or family name,
    or several (a list or a comma-separated string); steps: "all", "log", "final", "every:K", "A:B:K" or "0,512".
    executor: "local" (this process), "processes" (`workers` processes) or "slurm" (a job array; slurm_options:
    partition, gpus_per_job, cpus_per_job, mem, time, array_parallelism). wandb_project: also log the curves to the
    sweep's Weights & Biases run there (needs `pip install 'trajectories[wandb]'`).

    order: "coarse-to-fine" (every prefix of the run covers each model's training span) or "sequential"; budget
    (40, or "30%" of each model's checkpoints): evaluate only the first so many of each model's coarse-to-fine
    order. adaptive: after a coarse first pass, evaluate the checkpoints where some curve moves most relative to
    its CI, up to `budget`, or until every curve is within `tolerance` CI half-widths (default 1) of linear between
    evaluated neighbours; every decision is recorded in OUT/adaptive.jsonl, and a larger budget continues.

    Every option is checked before anything is written or loaded: a bad one raises a UserError naming the value
    and what is valid."""
    from trajectories.engine import run_sweep
    from trajectories.suites import get_suite, model_names, resolve_checkpoints
    from trajectories.tasks import TaskCatalog, user_tasks_dir

    slurm_options = slurm_options or {}
    _count("--limit", limit)
    _choice("--duplicates", duplicates, DUPLICATE_POLICIES)
    device = _run_device(device, dtype, batch_size, evict, executor, workers, units_per_job, slurm_options)
    _choice("--order", order, ORDERS)
    adaptive_settings = _adaptive_options(order, adaptive, budget, tolerance, force)
    if wandb_project:
        require_wandb()  # before the sweep's hours of work, not after
    task_spec = tasks if isinstance(tasks, str) else ",".join(tasks)
    chosen_suite = get_suite(suite)
    checkpoints = resolve_checkpoints(chosen_suite, model_names(models), steps)
    catalog = TaskCatalog(tasks_dir, blimp_dir)
    task_names = catalog.expand(task_spec)
    catalog.check_data(task_names)
    chosen_models = list({c.model.name: c.model for c in checkpoints}.values())
    spec = SweepSpec(chosen_suite.name, tuple(task_names), limit, dtype, trust_remote_code,
                     chosen_suite.fingerprint(chosen_models))
    settings = EvalSettings(device, batch_size, str(catalog.blimp_dir) if catalog.blimp_dir else None, evict,
                            str(user_tasks_dir(tasks_dir)))
    out = Path(out) if out else default_out(suite, task_spec, limit)
    summary = run_sweep(spec, checkpoints, out, settings, force=force, suite_description=chosen_suite.description,
                        progress=progress, executor=_executor(executor, workers, slurm_options, units_per_job),
                        suite=chosen_suite, duplicates=duplicates, order=order,
                        budget=None if adaptive else budget, adaptive=adaptive_settings)
    if wandb_project and Store(out).curves_path.exists():
        summary.wandb_run = to_wandb(out, wandb_project)
    return summary


def audit(suite: str, models: list[str] | str | None = None, steps: str = "all", progress: bool = True) -> Audit:
    """List what each checkpoint holds (weight files with sizes and sha256, from hub metadata or hashes of local files;
    no weights downloaded) and flag what is out of line: identical steps, steps with no branch, weight files or
    sizes unlike the model's other checkpoints, configs that differ in shape. `.table()`, `.to_json()`,
    `.findings`."""
    from trajectories.suites import audit_checkpoints, get_suite, model_names, resolve_checkpoints

    chosen_suite = get_suite(suite)
    return audit_checkpoints(chosen_suite, resolve_checkpoints(chosen_suite, model_names(models), steps), progress)


PLAN_COLUMNS = ("position", "model", "step", "tokens", "source", "why")


def plan(suite: str, models: list[str] | str | None = None, steps: str = "all", order: str = "coarse-to-fine",
         budget: int | str | None = None, adaptive: bool = False, out: str | Path | None = None,
         tolerance: float | None = None) -> pd.DataFrame:
    """The checkpoints a sweep would evaluate first, in the order it would, without running or loading anything:
    one row per checkpoint (PLAN_COLUMNS; `why` in words). order, budget, adaptive, tolerance: as for `sweep`.
    An adaptive sweep's rows are its coarse first pass, or, given `out` (a results folder), the next round it would
    choose from the results there; after them, a model's stop record says why it would stop (step None)."""
    from trajectories.engine import next_decisions
    from trajectories.planning import sweep_order
    from trajectories.suites import get_suite, model_names, resolve_checkpoints

    _choice("--order", order, ORDERS)
    settings = _adaptive_options(order, adaptive, budget, tolerance, force=False)
    checkpoints = {c.key: c for c in resolve_checkpoints(get_suite(suite), model_names(models), steps)}
    rows = []
    if settings is None:
        keys = sweep_order(list(checkpoints), order, budget)
        rank = {key: i for i, key in enumerate(sweep_order(list(checkpoints), order))}
        whys = [f"{order} {sum(k[0] == key[0] for k in keys[:i + 1])} of {sum(k[0] == key[0] for k in checkpoints)}"
                for i, key in enumerate(keys)]
        rows = [(rank[key], *key, why) for key, why in zip(keys, whys)]
    else:
        found: dict[str, list[int]] = {}
        for model, step in checkpoints:
            found.setdefault(model, []).append(step)
        store = Store(out) if out is not None else None
        if store is not None:
            store.spec()  # a clear error when OUT is not a results folder
        for model, decisions in next_decisions(store, found, settings).items():
            if isinstance(decisions, str):
                rows.append((len(rows), model, None, f"not planned: {decisions}"))
                continue
            rows += [(len(rows) + i, model, d.step, d.describe().split(": ", 1 if d.stopped else 2)[-1])
                     for i, d in enumerate(decisions)]
    table = []
    for position, model, step, why in sorted(rows, key=lambda r: r[0]):
        ckpt = checkpoints.get((model, step))
        table.append({"position": position + 1, "model": model, "step": step,
                      "tokens": ckpt.tokens if ckpt else None,
                      "source": (ckpt.path or f"{ckpt.model.repo}@{ckpt.revision}") if ckpt else None, "why": why})
    return pd.DataFrame(table, columns=list(PLAN_COLUMNS)).astype({"step": "Int64", "tokens": "Int64"})


def measure_memorization(
        suite: str, data: str | dict[str, str] | None = None, steps: str = "all", out: str | Path | None = None,
        models: list[str] | str | None = None, sample: int = 10_000, strata: int = 100, seed: int = 0,
        prefix: int = 32, continuation: int = 32, generate: bool = False, ban_eos: bool = True,
        row_len: int | None = None, rows_per_step: int | None = None, token_dtype: str | None = None,
        device: str | None = None, dtype: str = "auto", batch_size: int | str = "auto", evict: str = "auto",
        force: bool = False, trust_remote_code: bool = False, executor: str = "local", workers: int | None = None,
        units_per_job: int = 16, slurm_options: dict | None = None, progress: bool = True) -> SweepSummary:
    """Score training rows for memorization at every checkpoint `suite`, `models` and `steps` name, into `out`
    (`trajectories memorization`); resumable like `sweep`, through the same engine and executors.

    data: the training-data file in training order (EleutherAI's pre-shuffled .bin/.idx layout): one path, or
    {"standard": path, "deduped": path} (or "standard=PATH,deduped=PATH") when both variants' models are chosen;
    default: the files a local suite's suite.json names. row_len, rows_per_step, token_dtype: its layout (default:
    suite.json's, else Pythia's 2049, 1024 and the .idx's dtype). sample rows are drawn per data file, stratified
    over `strata` runs of training (seeded), plus the suite's canaries; each checkpoint scores those it has seen:
    memorized (prefix tokens, then `continuation` tokens reproduced greedily), logp and, with generate=True,
    EleutherAI's match_fraction. ban_eos=False lets continuations contain EOS (rows that pack short documents).

    Every option is checked before anything is written or loaded: a bad one raises a UserError naming the value
    and what is valid."""
    from trajectories.engine import run_sweep
    from trajectories.suites import get_suite, model_names, resolve_checkpoints
    from trajectories.trainingdata import parse_data_option, resolve_data, rows_to_score

    slurm_options = slurm_options or {}
    for option, value, minimum in (("--sample", sample, 0), ("--strata", strata, 1), ("--seed", seed, 0),
                                   ("--prefix", prefix, 1), ("--continuation", continuation, 1),
                                   ("--row-len", row_len, 2), ("--rows-per-step", rows_per_step, 1)):
        _count(option, value, minimum)
    if token_dtype is not None:
        _choice("--token-dtype", token_dtype, TOKEN_DTYPES)
    device = _run_device(device, dtype, batch_size, evict, executor, workers, units_per_job, slurm_options)
    chosen_suite = get_suite(suite)
    checkpoints = resolve_checkpoints(chosen_suite, model_names(models), steps)
    declared = chosen_suite.training_data or {}
    # Every variant with a known file is part of the spec, so choosing more models later resumes the same run.
    known = set(declared.get("files", {})) | (set(parse_data_option(data)) - {""})
    variants = [v for v in DATA_VARIANTS if v in known | {data_variant(c.model) for c in checkpoints}]
    files = resolve_data(data, variants, declared, row_len, rows_per_step, token_dtype)
    layout = files[variants[0]]
    if prefix + continuation > layout.row_len:
        raise UserError(f"prefix + continuation = {prefix + continuation} tokens, but rows are {layout.row_len} long")
    # The sample spans each variant's whole training (its models' last checkpoint), whichever models and steps are
    # chosen now, so a later run with more of them scores the same rows.
    max_steps = {v: max((chosen_suite.steps(m)[-1] for m in chosen_suite.models.values() if data_variant(m) == v),
                        default=files[v].n_steps) for v in variants}
    rows = rows_to_score(files, max_steps, sample, strata, seed, declared.get("canaries"))
    chosen_models = list({c.model.name: c.model for c in checkpoints}.values())
    spec = MemorizationSpec(chosen_suite.name, tuple((v, str(Path(files[v].path).resolve())) for v in variants),
                            layout.row_len, layout.rows_per_step, token_dtype, sample, strata, seed, prefix,
                            continuation, generate, ban_eos, dtype, trust_remote_code,
                            chosen_suite.fingerprint(chosen_models))
    settings = EvalSettings(device, batch_size, None, evict)
    out = Path(out) if out else default_out(suite, MEMORIZATION)
    # Audited like a sweep's checkpoints, but identical checkpoints are each scored: a later one has seen more rows.
    return run_sweep(spec, checkpoints, out, settings, force=force, suite_description=chosen_suite.description,
                     progress=progress, executor=_executor(executor, workers, slurm_options, units_per_job),
                     suite=chosen_suite, duplicates="evaluate", rows=rows)


def collect(out: str | Path, imports: list[str] | str | None = None, grouping: str | None = None) -> pd.DataFrame:
    """Rebuild OUT's curve table from its units (and lm-eval results files to import); return it. grouping: how
    BLiMP's paradigms form phenomena, "data" (the data's 13) or "paper" (the BLiMP paper's 12); default: as before."""
    from trajectories.curves import collect as collect_curves

    return collect_curves(out, imports=imports, grouping=grouping)


EXPORT_FORMATS = ("lm-eval",)


def export(out: str | Path, dest: str | Path, format: str = "lm-eval", tasks_dir: str | Path | None = None
           ) -> list[Path]:
    """Write OUT's completed units under DEST in another tool's format: "lm-eval", one results file (and samples
    files) per checkpoint in lm-eval 0.4's layout, task configs from `tasks_dir` as for the sweep. Returns the
    results files."""
    from trajectories.exports import export_lm_eval

    if format not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {format!r}; formats: {', '.join(EXPORT_FORMATS)}")
    return export_lm_eval(out, dest, tasks_dir)


def to_wandb(out: str | Path, project: str | None = None, entity: str | None = None) -> str:
    """Log OUT's learning curves to the sweep's Weights & Biases run (one history row per model and checkpoint, with
    step and tokens; figures, curves and report as artifacts); returns the run's URL (or folder, offline)."""
    from trajectories.wandb_runs import to_wandb as upload

    return upload(out, project, entity)


def load_curves(out: str | Path) -> pd.DataFrame:
    """OUT's tidy curve table (columns: schema.CURVE_COLUMNS), one row per (model, step, level, task)."""
    return Store(out).curves()


def load_items(out: str | Path, model: str | None = None) -> pd.DataFrame:
    """Per-item results of OUT's completed units, of every model or of one: a grammar sweep's items (columns:
    schema.ITEM_COLUMNS), or a memorization run's scored rows (schema.MEMORIZATION_COLUMNS)."""
    store = Store(out)
    items = store.items(model)
    if items is not None:
        return items
    return pd.DataFrame(columns=list(MEMORIZATION_COLUMNS if store.spec().kind == MEMORIZATION else ITEM_COLUMNS))


def status(out: str | Path) -> str:
    """Done, failed and pending units per model, failures, and who is evaluating what."""
    from trajectories.status import status_lines

    return "\n".join(status_lines(Store(out)))


def plot(out: str | Path, x: str = "step", phenomenon: str | None = None, task: str | None = None,
         loss_task: str | None = None) -> list[Path]:
    """Learning-curve figures (PNG + SVG) under OUT/plots/ (a memorization run's: its analysis figures); returns
    their paths. x: "step", "tokens" or "loss" (the
    held-out loss of a perplexity task in the sweep; `loss_task` names it when there are several). The stages and
    n-gram baselines of the last `analyze` are marked."""
    from trajectories.analysis import loss_table
    from trajectories.plots import plot_all

    store = Store(out)
    if store.is_sweep() and store.spec().kind == MEMORIZATION:
        return analyze(out).figures
    curves = store.curves()
    loss = loss_table(curves, loss_task) if x == "loss" else None
    return plot_all(curves, store.plots_dir, x=x, phenomenon=phenomenon, task=task, loss=loss,
                    stages=store.report_table("stages"), ngram=store.report_table("ngram"))


@dataclass(frozen=True)
class Analysis:
    """What `analyze` computed and wrote."""

    tables: dict[str, pd.DataFrame]  # by the name of their CSV under `folder`
    folder: Path  # OUT/report
    html: Path
    markdown: Path
    figures: list[Path]


def analyze(out: str | Path, fraction: float = 0.5, n_boot: int | None = None, seed: int = 0,
            method: str = "isotonic", align: str = "auto", loss_task: str | None = None,
            ngram_corpus: str | Path | None = None, blimp_dir: str | Path | None = None,
            tasks_dir: str | Path | None = None, progress: bool = True) -> Analysis:
    """Acquisition steps (isotonic and sigmoid onsets), orders and their agreement, seeds, stages, item-level
    agreement, standard vs deduped, one-dimensionality, suspicious checkpoints, matched-loss alignment and n-gram
    baselines, with figures: OUT/report/ (CSV tables, report.md, report.html).

    method: the onsets that order units ("isotonic" or "sigmoid"; both are reported). align: "loss" compares models
    at matched held-out loss too (needs a perplexity task; `loss_task` names one of several), "step" only at
    matched steps, "auto" adds loss when the sweep has a perplexity task. ngram_corpus: a text file (one sentence
    per line) to train n-gram baselines on, scored on the sweep's pairs (read from their task files; BLiMP's from
    `blimp_dir` or $TRAJECTORIES_BLIMP_DIR)."""
    from trajectories import analysis, plots, report
    from trajectories.schema import Level
    from trajectories.stats import N_BOOT

    if align not in ALIGNMENTS:
        raise analysis.AnalysisError(f"unknown align {align!r}; choose from {', '.join(ALIGNMENTS)}")
    store = Store(out)
    if store.is_sweep() and store.spec().kind == MEMORIZATION:
        return _analyze_memorization(store, n_boot or N_BOOT, seed)
    curves = analysis.check_curves(store.curves())
    records = store.records() if store.is_sweep() else []
    store.warn_damaged()
    loss = None
    if align == "loss" or (align == "auto" and analysis.loss_tasks(curves)):
        loss = analysis.loss_table(curves, loss_task)
    ngram = _ngram_baselines(store, curves, ngram_corpus, blimp_dir, tasks_dir) if ngram_corpus else None
    tables = analysis.analyze(curves, functools.partial(store.items, records=records), fraction, n_boot or N_BOOT,
                              seed, method, loss=loss, ngram=ngram, progress=progress)
    for name, table in tables.items():
        store.save_report_table(name, table)
    figures = plots.plot_all(curves, store.plots_dir, stages=tables["stages"], ngram=ngram)
    if loss is not None:
        figures += plots.plot_all(curves, store.plots_dir, x="loss", loss=loss, stages=tables["stages"], ngram=ngram)
    if len(tables.get("kappa_matched", ())):
        figures = plots.kappa_heatmap(tables["kappa_matched"], curves, store.plots_dir) + figures
    acq = tables["acquisition"]
    if (acq.acquired & (acq.level == Level.PHENOMENON)).any():
        figures = plots.acquisition_plot(acq, curves, store.plots_dir) + figures
    requested = store.requested() if store.is_sweep() else []
    item_models = len({r.model.name for r in records} & set(curves.model))
    title = f"Grammar acquisition report: {store.out.resolve().name}"
    blocks = report.document(title, curves, tables, fraction, figures, item_models, requested, store.failures())
    markdown = store.save_report_file("report.md", report.to_markdown(blocks, store.out))
    html = store.save_report_file("report.html", report.to_html(blocks, title))
    return Analysis(tables, store.report_dir, html, markdown, figures)


def _analyze_memorization(store: Store, n_boot: int, seed: int) -> Analysis:
    from trajectories import analysis, plots, report
    from trajectories.store import StoreError

    records = store.records()
    store.warn_damaged()
    items = store.items(records=records)
    if items is None:
        raise StoreError(f"{store.out} has no completed units yet; `trajectories status {store.out}` shows why")
    models = pd.DataFrame([{"model": r.model.name, "size": r.model.size, "params": r.model.params,
                            "deduped": bool(r.model.deduped)} for r in records]).drop_duplicates("model")
    tables = analysis.memorization_tables(items, models, n_boot, n_boot, seed)
    for name, table in tables.items():
        store.save_report_table(name, table)
    figures = plots.memorization_figures(tables, models, store.plots_dir)
    title = f"Memorization report: {store.out.resolve().name}"
    blocks = report.memorization_document(title, store.spec(), tables, figures, store.rows(), store.requested(),
                                          store.failures())
    markdown = store.save_report_file("report.md", report.to_markdown(blocks, store.out))
    html = store.save_report_file("report.html", report.to_html(blocks, title))
    return Analysis(tables, store.report_dir, html, markdown, figures)


ALIGNMENTS = ("auto", "step", "loss")


def _ngram_baselines(store: Store, curves: pd.DataFrame, corpus: str | Path, blimp_dir, tasks_dir) -> pd.DataFrame:
    """N-gram baseline accuracies on the sweep's paradigms, reused from OUT/report/ngram.csv while the corpus and
    the pairs are the same."""
    import hashlib

    from trajectories import ngram
    from trajectories.tasks import TaskCatalog

    corpus = Path(corpus)
    if not corpus.is_file():
        raise ngram.NgramError(f"--ngram-corpus {corpus}: no such file")
    paradigms = curves[(curves.level == "paradigm") & (curves.phenomenon.fillna("") != "")]
    limit = store.spec().limit if store.is_sweep() else None
    catalog = TaskCatalog(tasks_dir, blimp_dir)
    pairs = []
    for task, phenomenon in paradigms.drop_duplicates("task")[["task", "phenomenon"]].itertuples(index=False):
        files = [f for f in catalog.data_files(task) if f.is_file()] if catalog.index.entries.get(task) else []
        if len(files) == 1:
            found = ngram.read_pairs(files[0]).head(limit)
            pairs.append(found.assign(task=task, phenomenon=phenomenon))
    if not pairs:
        raise ngram.NgramError("none of the sweep's paradigms has a local data file to score n-grams on (BLiMP: "
                               "pass --blimp-dir)")
    pairs = pd.concat(pairs, ignore_index=True)
    digest = {"corpus": f"{corpus.resolve()} (sha256 {hashlib.sha256(corpus.read_bytes()).hexdigest()[:16]})",
              "pairs_sha256": hashlib.sha256(pairs.to_csv(index=False).encode()).hexdigest()[:16]}
    cached = store.report_table("ngram")
    if cached is not None and all(set(cached.get(k, ())) == {v} for k, v in digest.items()):
        return cached
    return ngram.baselines(corpus, pairs).assign(**digest)


def add_task(source: str | Path, name: str, phenomenon: str | None = None, phenomenon_field: str | None = None,
             good: str | None = None, bad: str | None = None, prefix_field: str | None = None,
             format: str | None = None, bad_first: bool = False, tasks_dir: str | Path | None = None,
             force: bool = False) -> Path:
    """Turn a file (or folder) of minimal pairs into lm-eval tasks in the user's task folder (tasks/NAME/); returns
    the folder. Sweep them with tasks=NAME."""
    from trajectories.authoring import Layout
    from trajectories.authoring import add_task as write_task

    layout = Layout(format, good, bad, prefix_field, phenomenon, phenomenon_field, bad_first)
    return write_task(source, name, layout, tasks_dir, force)[0]
