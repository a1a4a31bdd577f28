"""Train `minipythia`, the demo suite: Pythia-architecture models of several sizes on the grammar's corpus.

Every model sees identical data in identical order (one seed for initialisation and data order), and each size has a
deduped twin trained for the same number of steps on the corpus with exact duplicate sentences removed. Checkpoints
follow Pythia's schedule scaled to the run: step 0, the powers of two, then evenly spaced steps to the end.

Documents are `<|endoftext|> sentence <|endoftext|> sentence ...` packed into fixed-length blocks: lm-eval scores a
sentence after the tokenizer's bos token, so the models must have seen sentences start right after it.

`seeds` extra seeds (as Pythia's -seed1 ... -seed9 reruns) retrain the sizes in `seed_sizes` with another
initialisation on the same data order (the standard stream, so the memorization experiment knows when they saw each
row): `mini-s-seed1`, ... (suite.json gives each its `seed`), the noise floor for comparing sizes. The training
corpus is kept as `corpus.txt` (one sentence per line), for n-gram baselines.

The training stream of each data variant is written first, in Pythia's pre-shuffled layout (trainingdata.py: row i
is the i-th block trained on, batch_size rows per step), and every model reads its batches from it, so the
memorization experiment knows exactly when each row was seen. Canaries are planted in it: rows of random words at
known places early, in the middle and late in training (thirds), each repeated 1, 2, 4, ... times (evenly spread
over the third before its last occurrence); the deduped stream has each canary once, where the standard stream has
its last occurrence, as Pythia's deduplicated data would.

The output is a `local:` suite:

    <suite_dir>/suite.json            models, and training_data: the files, their layout and canaries
    <suite_dir>/data/<variant>.bin, .idx, .canaries.csv     variant: standard or deduped
    <suite_dir>/corpus.txt            the standard models' training sentences, one per line
    <suite_dir>/<model>/step<N>/      config.json, model.safetensors, tokenizer files

    python -m trajectories.demo.train --out runs/minipythia [--quick] [--seeds K]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tqdm import tqdm
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from trajectories.demo import grammar
from trajectories.files import atomic_dir, remove_temp_files, write_json, write_table, write_text
from trajectories.schema import CANARY_COLUMNS, DATA_VARIANTS
from trajectories.trainingdata import data_paths, open_training_data, write_training_data

EOT, UNK = "<|endoftext|>", "<unk>"


@dataclass(frozen=True)
class ModelSize:
    label: str  # shared by the standard and deduped model of this size
    layers: int
    d_model: int
    heads: int


@dataclass(frozen=True)
class TrainConfig:
    sizes: tuple[ModelSize, ...] = (ModelSize("s", 1, 32, 2), ModelSize("m", 2, 48, 4), ModelSize("l", 3, 64, 4))
    steps: int = 768
    batch_size: int = 32
    block_size: int = 64
    lr: float = 3e-3
    warmup: int = 32
    min_lr_ratio: float = 0.1  # cosine decay ends at this fraction of lr, as in Pythia
    weight_decay: float = 0.01
    checkpoint_every: int = 128  # evenly spaced checkpoints, on top of step 0 and the powers of two
    seed: int = 1234  # model initialisation and data order, the same for every model
    corpus_tokens: int = 1_000_000
    deduped: bool = True  # also train a deduped twin of each size
    workers: int = 2  # models trained at once, one process and one thread each
    # Canaries: canaries_per_count random-word rows per repetition count in each third of training.
    canary_repetitions: tuple[int, ...] = ()
    canaries_per_count: int = 2
    seed_sizes: tuple[str, ...] = ("s", "m")  # the sizes that extra seeds (build_suite's `seeds`) retrain

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.block_size


# The README demo: a 1-layer model that never gets past agreement attraction, and two deeper ones that do; the
# largest memorizes canaries seen 32 times or more late in training (1530 of its 24576 rows are canaries).
DEFAULT = TrainConfig(canary_repetitions=tuple(2**k for k in range(8)))
# The same story in a fraction of the time, for a first look and for tests.
QUICK = TrainConfig(sizes=(ModelSize("s", 1, 32, 2), ModelSize("m", 2, 48, 4), ModelSize("l", 2, 64, 4)),
                    steps=256, warmup=16, checkpoint_every=64, corpus_tokens=300_000,
                    canary_repetitions=tuple(2**k for k in range(6)))
# Seconds, not minutes: for examples and tests of the pipeline, not of learning.
TINY = TrainConfig(sizes=(ModelSize("s", 1, 16, 2), ModelSize("m", 1, 32, 2)), steps=16, checkpoint_every=8,
                   corpus_tokens=20_000, canary_repetitions=(1, 2), canaries_per_count=1)
REGIONS = ("early", "middle", "late")  # the thirds of training canaries are placed in


def checkpoint_steps(steps: int, every: int) -> list[int]:
    """Pythia's schedule scaled down: 0, 1, 2, 4, ... below `steps`, every `every` steps, and the last step."""
    powers = {2**k for k in range(steps.bit_length()) if 2**k <= steps}
    return sorted({0, steps} | powers | set(range(every, steps + 1, every)))


