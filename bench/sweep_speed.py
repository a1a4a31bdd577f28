"""Sweep speed: the naive loop (one `lm_eval` process per checkpoint) vs `trajectories sweep` vs the forward floor.

    python bench/sweep_speed.py                       # both CPU cases, 67 BLiMP paradigms x 100 pairs
    python bench/sweep_speed.py --device cuda --case pythia-160m --limit 1000   # on a GPU machine

For each case it builds a local suite of random-init checkpoints, then measures per checkpoint
(a) naive: the `lm_eval` CLI run once per checkpoint (start-up, task building and model load every time);
(b) trajectories: one `trajectories sweep` over all checkpoints, split into a fixed start-up cost and the marginal
    seconds per additional checkpoint (from the spacing of the units' completion times);
(c) floor: a plain batched torch forward + log-softmax over the same token sequences (prefix token + sentence);
checks that (a) and (b) give identical accuracies, and prints the ratios and peak memory.
Targets (2-core CPU): small model naive / trajectories-marginal >= 10x; Pythia-14m shape trajectories-marginal /
floor <= 1.2x. GPU: Pythia-160m shape on full BLiMP, trajectories-marginal <= 1.5x the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' helpers: one suite builder and one reference scorer for tests and bench
from tests.helpers import (  # noqa: E402
    BLIMP_DIR,
    Shape,
    blimp_sentences,
    build_tiny_suite,
    load_checkpoint,
    reference_logprobs,
)

CASES = {
    "small": Shape(2, 96, 4, ffn=4),
    "pythia-14m": Shape(6, 128, 4, 50304, ffn=4),
    "pythia-160m": Shape(12, 768, 12, 50304, ffn=4),
}


def build_suite(root: Path, case: str, n_checkpoints: int) -> Path:
    """The tests' tiny-suite builder, at this case's shape, with a tokenizer over every BLiMP sentence."""
    sentences = blimp_sentences(sorted(p.stem for p in BLIMP_DIR.glob("*.jsonl")))
    suite = build_tiny_suite(root, {case: CASES[case]}, range(n_checkpoints), sentences, max_positions=2048)
    config = json.loads((suite / case / "step0" / "config.json").read_text())
    print(f"{case}: {json.loads((suite / 'suite.json').read_text())['models'][case]['params']:,} parameters, "
          f"vocabulary {config['vocab_size']}", flush=True)
    return suite


def naive_task_folder(folder: Path, tasks: list[str]) -> Path:
    """lm-eval task YAMLs for the same BLiMP paradigms read from local files (include paths override built-ins)."""
    from trajectories.tasks import TaskCatalog

    catalog = TaskCatalog(blimp_dir=BLIMP_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        config = {k: v for k, v in catalog.config(task).items() if k not in ("metadata",)}
        (folder / f"{task}.yaml").write_text(yaml.safe_dump(config))
    return folder


def peak_child_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run_naive(suite: Path, case: str, steps: int, tasks: list[str], args, work: Path) -> tuple[list[float], dict]:
    include = naive_task_folder(work / "naive_tasks", tasks)
    seconds, accs = [], {}
    for step in range(steps):
        out = work / f"naive_{case}_{step}"
        cmd = [
            "lm_eval", "--model", "hf", "--model_args",
            f"pretrained={suite / case / f'step{step}'},dtype=float32" if args.device == "cpu"
            else f"pretrained={suite / case / f'step{step}'}",
            "--tasks", ",".join(tasks), "--include_path", str(include), "--limit", str(args.limit),
            "--device", args.device, "--batch_size", str(args.batch_size), "--output_path", str(out),
        ]
        started = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - started)
        results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
        accs[step] = {task: results[task]["acc,none"] for task in tasks}
        print(f"  naive step {step}: {seconds[-1]:.1f} s", flush=True)
    return seconds, accs


def run_trajectories(suite: Path, case: str, steps: int, args, work: Path) -> tuple[float, float, dict, float]:
    out = work / f"traj_{case}"
    cmd = [
        "trajectories", "sweep", "--suite", f"local:{suite}", "--models", case, "--tasks", "blimp",
        "--blimp-dir", str(BLIMP_DIR), "--limit", str(args.limit), "--out", str(out), "--device", args.device,
        "--batch-size", str(args.batch_size),
    ]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    units = [out / "units" / case / f"step{step}.json" for step in range(steps)]
    finished = [u.stat().st_mtime for u in units]
    marginal = (finished[-1] - finished[0]) / (steps - 1)
    records = [json.loads(u.read_text()) for u in units]
    accs = {r["step"]: {task: t["acc"] for task, t in r["tasks"].items()} for r in records}
    startup = wall - marginal * steps
    return startup, marginal, accs, max(r["peak_rss_mb"] for r in records)


def run_floor(suite: Path, case: str, steps: int, tasks: list[str], args) -> list[float]:
    """The tests' reference scorer (a plain batched forward + log-softmax) over the requests lm-eval scores:
    prefix token + " " + sentence, longest first so batches pad little."""
    requests = []
    for task in tasks:
        lines = (BLIMP_DIR / f"{task.removeprefix('blimp_')}.jsonl").read_text().splitlines()[: args.limit]
        pairs = [json.loads(line) for line in lines]
        requests += [("", " " + pair[key]) for pair in pairs for key in ("sentence_good", "sentence_bad")]
    requests.sort(key=lambda r: -len(r[1].split()))
    seconds = []
    for step in range(steps):
        model, tokenizer = load_checkpoint(suite / case / f"step{step}")
        model = model.to(args.device).half() if args.device != "cpu" else model
        started = time.perf_counter()
        reference_logprobs(model, tokenizer, requests, args.batch_size, dtype=torch.float32)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", choices=list(CASES), help="default: small and pythia-14m")
    parser.add_argument("--checkpoints", type=int, default=3)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-naive", action="store_true", help="on a GPU machine without the lm_eval CLI")
    args = parser.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    from trajectories.tasks import TaskCatalog

    tasks = TaskCatalog().expand("blimp")
    print(f"torch threads {torch.get_num_threads()}, device {args.device}, {len(tasks)} paradigms x {args.limit}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for case in args.case or ["small", "pythia-14m"]:
            suite = build_suite(work / "suite", case, args.checkpoints)
            startup, marginal, traj_accs, traj_rss = run_trajectories(suite, case, args.checkpoints, args, work)
            floor = statistics.median(run_floor(suite, case, args.checkpoints, tasks, args))
            print(f"[{case}] trajectories: start-up {startup:.1f} s, marginal {marginal:.2f} s/checkpoint, "
                  f"peak RSS {traj_rss:.0f} MB")
            print(f"[{case}] floor: {floor:.2f} s/checkpoint; trajectories-marginal / floor = {marginal / floor:.2f}x")
            if not args.skip_naive:
                naive, naive_accs = run_naive(suite, case, args.checkpoints, tasks, args, work)
                same = all(naive_accs[s] == traj_accs[s] for s in naive_accs)
                print(f"[{case}] naive: {statistics.median(naive):.1f} s/checkpoint, peak RSS "
                      f"{peak_child_rss_mb():.0f} MB; naive / trajectories-marginal = "
                      f"{statistics.median(naive) / marginal:.1f}x; identical accuracies: {same}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
