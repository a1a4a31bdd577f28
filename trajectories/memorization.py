"""Memorization of training rows by one checkpoint, measured as EleutherAI measured it for Pythia, and the unit
evaluator of memorization runs (`trajectories memorization`).

EleutherAI (predictable-memorization/eval_memorization.py) prompts with a row's tokens [0:32], generates 32 tokens
greedily (`generate(..., max_length=64, min_length=64)`) and scores the fraction equal to tokens [32:64]; a row is
memorized (32-extractable) when all 32 match. Here:

- `memorized` comes from one teacher-forced forward pass: greedy decoding reproduces the continuation exactly iff
  every continuation token is the argmax of the logits at its position given the true tokens before it (by
  induction on the position), so no decoding loop is needed. The same pass gives the continuation's summed
  log-probability and the teacher-forced per-token match fraction.
- `match_fraction`, EleutherAI's score, needs real greedy decoding (batched, KV cache), so it is optional.

EOS: `min_length=64` makes `generate` ban the EOS token until 64 tokens exist, i.e. for the whole continuation, so a
true continuation that contains EOS (a document boundary in Pythia's packed rows) can never be matched there. With
`ban_eos=True` (the default) both the argmax and the decoding exclude EOS in the same way, keeping the numbers
comparable with EleutherAI's and `memorized` identical to `generate`'s verdict. The log-probability is the model's,
unchanged. Where rows pack short documents (the demo's sentences), ban_eos=False lets such rows count.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from trajectories import hub
from trajectories.errors import UserError
from trajectories.evaluate import EvaluationError, Prefetcher, checkpoint_dtype, loading, provenance
from trajectories.schema import (
    MEMORIZATION_COLUMNS,
    Checkpoint,
    EvalSettings,
    MemorizationSpec,
    UnitResult,
    data_variant,
)
from trajectories.trainingdata import TrainingData, open_training_data

PREFIX, CONTINUATION = 32, 32


@dataclass(frozen=True)
class RowScores:
    """Scores of n rows at one checkpoint, arrays of length n in the rows' order."""

    memorized: np.ndarray  # bool: greedy decoding from the prefix reproduces the whole continuation
    tf_match_fraction: np.ndarray  # share of continuation tokens that are the argmax given the true tokens before
    logp: np.ndarray  # summed log-probability of the continuation given the true tokens before each token
    match_fraction: np.ndarray  # EleutherAI's score: greedy generation vs the continuation; NaN when not generated


def _banned_tokens(model, ban_eos: bool) -> list[int]:
    # The EOS ids generate's min-length processor bans: those of the model's generation config.
    eos = getattr(getattr(model, "generation_config", model.config), "eos_token_id", None) if ban_eos else None
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def _cache_keyword(model) -> str:
    # transformers 5 renamed `past_key_values` to `cache`; older versions know only the old name.
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _keep_logits(model, n: int) -> dict:
    """Ask for the logits of the last n positions only, where this version of transformers can."""
    return {"logits_to_keep": n} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _greedy(logits: torch.Tensor, banned: list[int]) -> torch.Tensor:
    """generate's greedy choice: torch.argmax (ties to the lowest id) over the logits with banned tokens at -inf.

    Bans in place: a copy of Pythia-sized logits costs as much as the argmax itself."""
    logits[..., banned] = -torch.inf
    return logits.argmax(-1)


@torch.no_grad()
def greedy_continuations(model, prefixes: torch.Tensor, n_tokens: int = CONTINUATION,
                         ban_eos: bool = True) -> torch.Tensor:
    """Greedy decoding of n_tokens after each prefix (rows of equal length, so no padding), reusing the KV cache.

    Never stops early: like `generate(min_new_tokens=n_tokens, max_new_tokens=n_tokens)`, which bans EOS."""
    banned, keyword = _banned_tokens(model, ban_eos), _cache_keyword(model)
    # Only the prefix's last position predicts; projecting the others onto a 50k vocabulary would be wasted work.
    out = model(input_ids=prefixes.to(_device(model)), use_cache=True, **_keep_logits(model, 1))
    tokens = []
    for i in range(n_tokens):
        tokens.append(_greedy(out.logits[:, -1].float(), banned))
        if i + 1 < n_tokens:
            out = model(input_ids=tokens[-1][:, None], use_cache=True, **{keyword: out[keyword]})
    return torch.stack(tokens, dim=1)


