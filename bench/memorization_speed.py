"""Memorization scoring speed: rows per second, teacher-forced exact only vs with EleutherAI's greedy generation.

    python bench/memorization_speed.py                            # both CPU cases, 256 rows, 5 repeats
    python bench/memorization_speed.py --device cuda --rows 4096 --batch-size 1024 --dtype float16

Random-init GPT-NeoX models of two shapes score random 64-token rows (prefix 32, continuation 32):
  demo-l      the demo suite's largest model (3 layers, d_model 64, 4 heads, the demo tokenizer's vocabulary)
  pythia-14m  Pythia-14m's shape (6 layers, d_model 128, 4 heads, vocabulary 50304)
Each mode runs once to warm up, then --repeats times; the min and median are reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from trajectories.memorization import score_rows

CASES = {  # name: (layers, d_model, heads, vocabulary)
    "demo-l": (3, 64, 4, 486),  # trajectories.train's largest size; len(build_tokenizer()) is 486 today
    "pythia-14m": (6, 128, 4, 50304),
}


def build(case: str, device: str, dtype: torch.dtype) -> GPTNeoXForCausalLM:
    layers, hidden, heads, vocab = CASES[case]
    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=4 * hidden, max_position_embeddings=2048, bos_token_id=0, eos_token_id=0)
    return GPTNeoXForCausalLM(config).to(device=device, dtype=dtype).eval()


def seconds(model, rows: np.ndarray, generate: bool, batch_size: int, repeats: int) -> list[float]:
    score_rows(model, rows[:batch_size], generate=generate, batch_size=batch_size)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        score_rows(model, rows, generate=generate, batch_size=batch_size)
        if rows.size and next(model.parameters()).is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steady on a shared machine)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.rows} rows of 64 tokens, batch {args.batch_size}, {args.device} {args.dtype}, "
          f"{args.threads} thread(s), torch {torch.__version__}; rows/s from the min and median of {args.repeats}")
    print(f"{'case':<12}{'params':>12}  {'mode':<16}{'min s':>8}{'median s':>10}{'rows/s (min)':>14}"
          f"{'rows/s (med)':>14}")
    for case in args.cases.split(","):
        model = build(case, args.device, getattr(torch, args.dtype))
        vocab = CASES[case][3]
        rows = np.random.default_rng(0).integers(1, vocab, (args.rows, 64))
        params = sum(p.numel() for p in model.parameters())
        for mode, generate in (("exact only", False), ("with generation", True)):
            times = seconds(model, rows, generate, args.batch_size, args.repeats)
            fastest, median = min(times), statistics.median(times)
            print(f"{case:<12}{params:>12,}  {mode:<16}{fastest:>8.3f}{median:>10.3f}{args.rows / fastest:>14,.0f}"
                  f"{args.rows / median:>14,.0f}")


if __name__ == "__main__":
    main()
