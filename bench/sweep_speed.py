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
BLIMP_DIR = ROOT.parent / "shared" / "blimp"
CASES = {  # name: (layers, hidden, heads, vocab or None for the tokenizer's own size)
    "small": (2, 96, 4, None),
    "pythia-14m": (6, 128, 4, 50304),
    "pythia-160m": (12, 768, 12, 50304),
}


def build_suite(root: Path, case: str, n_checkpoints: int) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    sentences = []
    for file in sorted(BLIMP_DIR.glob("*.jsonl")):
        for line in file.read_text().splitlines():
            pair = json.loads(line)
            sentences += [pair["sentence_good"], pair["sentence_bad"]]
    word_level = Tokenizer(models.WordLevel(unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level.train_from_iterator(sentences, trainers.WordLevelTrainer(special_tokens=["<|endoftext|>", "<unk>"]))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, unk_token="<unk>", eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    layers, hidden, heads, vocab = CASES[case]
    config = GPTNeoXConfig(
        vocab_size=vocab or len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=2048, bos_token_id=0, eos_token_id=0,
    )
    for step in range(n_checkpoints):
        torch.manual_seed(step)
        model = GPTNeoXForCausalLM(config)
        model.save_pretrained(root / case / f"step{step}")
        tokenizer.save_pretrained(root / case / f"step{step}")
    print(f"{case}: {model.num_parameters():,} parameters, vocabulary {config.vocab_size}", flush=True)
    return root


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
    """Plain batched forward over the same sequences lm-eval scores: prefix token + " " + sentence."""
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(suite / case / "step0")
    sequences = []
    for task in tasks:
        lines = (BLIMP_DIR / f"{task.removeprefix('blimp_')}.jsonl").read_text().splitlines()[: args.limit]
        for pair in map(json.loads, lines):
            for sentence in (pair["sentence_good"], pair["sentence_bad"]):
                ids = tokenizer(" " + sentence, add_special_tokens=False).input_ids
                sequences.append([tokenizer.eos_token_id, *ids])
    sequences.sort(key=len, reverse=True)
    seconds = []
    for step in range(steps):
        model = GPTNeoXForCausalLM.from_pretrained(suite / case / f"step{step}").to(args.device).eval()
        if args.device != "cpu":
            model = model.half()
        started = time.perf_counter()
        total = torch.zeros((), device=args.device)
        with torch.no_grad():
            for i in range(0, len(sequences), args.batch_size):
                batch = sequences[i : i + args.batch_size]
                width = len(batch[0])
                ids = torch.tensor([s + [0] * (width - len(s)) for s in batch], device=args.device)
                logprobs = torch.log_softmax(model(ids[:, :-1]).logits.float(), dim=-1)
                total += logprobs.gather(2, ids[:, 1:].unsqueeze(-1)).sum()
        total.item()
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