@torch.no_grad()
def score_rows(model, tokens: np.ndarray | torch.Tensor, prefix: int = PREFIX, continuation: int = CONTINUATION,
               batch_size: int = 64, generate: bool = False, ban_eos: bool = True) -> RowScores:
    """Score rows (an (n, >= prefix + continuation) array of token ids) with a causal LM already loaded and in eval
    mode on any device; batched, without gradients, log-probabilities in float32.

    generate: also run EleutherAI's greedy generation for `match_fraction` (continuation more forward passes)."""
    if model.training:
        raise ValueError("the model is in training mode (dropout on): call model.eval() before scoring")
    tokens = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
    if tokens.ndim != 2 or tokens.shape[1] < prefix + continuation:
        raise UserError(f"rows to score must be 2-D with at least prefix + continuation = {prefix + continuation} "
                        f"tokens, got shape {tuple(tokens.shape)}")
    if prefix < 1 or continuation < 1:
        raise UserError(f"prefix and continuation must be at least 1 token, not {prefix} and {continuation}")
    vocab = model.get_output_embeddings().weight.shape[0]
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= vocab):
        bad = int(tokens.max() if tokens.max() >= vocab else tokens.min())
        raise UserError(f"token id {bad} is outside the model's vocabulary of {vocab}: another tokenizer's data, "
                        "or the wrong token dtype?")
    banned, device = _banned_tokens(model, ban_eos), _device(model)
    # The last continuation token is only a target, so the forward pass stops one token short of it.
    keep = _keep_logits(model, continuation)
    parts = {"memorized": [], "tf_match_fraction": [], "logp": [], "match_fraction": []}
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start:start + batch_size, : prefix + continuation].to(device)
        target = batch[:, prefix:]
        logits = model(input_ids=batch[:, :-1], **keep).logits[:, -continuation:].float()
        logp = logits.log_softmax(-1).gather(-1, target[..., None])[..., 0].sum(-1)
        match = _greedy(logits, banned) == target  # after logp, which stays the model's own
        parts["memorized"].append(match.all(-1))
        parts["tf_match_fraction"].append(match.float().mean(-1))
        parts["logp"].append(logp)
        if generate:
            generated = greedy_continuations(model, batch[:, :prefix], continuation, ban_eos)
            parts["match_fraction"].append((generated == target).float().mean(-1))
        else:
            parts["match_fraction"].append(torch.full((len(batch),), torch.nan, device=device))
    if not len(tokens):
        return RowScores(np.zeros(0, bool), *(np.zeros(0) for _ in range(3)))
    return RowScores(**{k: torch.cat(v).cpu().numpy().astype(bool if k == "memorized" else np.float64)
                        for k, v in parts.items()})


