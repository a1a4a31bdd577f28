"""What the tests share: a tiny suite builder, one independent log-prob reference scorer, the standard small sweep's
arguments, synthetic sweeps whose learning curves are known, and a suite trained to memorize known training rows.
Tests import from here, never from each other."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trajectories.schema import ITEM_COLUMNS, Checkpoint, ModelInfo, TaskResult, UnitRecord, UnitResult

BLIMP_DIR = (Path(__file__).resolve().parents[2] / "shared" / "blimp").resolve()
TEST_PARADIGMS = ("adjunct_island", "anaphor_number_agreement", "determiner_noun_agreement_1")
TASKS = tuple(f"blimp_{p}" for p in TEST_PARADIGMS)
LIMIT = 12


# ---------------------------------------------------------------------------------------------------- tiny suites
@dataclass(frozen=True)
class Shape:
    """A GPT-NeoX shape; vocab None: the tokenizer's own size."""

    layers: int
    hidden: int
    heads: int = 2
    vocab: int | None = None
    ffn: int = 2  # intermediate size, in multiples of hidden


TINY_MODELS = {"tiny": Shape(1, 16), "small": Shape(2, 32)}
STEPS = (0, 1, 2)


def blimp_sentences(paradigms=TEST_PARADIGMS) -> list[str]:
    sentences = []
    for paradigm in paradigms:
        for line in (BLIMP_DIR / f"{paradigm}.jsonl").read_text().splitlines():
            pair = json.loads(line)
            sentences += [pair["sentence_good"], pair["sentence_bad"]]
    return sentences