def model_name(size: ModelSize, deduped: bool, seed: int | None = None) -> str:
    return f"mini-{size.label}" + ("-deduped" if deduped else "") + (f"-seed{seed}" if seed else "")


def build_tokenizer(block_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the grammar's closed vocabulary; punctuation becomes its own token.

    The Whitespace pre-tokenizer drops spaces, so " The man sleeps." (lm-eval's continuation) and "The man sleeps."
    give the same tokens.
    """
    words = [EOT, UNK, ".", "?"] + grammar.vocabulary()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(cleanup=True)  # joins words with spaces and reattaches punctuation
    tok.add_special_tokens([EOT, UNK])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=EOT, unk_token=UNK,
                                   model_max_length=block_size)


def pack(sentences: list[str], tokenizer: PreTrainedTokenizerFast, block_size: int) -> torch.Tensor:
    """Token blocks of `<|endoftext|> sentence <|endoftext|> sentence ...`, cut at block_size (the tail dropped)."""
    eot = tokenizer.eos_token_id
    stream = [t for ids in tokenizer(sentences)["input_ids"] for t in (eot, *ids)]
    n = len(stream) // block_size
    return torch.tensor(stream[: n * block_size]).view(n, block_size)


def batch_order(n_blocks: int, config: TrainConfig) -> torch.Tensor:
    """Block indices for every step, (steps, batch_size): a fresh permutation per epoch from the data-order seed."""
    g = torch.Generator().manual_seed(config.seed)
    need = config.steps * config.batch_size
    perms = [torch.randperm(n_blocks, generator=g) for _ in range(math.ceil(need / n_blocks))]
    return torch.cat(perms)[:need].view(config.steps, config.batch_size)


def plant_canaries(stream: np.ndarray, config: TrainConfig, words: np.ndarray) -> pd.DataFrame:
    """Overwrite rows of `stream` (steps, batch_size, block_size) with canaries; returns where (CANARY_COLUMNS).

    A canary is block_size random words. In each third of training, canaries_per_count canaries per count k of
    canary_repetitions occur k times, evenly spaced over the third and ending at a step drawn from its last eighth,
    so every canary of a third is last seen near its end whatever its count, and repetition is not confounded with
    recency."""
    rng = np.random.default_rng(config.seed)
    steps, batch, _ = stream.shape
    free = {}  # step -> batch slots not yet taken by a canary, in random order
    rows, canary = [], 0
    for r, region in enumerate(REGIONS):
        lo, hi = r * steps // 3, (r + 1) * steps // 3
        jitter = max(1, (hi - lo) // 8)
        for count in config.canary_repetitions:
            for _ in range(config.canaries_per_count):
                canary += 1
                tokens = rng.choice(words, stream.shape[2])
                end = hi - int(rng.integers(jitter))
                for i in range(count):
                    step = end - 1 - i * (end - lo) // count
                    slots = free.setdefault(step, list(rng.permutation(batch)))
                    if not slots:
                        raise ValueError(f"too many canaries for {batch} rows a step: fewer canary_repetitions")
                    slot = slots.pop()
                    stream[step, slot] = tokens
                    rows.append((canary, step * batch + slot, step, region, count))
    return pd.DataFrame(rows, columns=list(CANARY_COLUMNS)).sort_values("row", ignore_index=True)


def write_streams(suite_dir: Path, tokenizer: PreTrainedTokenizerFast, config: TrainConfig, corpus_seed: int) -> dict:
    """The training stream of each data variant, with its canaries, in Pythia's layout under suite_dir/data/; returns
    the suite.json entry that names them (paths relative to suite_dir). Reused when already written: the recipe in
    suite.json guards what it was written from."""
    variants = DATA_VARIANTS[: 2 if config.deduped else 1]
    entry = {"files": {v: f"data/{v}" for v in variants}, "canaries": {v: f"data/{v}.canaries.csv" for v in variants},
             "row_len": config.block_size, "rows_per_step": config.batch_size, "dtype": "uint16"}
    corpus_file = suite_dir / "corpus.txt"
    if all(data_paths(suite_dir / f)[0].exists() for f in entry["files"].values()) and all(
            (suite_dir / f).exists() for f in entry["canaries"].values()) and corpus_file.exists():
        return entry
    # The paradigms' grammatical sentences and the held-out text never enter training: evaluation measures
    # generalisation, and the held-out loss is a loss on unseen text.
    corpus = grammar.generate_corpus(config.corpus_tokens, corpus_seed, exclude=grammar.kept_out())
    write_text(corpus_file, "\n".join(corpus) + "\n")
    words = np.array(sorted(i for w, i in tokenizer.get_vocab().items() if w not in (EOT, UNK, ".", "?")))
    streams = {"standard": pack(corpus, tokenizer, config.block_size)}
    if config.deduped:
        streams["deduped"] = pack(list(dict.fromkeys(corpus)), tokenizer, config.block_size)
    streams = {v: blocks[batch_order(len(blocks), config)].numpy() for v, blocks in streams.items()}
    canaries = plant_canaries(streams["standard"], config, words)
    if config.deduped:  # each canary once, where the standard stream has its last occurrence
        last = canaries.groupby("canary").tail(1)
        flat = streams["deduped"].reshape(-1, config.block_size)
        flat[last.row] = streams["standard"].reshape(-1, config.block_size)[last.row]
    for variant, stream in streams.items():
        planted = canaries if variant == "standard" else last.assign(repetitions=1)
        write_table(planted, suite_dir / entry["canaries"][variant])
        write_training_data(suite_dir / entry["files"][variant], stream.reshape(-1, config.block_size),
                            config.batch_size, entry["dtype"])
    return entry


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio; `step` counts the updates already taken."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def new_model(size: ModelSize, tokenizer: PreTrainedTokenizerFast, config: TrainConfig) -> GPTNeoXForCausalLM:
    torch.manual_seed(config.seed)
    neox = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=size.d_model, num_hidden_layers=size.layers,
        num_attention_heads=size.heads, intermediate_size=4 * size.d_model, max_position_embeddings=config.block_size,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return GPTNeoXForCausalLM(neox)


def save_checkpoint(model: GPTNeoXForCausalLM, tokenizer: PreTrainedTokenizerFast, path: Path) -> None:
    """All or nothing: an interrupted run never leaves a partial step. A folder left by an earlier, interrupted
    training of this model is replaced (it is identical, by determinism)."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def train_model(out_dir: Path, size: ModelSize, data_file: Path, config: TrainConfig, position: int = 0) -> int:
    """Train one model on the training stream in data_file, step s on its rows of step s, saving checkpoints under
    out_dir/step<N>; returns its parameter count.

    One thread per model: these models are too small for intra-op parallelism to pay, and a second thread competing
    for a busy core slows training several times over. A fixed thread count also keeps results bit-identical.
    """
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_temp_files(out_dir, "step*")  # left by an interrupted run
    tokenizer = build_tokenizer(config.block_size)
    model = new_model(size, tokenizer, config)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95), weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, config))
    data = open_training_data(data_file, config.block_size, config.batch_size)
    saves = set(checkpoint_steps(config.steps, config.checkpoint_every))
    save_checkpoint(model, tokenizer, out_dir / "step0")
    model.train()
    bar = tqdm(range(1, config.steps + 1), desc=out_dir.name, position=position, leave=True, dynamic_ncols=True)
    for step in bar:
        batch = torch.from_numpy(data.tokens(data.rows_of_step(step - 1)))
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 16 == 0 or step == config.steps:
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if step in saves:
            model.eval()
            save_checkpoint(model, tokenizer, out_dir / f"step{step}")
            model.train()
    return sum(p.numel() for p in model.parameters())