def score_checkpoint(model, model_name: str, step: int, data: TrainingData, rows, seen_only: bool = True,
                     **options) -> pd.DataFrame:
    """One (model, checkpoint) unit: score rows of a training-data file; a table of MEMORIZATION_COLUMNS, one line
    per row (sorted, duplicates dropped).

    rows: row indices, or a table with columns row, canary and repetitions (schema.ROW_COLUMNS); plain indices are
    sampled rows (not canaries, repetitions unknown).
    seen_only: drop rows the checkpoint has not been trained on yet (EleutherAI scores rows < step * rows_per_step).
    options: those of `score_rows` (prefix, continuation, batch_size, generate, ban_eos)."""
    if not isinstance(rows, pd.DataFrame):
        rows = pd.DataFrame({"row": np.asarray(rows, dtype=np.int64), "canary": False,
                             "repetitions": pd.array([pd.NA] * len(rows), dtype="Int64")})
    rows = rows.drop_duplicates("row").sort_values("row")
    seen_at = data.step_of(rows.row.to_numpy(np.int64))
    if seen_only:
        rows, seen_at = rows[seen_at < step], seen_at[seen_at < step]
    columns = options.get("prefix", PREFIX) + options.get("continuation", CONTINUATION)
    scores = score_rows(model, data.tokens(rows.row, columns), **options)
    table = pd.DataFrame({"model": model_name, "step": step, "row": rows.row.to_numpy(np.int64),
                          "seen_at_step": seen_at, "canary": rows.canary.to_numpy(bool),
                          "repetitions": rows.repetitions.astype("Int64").to_numpy(),
                          "memorized": scores.memorized, "match_fraction": scores.match_fraction,
                          "logp": scores.logp, "tf_match_fraction": scores.tf_match_fraction})
    return table[list(MEMORIZATION_COLUMNS)]


class MemorizationEvaluator:
    """Scores checkpoints one after another on the rows recorded in the results folder (schema.ROW_COLUMNS), each
    model on the rows of the data it was trained on; the next checkpoint is built in the background meanwhile.

    batch_size "auto": 64 rows on a CPU; on a GPU 1024, halved on out-of-memory (and kept for later units)."""

    def __init__(self, spec: MemorizationSpec, settings: EvalSettings, rows: pd.DataFrame):
        self.spec, self.settings = spec, settings
        self.rows = {variant: group for variant, group in rows.groupby("data")}
        self.data = {variant: open_training_data(path, spec.row_len, spec.rows_per_step, spec.token_dtype)
                     for variant, path in spec.data}
        self.fetcher = Prefetcher(lambda ckpt: checkpoint_dtype(spec.dtype, settings.device, ckpt),
                                  spec.trust_remote_code)
        self.auto_batch = settings.batch_size == "auto"
        self.batch_size = (1024 if settings.device.startswith("cuda") else 64) if self.auto_batch else \
            int(settings.batch_size)
        self.model_loads = 0  # lets tests prove that a resume evaluates nothing

    def load(self, ckpt: Checkpoint, next_ckpt: Checkpoint | None):
        with loading(ckpt, self.fetcher, next_ckpt):
            fetched = self.fetcher.get(ckpt)
            self.model_loads += 1
            return fetched, fetched.model.to(self.settings.device)

    def score(self, model, ckpt: Checkpoint) -> pd.DataFrame:
        variant = data_variant(ckpt.model)
        rows = self.rows.get(variant, pd.DataFrame(columns=["row", "canary", "repetitions"]))
        options = {"prefix": self.spec.prefix, "continuation": self.spec.continuation, "generate": self.spec.generate,
                   "ban_eos": self.spec.ban_eos}
        while True:
            try:
                return score_checkpoint(model, ckpt.model.name, ckpt.step, self.data[variant], rows,
                                        batch_size=self.batch_size, **options)
            except torch.cuda.OutOfMemoryError:
                if not self.auto_batch or self.batch_size == 1:
                    raise
                self.batch_size //= 2
                torch.cuda.empty_cache()

    def evaluate(self, ckpt: Checkpoint, next_ckpt: Checkpoint | None = None) -> UnitResult:
        started = time.perf_counter()
        fetched, model = self.load(ckpt, next_ckpt)
        loaded = time.perf_counter()
        if model.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(model.device)
        items = self.score(model, ckpt)
        scored = time.perf_counter()
        if fetched.commit:
            hub.evict(fetched.folder, self.settings.evict)
        bad = int((~np.isfinite(items.logp.to_numpy(float))).sum())
        if bad:
            raise EvaluationError(f"{ckpt.describe()}: {bad} rows have NaN or infinite log-probabilities")
        seconds = {"read": fetched.seconds, "load": loaded - started, "evaluate": scored - loaded}
        return UnitResult({}, items, seconds, provenance(fetched, model, self.batch_size))