def word_tokenizer(sentences: list[str]):
    """A word-level tokenizer trained with `tokenizers` on `sentences`, in Hugging Face's format."""
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    word_level = Tokenizer(tok_models.WordLevel(unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level.train_from_iterator(sentences, trainers.WordLevelTrainer(special_tokens=["<|endoftext|>", "<unk>"]))
    return PreTrainedTokenizerFast(
        tokenizer_object=word_level, unk_token="<unk>", eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )


def build_tiny_suite(root: Path, models: dict[str, Shape] = TINY_MODELS, steps=STEPS,
                     sentences: list[str] | None = None, max_positions: int = 64) -> Path:
    """Random-init GPT-NeoX checkpoints (one seed per model and step, so steps differ) saved as a `local:` suite,
    `<root>/<model>/step<N>/`, with a word-level tokenizer trained on BLiMP sentences and a suite.json."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tokenizer = word_tokenizer(sentences or blimp_sentences())
    meta = {"tokens_per_step": 1024, "models": {}}
    for i, (name, shape) in enumerate(models.items()):
        config = GPTNeoXConfig(
            vocab_size=shape.vocab or len(tokenizer), hidden_size=shape.hidden, num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads, intermediate_size=shape.ffn * shape.hidden,
            max_position_embeddings=max_positions, bos_token_id=0, eos_token_id=0,
        )
        for step in steps:
            torch.manual_seed(1000 * i + step)
            model = GPTNeoXForCausalLM(config)
            model.save_pretrained(root / name / f"step{step}")
            tokenizer.save_pretrained(root / name / f"step{step}")
        meta["models"][name] = {"size": name, "params": model.num_parameters(), "layers": shape.layers,
                                "d_model": shape.hidden}
    (root / "suite.json").write_text(json.dumps(meta))
    return root


# ---------------------------------------------------------------------------------------------------- reference
def reference_logprobs(model, tokenizer, requests: list[tuple[str, str]], batch_size: int = 16,
                       dtype: torch.dtype = torch.float64) -> list[float]:
    """log P(continuation | context) for each (context, continuation) request, computed with transformers alone the
    way lm-eval defines it: the context's tokens (the continuation's are what the whole string adds to them), or
    the prefix token (EOS) alone when the context is empty. Batches are right-padded; log-softmax in `dtype`."""
    sequences, starts = [], []
    for context, continuation in requests:
        if context:
            whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
            start = len(tokenizer(context, add_special_tokens=False).input_ids)
        else:
            whole = [tokenizer.eos_token_id] + tokenizer(continuation, add_special_tokens=False).input_ids
            start = 1
        sequences.append(whole)
        starts.append(start)
    device = next(model.parameters()).device
    scores = []
    for i in range(0, len(sequences), batch_size):
        batch = sequences[i:i + batch_size]
        width = max(map(len, batch))
        ids = torch.tensor([s + [0] * (width - len(s)) for s in batch], device=device)
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits.to(dtype)[:, :-1], dim=-1)
        token_logprobs = logprobs.gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1).cpu()
        scores += [float(row[start - 1:len(seq) - 1].sum())
                   for row, seq, start in zip(token_logprobs, batch, starts[i:i + batch_size], strict=True)]
    return scores


def load_checkpoint(folder: Path):
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    return GPTNeoXForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------------- sweeps
def sweep_args(suite: Path, out: Path, *extra: str, blimp_dir: Path = BLIMP_DIR) -> list[str]:
    """`trajectories sweep` of the test paradigms on a local suite, LIMIT pairs each."""
    return ["sweep", "--suite", f"local:{suite}", "--tasks", ",".join(TEST_PARADIGMS), "--blimp-dir", str(blimp_dir),
            "--limit", str(LIMIT), "--out", str(out), "--device", "cpu", "--batch-size", "8", *extra]


def local_sweep(suite: Path, out: Path, **options):
    """The same sweep through the Python API, in this process; its summary."""
    import trajectories as tj

    options = {"limit": LIMIT, "blimp_dir": BLIMP_DIR, "device": "cpu", "batch_size": 8, "progress": False} | options
    return tj.sweep(f"local:{suite}", list(TEST_PARADIGMS), out=out, **options)


# ---------------------------------------------------------------------------------------------------- synthetic
SYNTHETIC_STEPS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 143000)
SYNTHETIC_MIDPOINTS = {"agreement": 64, "islands": 2000, "binding": 30000}
TOKENS_PER_STEP = 1000
SYNTHETIC_MODELS = {
    "70m": ModelInfo("70m", "70m", 70_000_000, tokens_per_step=TOKENS_PER_STEP),
    "70m-deduped": ModelInfo("70m-deduped", "70m", 70_000_000, deduped=True, tokens_per_step=TOKENS_PER_STEP),
    "160m": ModelInfo("160m", "160m", 160_000_000, tokens_per_step=TOKENS_PER_STEP),
}


def logistic_acc(steps, midpoint: float, top: float = 0.85, scale: float = 0.25, floor: float = 0.5) -> np.ndarray:
    """A logistic in log10 step from `floor` to `top`, halfway at `midpoint`; `scale` in decades (top 0.5 with the
    default floor: never learned)."""
    steps = np.asarray(steps, float)
    return floor + (top - floor) / (1 + np.exp(-(np.log10(steps + 1) - np.log10(midpoint + 1)) / scale))


def answers(p: np.ndarray, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """steps x items 0/1: each item right with the step's accuracy, independently (binomial noise)."""
    return (rng.random((len(p), n_items)) < np.asarray(p)[:, None]).astype(float)


def replicates(steps, correct: np.ndarray, n_boot: int, rng: np.random.Generator):
    from trajectories.stats import Replicates, bootstrap_items

    return Replicates(np.asarray(steps), correct.mean(1), bootstrap_items(correct, n_boot, rng),
                      np.ones(len(steps), bool))


def quick_replicates(steps, correct: np.ndarray, n_boot: int, rng: np.random.Generator):
    """As `replicates` (the same items redrawn at every step), by resampled indices: many times faster than
    `bootstrap_items`' multinomial draws for the hundreds of small null curves the stage tests need."""
    from trajectories.stats import Replicates

    picks = rng.integers(correct.shape[1], size=(n_boot, correct.shape[1]))
    return Replicates(np.asarray(steps), correct.mean(1), correct[:, picks].mean(-1), np.ones(len(steps), bool))


def task_result(correct, phenomenon: str) -> TaskResult:
    """A task's result from its items' 0/1 answers, with lm-eval's standard error of the mean."""
    p, n = float(np.mean(correct)), len(correct)
    return TaskResult(p, float(np.sqrt(p * (1 - p) / (n - 1))), n, phenomenon)


def record(model: ModelInfo, step: int, tasks: dict[str, TaskResult]) -> UnitRecord:
    from trajectories.schema import SweepSpec

    tokens = step * model.tokens_per_step if model.tokens_per_step else None
    ckpt = Checkpoint("synthetic", model, step, tokens, path=f"/nowhere/{model.name}/step{step}")
    return UnitRecord.of(ckpt, UnitResult(tasks, None, {}, {}), SweepSpec("synthetic", ()), None)


def unit_result(items: pd.DataFrame, phenomena: dict[str, str]) -> UnitResult:
    tasks = {task: task_result(rows.correct, phenomena[task]) for task, rows in items.groupby("task")}
    return UnitResult(tasks, items, {}, {})


def item_rows(model: str, step: int, task: str, correct: np.ndarray, logp_bad: np.ndarray, logp_good: np.ndarray):
    return pd.DataFrame({"model": model, "step": step, "task": task, "item": np.arange(len(correct)),
                         "logp_good": logp_good, "logp_bad": logp_bad, "correct": correct > 0})


def synthetic_sweep(models=("70m", "160m"), midpoints=None, finals=None, n_items=200, steps=SYNTHETIC_STEPS,
                    seed=0) -> list[tuple[Checkpoint, UnitResult]]:
    """(Checkpoint, UnitResult) per (model, step): two paradigms per phenomenon, each item correct with the true
    accuracy (binomial noise), log-probs random per step. midpoints/finals: {model: {phenomenon: value}}."""
    rng = np.random.default_rng(seed)
    units = []
    for name in models:
        model = SYNTHETIC_MODELS.get(name) or ModelInfo(name, name, tokens_per_step=TOKENS_PER_STEP)
        mids = (midpoints or {}).get(name, SYNTHETIC_MIDPOINTS)
        phenomena = {f"{phen}_{k}": phen for phen in mids for k in range(2)}
        for step in steps:
            frames = []
            for task, phen in phenomena.items():
                top = (finals or {}).get(name, {}).get(phen, 0.85)
                correct = rng.random(n_items) < logistic_acc(step, mids[phen], top)
                bad = rng.normal(-30, 3, n_items)
                good = bad + np.where(correct, 1, -1) * rng.exponential(1, n_items)
                frames.append(item_rows(name, step, task, correct, bad, good))
            ckpt = Checkpoint("synthetic", model, step, step * TOKENS_PER_STEP, path=f"/nowhere/{name}/step{step}")
            units.append((ckpt, unit_result(pd.concat(frames, ignore_index=True)[list(ITEM_COLUMNS)], phenomena)))
    return units


def synthetic_tables(units, n_boot=200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The curve table (as `collect` builds it) and the item table of synthetic units."""
    from trajectories.curves import curves_from_units, with_phenomena
    from trajectories.schema import SweepSpec

    spec = SweepSpec("synthetic", ())
    records = [UnitRecord.of(c, r, spec, None) for c, r in units]
    items = pd.concat([r.items for _, r in units], ignore_index=True)
    return with_phenomena(curves_from_units(records), items, n_boot=n_boot), items


def planted_tables(planted: dict[str, dict[str, tuple[str, np.ndarray]]], steps=SYNTHETIC_STEPS, n_items: int = 200,
                   n_boot: int = 100, seed: int = 0, answers_of=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Curve and item tables of planted curves: planted[model][task] = (phenomenon, accuracy per step).
    answers_of(model, task, p, rng) may replace the independent draws (e.g. to share answers between models)."""
    from trajectories.curves import curves_from_units, with_phenomena

    rng = np.random.default_rng(seed)
    draw = answers_of or (lambda model, task, p, rng: answers(p, n_items, rng))
    frames, tasks = [], {}
    for name, planted_tasks in planted.items():
        for task, (phenomenon, p) in planted_tasks.items():
            correct = draw(name, task, np.asarray(p), rng)
            for i, step in enumerate(steps):
                frames.append(item_rows(name, int(step), task, correct[i], np.where(correct[i] > 0, -1.0, 1.0), 0.0))
                tasks.setdefault((name, int(step)), {})[task] = task_result(correct[i], phenomenon)
    records = [record(ModelInfo(name, name, tokens_per_step=TOKENS_PER_STEP), step, results)
               for (name, step), results in tasks.items()]
    items = pd.concat(frames, ignore_index=True)[list(ITEM_COLUMNS)]
    return with_phenomena(curves_from_units(records), items, n_boot=n_boot, seed=seed), items


# ---------------------------------------------------------------------------------------------------- W&B
def wandb_offline_records(run_file: Path) -> list:
    """The records of an offline W&B run file (`offline-run-*/run-<id>.wandb`), as wandb wrote them: its LevelDB-log
    framing (a 7-byte file header ":W&B", magic, version; 32 KiB blocks of chunks, each a 7-byte header crc, length,
    type: 1 full, 2 first, 3 middle, 4 last) around protobuf `Record`s."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, header = run_file.read_bytes(), 32768, 7
    assert data[:4] == b":W&B", f"{run_file} is not a W&B run file"
    records, pos, parts = [], header, b""
    while pos + header <= len(data):
        left = block - pos % block
        if left < header:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + header])
        if length == 0 and kind == 0:
            pos += left
            continue
        parts += data[pos + header:pos + header + length]
        pos += header + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def wandb_history(run_file: Path) -> list[dict]:
    """The history rows of an offline W&B run file, values decoded from JSON, W&B's own `_` keys left out."""
    rows = []
    for record in wandb_offline_records(run_file):
        if record.WhichOneof("record_type") == "history":
            rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item
                         if not (i.key or i.nested_key[0]).startswith("_")})
    return rows