def build_suite(suite_dir: Path, config: TrainConfig = DEFAULT, corpus_seed: int = 0, seeds: int = 0) -> Path:
    """Generate the corpus, training streams and tokenizer, train every model (and `seeds` extra seeds of the sizes
    in config.seed_sizes), and write suite.json; returns suite_dir.

    Models already complete in suite_dir (final checkpoint present and listed in suite.json) are kept, so an
    interrupted build resumes model by model, and more seeds can be added later. A suite_dir built from another
    config or corpus is refused.
    """
    suite_dir = Path(suite_dir)
    suite_dir.mkdir(parents=True, exist_ok=True)
    recipe = {"train_config": asdict(config), "corpus_seed": corpus_seed, "task_seed": grammar.TASK_SEED,
              # A changed grammar means another corpus and other held-out sentences, so another suite.
              "grammar_sha256": hashlib.sha256(Path(grammar.__file__).read_bytes()).hexdigest()}
    meta_path = suite_dir / "suite.json"
    old = meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta and meta.get("recipe") != json.loads(json.dumps(recipe)):
        raise ValueError(f"{suite_dir} holds a suite built with another recipe; use a fresh folder")
    meta = {
        "name": "minipythia",
        "description": "GPT-NeoX models trained on a toy English grammar (trajectories.demo), with deduped twins",
        "tokens_per_step": config.tokens_per_step,
        "models": meta.get("models", {}),
        "recipe": recipe,
    }
    tokenizer = build_tokenizer(config.block_size)
    meta["training_data"] = write_streams(suite_dir, tokenizer, config, corpus_seed)
    if json.loads(json.dumps(meta)) != old:
        write_json(meta_path, meta)  # before training: the recipe now guards the streams
    # (size, deduped, seed); seed 0 is the suite's main run. Largest first, so that the two slowest models train
    # side by side rather than one of them alone at the end.
    variants = (False, True) if config.deduped else (False,)
    wanted = [(size, deduped, 0) for size in config.sizes for deduped in variants]
    wanted += [(size, False, seed) for seed in range(1, seeds + 1) for size in config.sizes
               if size.label in config.seed_sizes]
    todo = sorted((m for m in wanted if not (model_name(*m) in meta["models"]
                                             and (suite_dir / model_name(*m) / f"step{config.steps}").is_dir())),
                  key=lambda m: -m[0].layers * m[0].d_model**2)
    if not todo:
        return suite_dir
    files = {deduped: suite_dir / meta["training_data"]["files"][DATA_VARIANTS[deduped]] for deduped in variants}
    workers = min(config.workers, len(todo))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = {pool.submit(train_model, suite_dir / model_name(*m), m[0], files[m[1]],
                            replace(config, seed=config.seed + m[2]), i % workers): m for i, m in enumerate(todo)}
        for job in as_completed(jobs):
            size, deduped, seed = jobs[job]
            meta["models"][model_name(size, deduped, seed)] = {
                "size": size.label, "params": job.result(), "deduped": deduped, "layers": size.layers,
                "d_model": size.d_model, "heads": size.heads, "d_head": size.d_model // size.heads,
                "learning_rate": config.lr, "tokens_per_step": config.tokens_per_step,
            } | ({"seed": seed} if seed else {})
            order = [model_name(*m) for m in sorted(wanted, key=lambda m: (config.sizes.index(m[0]), m[1], m[2]))]
            meta["models"] = dict(sorted(meta["models"].items(),
                                         key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
            write_json(meta_path, meta)
    return suite_dir


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m trajectories.demo.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="suite folder to write (or resume)")
    ap.add_argument("--quick", action="store_true", help="the small QUICK preset instead of DEFAULT")
    ap.add_argument("--corpus-seed", type=int, default=0)
    ap.add_argument("--steps", type=int, help="override the preset's number of steps")
    ap.add_argument("--seeds", type=int, default=0, help="extra seeds of the small sizes (mini-s-seed1, ...)")
    args = ap.parse_args(argv)
    config = QUICK if args.quick else DEFAULT
    if args.steps:
        config = replace(config, steps=args.steps)
    print(build_suite(args.out, config, args.corpus_seed, args.seeds))


if __name__ == "__main__":
    main()
