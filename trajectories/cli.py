"""The `trajectories` command: a thin layer over the Python API (api.py) and the task tools."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings
from pathlib import Path

from trajectories import __version__
from trajectories.errors import SkippedWarning, UserError, WriteError
from trajectories.schema import DTYPES, DUPLICATE_POLICIES, EVICT_POLICIES, EXECUTORS, ORDERS, TOKEN_DTYPES
from trajectories.suites import STEPS_HELP

BLIMP_DIR_HELP = "local folder of BLiMP's jsonl files (or $TRAJECTORIES_BLIMP_DIR); default: the hub"
TASKS_DIR_HELP = "your task folder (default: $TRAJECTORIES_TASKS_DIR, else ./tasks)"


def _suite_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", required=True, help="pythia | hf:<org/repo> | local:<dir>")
    parser.add_argument("--models", help="comma-separated model names (default: every model of the suite)")
    parser.add_argument("--steps", default="all", help=STEPS_HELP)


def cmd_suites(args) -> int:
    from trajectories.suites import PYTHIA, SUITE_KINDS

    print(f"Suites: {', '.join(SUITE_KINDS)}\n")
    print(f"pythia: {PYTHIA.description}")
    for model in PYTHIA.models.values():
        print(f"  {model.name:<14} {model.params:>15,} params  {model.layers:>2} layers  d_model {model.d_model:<5}"
              f" heads {model.heads:<3} lr {model.learning_rate:g}  {model.repo}")
    print("\nhf:<org/repo>  any hub repo whose branches name steps (step<N>, step<N>-tokens<M>B, stage<K>-step<N>-…)")
    print("local:<dir>    <dir>/<model>/step<N>/ Hugging Face folders; optional <dir>/suite.json")
    return 0


def cmd_checkpoints(args) -> int:
    from trajectories.suites import get_suite, model_names, resolve_checkpoints

    checkpoints = resolve_checkpoints(get_suite(args.suite), model_names(args.models), args.steps)
    print("model\tstep\ttokens\tsource")
    for c in checkpoints:
        print(f"{c.model.name}\t{c.step}\t{c.tokens if c.tokens is not None else ''}\t"
              f"{c.path or f'{c.model.repo}@{c.revision}'}")
    return 0


def cmd_plan(args) -> int:
    import trajectories as tj

    table = tj.plan(args.suite, args.models, args.steps, args.order, args.budget, args.adaptive, args.out,
                    args.tolerance)
    table.to_csv(sys.stdout, sep="\t", index=False)
    return 0


def _order_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--order", choices=ORDERS, default="coarse-to-fine",
                        help="coarse-to-fine (default): every prefix of the run covers each model's training span "
                        "(endpoints, middle, quarters, ...); sequential: step by step")
    parser.add_argument("--budget", help="checkpoints per model (e.g. 40) or a share of them (e.g. 30%%): the first "
                        "of the coarse-to-fine order, or with --adaptive the most an adaptive sweep takes")
    parser.add_argument("--adaptive", action="store_true", help="after a coarse first pass, take the checkpoints "
                        "where some curve moves most relative to its CI, up to --budget")
    parser.add_argument("--tolerance", type=float, help="--adaptive: stop once every curve is within this many CI "
                        "half-widths of linear between evaluated checkpoints (default 1)")


def _run_options(args) -> dict:
    """How and where units run: the options `sweep` and `memorization` share."""
    slurm_options = {"partition": args.partition, "gpus_per_job": args.gpus_per_job, "cpus_per_job": args.cpus_per_job,
                     "mem": args.mem, "time": args.time, "array_parallelism": args.array_parallelism}
    return {"out": args.out, "models": args.models, "device": args.device, "dtype": args.dtype,
            "batch_size": args.batch_size, "evict": args.evict, "force": args.force,
            "trust_remote_code": args.trust_remote_code, "executor": args.executor, "workers": args.workers,
            "units_per_job": args.units_per_job, "slurm_options": slurm_options}


def cmd_sweep(args) -> int:
    import trajectories as tj

    summary = tj.sweep(args.suite, args.tasks, args.steps, limit=args.limit, blimp_dir=args.blimp_dir,
                       tasks_dir=args.tasks_dir, duplicates=args.duplicates, wandb_project=args.wandb,
                       order=args.order, adaptive=args.adaptive, budget=args.budget, tolerance=args.tolerance,
                       **_run_options(args))
    print(summary.report())
    return 0 if summary.ok else 1


def cmd_memorization(args) -> int:
    import trajectories as tj

    summary = tj.measure_memorization(
        args.suite, args.data, args.steps, sample=args.sample, strata=args.strata, seed=args.seed, prefix=args.prefix,
        continuation=args.continuation, generate=args.generate, ban_eos=not args.allow_eos, row_len=args.row_len,
        rows_per_step=args.rows_per_step, token_dtype=args.token_dtype, **_run_options(args))
    print(summary.report())
    return 0 if summary.ok else 1


def cmd_audit(args) -> int:
    import json

    import trajectories as tj

    report = tj.audit(args.suite, args.models, args.steps, progress=not args.json)
    print(json.dumps(report.to_json(), indent=1) if args.json else report.table())
    return 0


def cmd_status(args) -> int:
    from trajectories.api import status

    print(status(args.out))
    return 0


def cmd_collect(args) -> int:
    import trajectories as tj
    from trajectories.store import Store

    table = tj.collect(args.out, imports=args.imports, grouping=args.grouping)
    print(f"{len(table)} rows, {table.model.nunique()} models, {table.step.nunique()} steps, "
          f"{table.task.nunique()} tasks")
    print(f"curves: {Store(args.out).curves_path} (and .csv)")
    return 0


def cmd_export(args) -> int:
    import trajectories as tj

    paths = tj.export(args.out, args.dest, args.format, args.tasks_dir)
    print(f"{len(paths)} results files (one per checkpoint, samples beside them) under {args.dest}")
    print(f"read them back with: trajectories collect NEW_OUT --import '{args.dest}/**/results_*.json'")
    return 0


def cmd_wandb(args) -> int:
    import trajectories as tj

    print(f"W&B run: {tj.to_wandb(args.out, args.project, args.entity)}")
    return 0


def cmd_plot(args) -> int:
    import trajectories as tj

    paths = tj.plot(args.out, x=args.x, phenomenon=args.phenomenon, task=args.task, loss_task=args.loss_task)
    print(f"{len(paths)} figures:")
    print("\n".join(f"  {p}" for p in paths))
    return 0


def cmd_demo(args) -> int:
    from trajectories.demo.run import run_demo

    seeds = {} if args.seeds is None else {"seeds": args.seeds}
    return run_demo(args.out, quick=args.quick, device=args.device, **seeds)


def cmd_analyze(args) -> int:
    import trajectories as tj

    analysis = tj.analyze(args.out, fraction=args.fraction, n_boot=args.n_boot, method=args.method, align=args.align,
                          loss_task=args.loss_task, ngram_corpus=args.ngram_corpus, blimp_dir=args.blimp_dir,
                          tasks_dir=args.tasks_dir)
    print(f"report: {analysis.html} (and report.md, CSV tables in {analysis.folder})")
    return 0


def _layout(args):
    from trajectories.authoring import Layout

    return Layout(args.format, args.good, args.bad, args.prefix_field, args.phenomenon, args.phenomenon_field,
                  args.bad_first)


def cmd_tasks_add(args) -> int:
    from trajectories.authoring import add_task

    folder, result = add_task(args.source, args.name, _layout(args), args.tasks_dir, force=args.force)
    print(result.summary())
    print(f"wrote {folder}; run it with: trajectories sweep --suite ... --tasks {args.name}")
    return 0


def cmd_tasks_add_text(args) -> int:
    from trajectories.authoring import add_text_task

    folder, documents = add_text_task(args.source, args.name, args.per, args.tasks_dir, force=args.force)
    print(f"{documents} documents (one per {args.per}) from {args.source}")
    print(f"wrote {folder}; run it with: trajectories sweep --suite ... --tasks <grammar tasks>,{args.name}")
    return 0


def cmd_tasks_check(args) -> int:
    from trajectories.authoring import check
    from trajectories.tasks import TaskCatalog

    result = check(args.target, _layout(args), args.name, TaskCatalog(args.tasks_dir, args.blimp_dir))
    print(result.summary())
    return 0 if result.ok else 1


def cmd_tasks_list(args) -> int:
    from trajectories.tasks import TaskCatalog, format_task_list

    print(format_task_list(TaskCatalog(args.tasks_dir, args.blimp_dir).known_tasks(), args.family))
    return 0


def cmd_tasks_export(args) -> int:
    from trajectories.authoring import export_tasks

    folder = export_tasks(args.family, args.dest, args.tasks_dir, force=args.force)
    print(f"wrote {folder}; run it with: lm_eval --include_path {folder.parent} --tasks {args.family} ...")
    return 0


def _tasks_parser(sub) -> None:
    tasks = sub.add_parser("tasks", help="list tasks; check or add minimal-pair tasks").add_subparsers(
        dest="tasks_command", required=True)
    p = tasks.add_parser("list", help="every task the harness knows, with phenomenon, pairs and source")
    p.add_argument("family", nargs="?", help="list only this family, e.g. multiblimp")
    p.add_argument("--blimp-dir", help=BLIMP_DIR_HELP)
    p.add_argument("--tasks-dir", help=TASKS_DIR_HELP)
    p.set_defaults(func=cmd_tasks_list)
    p = tasks.add_parser("export", help="copy a task family for stock lm_eval (runs from any working directory)")
    p.add_argument("family", help="a family of your task folder or a built-in one, e.g. minigrammar")
    p.add_argument("dest", metavar="DIR", help="writes DIR/FAMILY/; run: lm_eval --include_path DIR --tasks FAMILY")
    p.add_argument("--tasks-dir", help=TASKS_DIR_HELP)
    p.add_argument("--force", action="store_true", help="replace an existing DIR/FAMILY/")
    p.set_defaults(func=cmd_tasks_export)
    for command, help_ in (("check", "validate a file, folder or task without writing anything (exit 1 on errors)"),
                           ("add", "turn a file or folder of minimal pairs into tasks/NAME/")):
        p = tasks.add_parser(command, help=help_)
        if command == "check":
            p.add_argument("target", metavar="NAME|FILE")
            p.add_argument("--name", help="the NAME `tasks add` would get (default phenomenon)")
            p.add_argument("--blimp-dir", help=BLIMP_DIR_HELP)
            p.set_defaults(func=cmd_tasks_check)
        else:
            p.add_argument("source", metavar="FILE|DIR", help="a folder adds one paradigm per file")
            p.add_argument("--name", required=True, help="family name: tasks/NAME/, tasks NAME_<paradigm>")
            p.add_argument("--force", action="store_true", help="replace an existing tasks/NAME/")
            p.set_defaults(func=cmd_tasks_add)
        p.add_argument("--tasks-dir", help=TASKS_DIR_HELP)
        p.add_argument("--format", choices=["jsonl", "csv", "tsv", "pairs"], help="default: from the file extension")
        p.add_argument("--good", help="field of the good sentence (default: sentence_good or good)")
        p.add_argument("--bad", help="field of the bad sentence (default: sentence_bad or bad)")
        p.add_argument("--prefix-field", help="score continuations after this shared prefix (one-prefix method)")
        which = p.add_mutually_exclusive_group()
        which.add_argument("--phenomenon", help="one phenomenon for every pair (default: NAME)")
        which.add_argument("--phenomenon-field", help="field holding each pair's phenomenon (default: linguistics_term"
                           " when every line has it)")
        p.add_argument("--bad-first", action="store_true", help="pairs files: the bad sentence comes first")
    p = tasks.add_parser("add-text", help="turn a text file into a perplexity task tasks/NAME/ (its loss per "
                         "checkpoint: plot --x loss, analyze --align loss)")
    p.add_argument("source", metavar="FILE")
    p.add_argument("--name", required=True, help="task name: tasks/NAME/")
    p.add_argument("--per", choices=("line", "paragraph", "file"), default="line",
                   help="one document per non-blank line (default), per blank-line-separated paragraph, or the file")
    p.add_argument("--tasks-dir", help=TASKS_DIR_HELP)
    p.add_argument("--force", action="store_true", help="replace an existing tasks/NAME/")
    p.set_defaults(func=cmd_tasks_add_text)


def _run_args(parser: argparse.ArgumentParser, default_out: str, batch_help: str) -> None:
    p = parser
    p.add_argument("--out", help=f"results folder (default: {default_out})")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help=f"{' | '.join(DTYPES)} (auto: float32 on CPU)")
    p.add_argument("--batch-size", default="auto", type=_batch_size, help=batch_help)
    p.add_argument("--evict", choices=EVICT_POLICIES, default="auto",
                   help="delete each downloaded hub checkpoint once evaluated (auto: those over 2 GB)")
    p.add_argument("--force", action="store_true", help="re-evaluate units that are already done")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    run = p.add_argument_group("where units run (see README: Slurm and several GPUs)")
    run.add_argument("--executor", choices=EXECUTORS, default="local",
                     help="local: this process; processes: --workers processes here; slurm: a Slurm job array")
    run.add_argument("--workers", type=int, help="processes: how many (default: one per GPU, or 1)")
    run.add_argument("--partition", help="slurm: partition (default: the cluster's)")
    run.add_argument("--gpus-per-job", type=int, default=0, help="slurm: GPUs per job (default 0; then --device cpu)")
    run.add_argument("--cpus-per-job", type=int, help="slurm: CPUs per job")
    run.add_argument("--mem", help="slurm: memory per job, e.g. 32G")
    run.add_argument("--time", default="4:00:00", help="slurm: time limit per job; on timeout a job is requeued and "
                     "goes on (default 4:00:00)")
    run.add_argument("--array-parallelism", type=int, default=64, help="slurm: jobs running at once (default 64)")
    run.add_argument("--units-per-job", type=int, default=16,
                     help="slurm: checkpoints per job, all of one model (default 16)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trajectories", description=__doc__)
    parser.add_argument("--version", action="version", version=f"trajectories {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("suites", help="list suites and models").set_defaults(func=cmd_suites)

    p = sub.add_parser("checkpoints", help="print the resolved (model, step, tokens, source) list; runs nothing")
    _suite_args(p)
    p.set_defaults(func=cmd_checkpoints)

    p = sub.add_parser("plan", help="which checkpoints a coarse-to-fine or adaptive sweep takes first; runs nothing")
    _suite_args(p)
    _order_args(p)
    p.add_argument("--out", help="--adaptive: a results folder; shows the next round planned from its results")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("sweep", help="evaluate tasks on every checkpoint (resumable)")
    _suite_args(p)
    p.add_argument("--tasks", required=True, help="blimp | blimp:<phenomenon> | <task> | minigrammar (comma list)")
    p.add_argument("--blimp-dir", help=BLIMP_DIR_HELP)
    p.add_argument("--tasks-dir", help=TASKS_DIR_HELP)
    p.add_argument("--limit", type=int, help="first N items of each task")
    p.add_argument("--duplicates", choices=DUPLICATE_POLICIES, default="reuse",
                   help="checkpoints whose weights are identical to another step's: reuse that step's results "
                   "(default; recorded as same_weights_as) or evaluate each")
    _order_args(p)
    p.add_argument("--wandb", metavar="PROJECT", help="also log the curves to a Weights & Biases run in PROJECT "
                   "(pip install 'trajectories[wandb]')")
    _run_args(p, "results/<suite>_<tasks>", "sequences per forward pass (auto: on CPU 32-512 by vocabulary size; on "
              "GPU the largest that fits, from 1024 down)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("memorization", help="score training rows for memorization at every checkpoint (resumable)")
    _suite_args(p)
    p.add_argument("--data", help="the training data in training order (.bin/.idx or their prefix): PATH, or "
                   "standard=PATH,deduped=PATH (default: the files in a local suite's suite.json)")
    p.add_argument("--sample", type=int, default=10_000, help="rows to sample per data file (default 10000)")
    p.add_argument("--strata", type=int, default=100,
                   help="the sample is stratified over this many equal runs of training steps (default 100)")
    p.add_argument("--seed", type=int, default=0, help="of the sample (default 0)")
    p.add_argument("--prefix", type=int, default=32, help="prompt tokens (default 32, as EleutherAI)")
    p.add_argument("--continuation", type=int, default=32, help="tokens to reproduce (default 32, as EleutherAI)")
    p.add_argument("--generate", action="store_true",
                   help="also EleutherAI's match_fraction by greedy generation (about 2-4x the time)")
    p.add_argument("--allow-eos", action="store_true", help="let the continuation contain EOS (EleutherAI's generate "
                   "bans it, so rows with a document boundary there never count as memorized)")
    p.add_argument("--row-len", type=int, help="tokens per row, seq_len + 1 (default: suite.json's, else 2049)")
    p.add_argument("--rows-per-step", type=int,
                   help="rows per training step, the training batch size (default: suite.json's, else 1024)")
    p.add_argument("--token-dtype", choices=TOKEN_DTYPES, help="default: the .idx's, else uint16")
    _run_args(p, "results/<suite>_memorization", "rows per forward pass (auto: 64 on CPU; on GPU 1024, halved on "
              "out-of-memory)")
    p.set_defaults(func=cmd_memorization)

    p = sub.add_parser("audit", help="list each checkpoint's weight files, sizes and sha256 (no weights downloaded) "
                       "and flag identical steps, missing branches, odd shards, sizes or configs")
    _suite_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("status", help="done / failed / pending units per model")
    p.add_argument("out")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("collect", help="rebuild the curves table from a sweep's units (and imported lm-eval JSONs)")
    p.add_argument("out")
    p.add_argument("--import", dest="imports", action="append", metavar="GLOB",
                   help="lm-eval results JSON files to add (0.3 or 0.4 layout); repeatable")
    p.add_argument("--grouping", choices=("data", "paper"),
                   help="BLiMP's phenomena: data (the data's 13 linguistics_term values) or paper (the BLiMP paper's "
                   "12: animate_subject_* under argument_structure); default: as the curves have it, else data")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("export", help="write a sweep's results in lm-eval's layout: a results file per checkpoint")
    p.add_argument("out")
    p.add_argument("dest", metavar="DIR", help="writes DIR/<model>/step<N>/results_<date>.json and samples_*.jsonl")
    p.add_argument("--format", choices=("lm-eval",), default="lm-eval")
    p.add_argument("--tasks-dir", help=TASKS_DIR_HELP + "; the task configs written come from there")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("wandb", help="log a results folder's curves to its Weights & Biases run (new checkpoints)")
    p.add_argument("out")
    p.add_argument("--project", help="W&B project (default: $WANDB_PROJECT)")
    p.add_argument("--entity", help="W&B entity (team or user; default: yours)")
    p.set_defaults(func=cmd_wandb)

    p = sub.add_parser("plot", help="learning-curve figures (PNG + SVG) under OUT/plots/")
    p.add_argument("out")
    p.add_argument("--x", choices=("step", "tokens", "loss"), default="step",
                   help="loss: held-out loss of a perplexity task in the sweep (bits per byte)")
    p.add_argument("--loss-task", help="the perplexity task whose loss --x loss uses, if there are several")
    p.add_argument("--phenomenon", help="also draw this phenomenon's paradigm grid")
    p.add_argument("--task", help="a task name or glob: curves of any imported lm-eval metric")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("analyze", help="acquisition steps, orders, agreement (memorization runs: recency, repetition, "
                       "...), report under OUT/report/")
    p.add_argument("out")
    p.add_argument("--fraction", type=float, default=0.5,
                   help="acquired = reaches this fraction of the way from chance to the final accuracy (isotonic) "
                   "or to the fitted asymptote (sigmoid)")
    p.add_argument("--method", choices=("isotonic", "sigmoid"), default="isotonic",
                   help="the onsets that order the units (both are reported side by side)")
    p.add_argument("--align", choices=("auto", "step", "loss"), default="auto",
                   help="loss: also compare models at matched held-out loss (auto: when a perplexity task was swept)")
    p.add_argument("--loss-task", help="the perplexity task whose loss --align loss uses, if there are several")
    p.add_argument("--ngram-corpus", metavar="FILE",
                   help="training text (one sentence per line) for n-gram baselines (orders 1-5) on the same pairs")
    p.add_argument("--blimp-dir", help=BLIMP_DIR_HELP + " (for n-gram baselines on BLiMP)")
    p.add_argument("--tasks-dir", help=TASKS_DIR_HELP)
    p.add_argument("--n-boot", type=int, help="bootstrap replicates (default 1000; fewer is faster)")
    p.set_defaults(func=cmd_analyze)

    _tasks_parser(sub)

    p = sub.add_parser("demo", help="offline demo: train a mini suite on a toy grammar, sweep, plot, analyse")
    p.add_argument("--out", default="results/demo")
    p.add_argument("--quick", action="store_true",
                   help="smaller suite, 100 pairs per task, 200 bootstrap replicates (about 3.5 minutes on 2 cores)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--seeds", type=int, help="extra seeds of the small sizes, mini-s-seed1, ... (default: none)")
    p.set_defaults(func=cmd_demo)
    return parser


def _batch_size(text: str) -> int | str:
    return text if text == "auto" else int(text)


# OSErrors that come from the environment (permissions, a full or read-only disk, a file in a folder's place), not
# from a bug, when they concern a path the user named.
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENOTDIR,
                      errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EIO}
PATH_OPTIONS = ("out", "tasks_dir", "blimp_dir", "source", "target", "data")


def environment_error(err: OSError, args: argparse.Namespace) -> str | None:
    """One line for an OSError caused by the environment: a file that could not be written (WriteError), or a path
    the user named (or the working folder, where results and tasks go by default) that cannot be used. None for
    anything else: a bug keeps its traceback."""
    if isinstance(err, WriteError):
        return f"cannot write {err.filename}: {err.strerror}"
    if err.errno not in ENVIRONMENT_ERRNOS or not err.filename:
        return None
    named = [Path(getattr(args, option)) for option in PATH_OPTIONS if isinstance(getattr(args, option, None), str)]
    path = Path(os.path.abspath(err.filename))
    if any(path.is_relative_to(Path(os.path.abspath(p))) for p in [*named, Path.cwd()]):
        return f"{err.filename}: {err.strerror}"
    return None


def _show_warning(message, category, filename, lineno, file=None, line=None, show=warnings.showwarning):
    if issubclass(category, SkippedWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        show(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if (line := environment_error(err, args)) is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