# ---------------------------------------------------------------------------------------------------- planted rows
PLANTED_VOCAB, PLANTED_EOS, PLANTED_ROW = 64, 0, 64
PLANTED_STEPS, PLANTED_BATCH, PLANTED = 80, 8, 5
PLANTED_EOS_AT = 40  # the last planted row has a document boundary (EOS) at this position of its continuation
PLANTED_CHECKPOINTS = (0, 40, PLANTED_STEPS)
ONCE_STEPS = (5, 25, 45, 65, 75)  # the steps of the fresh rows the suite also declares as canaries (seen once)


def planted_model(layers: int = 2, hidden: int = 64, seed: int = 0):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=PLANTED_VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=4, intermediate_size=4 * hidden, max_position_embeddings=PLANTED_ROW,
                           bos_token_id=PLANTED_EOS, eos_token_id=PLANTED_EOS)
    return GPTNeoXForCausalLM(config)


def random_rows(n: int, seed: int) -> np.ndarray:
    """Rows of random tokens without EOS: ordinary text inside a document."""
    return np.random.default_rng(seed).integers(1, PLANTED_VOCAB, (n, PLANTED_ROW))


def build_planted_suite(root: Path) -> tuple[Path, np.ndarray]:
    """A `local:` suite of one model, "planted", trained on a stream written in the training-data layout
    (data/standard.bin): the PLANTED rows in every batch (memorized) among fresh rows seen once (not), so the truth of
    every row is known. Checkpoints at PLANTED_CHECKPOINTS; suite.json names the data and its canaries: the planted
    rows, seen PLANTED_STEPS times, and the fresh rows of the first slot not planted at ONCE_STEPS, seen once.
    Returns the suite folder and the planted rows' tokens."""
    from trajectories.trainingdata import write_training_data

    plant = random_rows(PLANTED, seed=1)
    plant[-1, PLANTED_EOS_AT] = PLANTED_EOS
    fresh = random_rows(PLANTED_STEPS * (PLANTED_BATCH - PLANTED), seed=2).reshape(PLANTED_STEPS, -1, PLANTED_ROW)
    batches = [np.concatenate([plant, fresh[s]])[np.random.default_rng(s).permutation(PLANTED_BATCH)]
               for s in range(PLANTED_STEPS)]
    data = write_training_data(root / "data" / "standard", batches, rows_per_step=PLANTED_BATCH)
    tokens = data.tokens(range(data.n_rows))
    which = (tokens[:, None, :] == plant[None]).all(-1)  # rows x planted
    canaries = [(i, row, row // PLANTED_BATCH, "every step", PLANTED_STEPS)
                for i in range(PLANTED) for row in np.flatnonzero(which[:, i])]
    for i, step in enumerate(ONCE_STEPS):
        row = step * PLANTED_BATCH + int(np.flatnonzero(~which[step * PLANTED_BATCH:(step + 1) * PLANTED_BATCH]
                                                        .any(1))[0])
        canaries.append((PLANTED + i, row, step, "once", 1))
    pd.DataFrame(canaries, columns=["canary", "row", "step", "region", "repetitions"]).to_csv(
        root / "data" / "standard.canaries.csv", index=False)
    torch.set_num_threads(1)
    model = planted_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.save_pretrained(root / "planted" / "step0")
    model.train()
    for step in range(PLANTED_STEPS):  # reads its batches back from the file, as the demo trainer does
        batch = torch.from_numpy(data.tokens(data.rows_of_step(step)))
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
        if step + 1 in PLANTED_CHECKPOINTS:
            model.save_pretrained(root / "planted" / f"step{step + 1}")
    (root / "suite.json").write_text(json.dumps({"models": {"planted": {"size": "planted"}}, "training_data": {
        "files": {"standard": "data/standard"}, "canaries": {"standard": "data/standard.canaries.csv"},
        "row_len": PLANTED_ROW, "rows_per_step": PLANTED_BATCH}}))
    return root, plant
