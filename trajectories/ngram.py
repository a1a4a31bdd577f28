"""Count-based n-gram language models (orders 1 to 5) with interpolated modified Kneser-Ney smoothing, as a
baseline for minimal-pair tasks (BLiMP's n-gram baseline used KenLM, whose Python module only queries models).

Conventions follow KenLM's: each sentence is "<s> w1 ... wm </s>" (one <s>, never predicted); a word not seen
in training is "<unk>", which gets only the uniform share of the lowest order; n-grams of the highest order, and
n-grams starting with <s>, keep their counts, lower orders use continuation counts (how many distinct words
precede them); discounts D1, D2, D3+ per order from counts of counts (Chen & Goodman), unless `discount` fixes
one for every order and count. Log-probabilities are natural logs.

Pure Python dictionaries: fine for the demo grammar's corpus or a few million tokens, not for billions.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trajectories.errors import UserError

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
MAX_ORDER = 5
DEFAULT_DISCOUNTS = (0.5, 1.0, 1.5)  # when counts of counts cannot estimate them (tiny corpora)

# score_pairs: one row per pair: task, item (its position in the task), phenomenon, logp_good, logp_bad (natural
# log-probabilities of the sentences, </s> included), correct (logp_good > logp_bad; a tie is wrong).
PAIR_COLUMNS = ("task", "item", "phenomenon", "logp_good", "logp_bad", "correct")
# paradigm_accuracy: one row per task: phenomenon, n pairs, acc, acc_stderr (binomial).
ACCURACY_COLUMNS = ("task", "phenomenon", "n", "acc", "acc_stderr")


class NgramError(UserError):
    """An n-gram model cannot be built or a pairs file cannot be read; the message says why."""


def whitespace(text: str) -> list[str]:
    return text.split()


def words_and_punctuation(text: str) -> list[str]:
    """Words and punctuation marks as separate tokens ("Richard?" -> "Richard", "?")."""
    return re.findall(r"\w+(?:'\w+)?|[^\w\s]", text)


@dataclass(frozen=True)
class Context:
    """Everything the recursion needs about one context at one order."""

    counts: dict[str, int]  # next word -> (adjusted) count
    total: int
    backoff: float  # the mass given to the lower order: sum of the discounts taken, over total


class NgramLM:
    """An interpolated modified Kneser-Ney n-gram model; build with `train` or `NgramLM.from_file`."""

    def __init__(self, order: int, contexts: list[dict[tuple[str, ...], Context]], vocab: frozenset[str],
                 discounts: list[tuple[float, float, float]], tokenize: Callable[[str], list[str]]):
        self.order, self.contexts, self.vocab = order, contexts, vocab
        self.discounts, self.tokenize = discounts, tokenize
        self.predicted = sorted(vocab - {BOS})  # what the model assigns probabilities to

    @classmethod
    def from_file(cls, path: str | Path, order: int = 3, tokenize: Callable[[str], list[str]] = whitespace,
                  discount: float | None = None) -> NgramLM:
        """Train on a text file, one sentence per line (blank lines skipped)."""
        with open(path, encoding="utf-8") as lines:
            return train(lines, order, tokenize, discount)

    def prob(self, word: str, context: Sequence[str] = ()) -> float:
        """P(word | context); the context is cut to the model's last order - 1 words, unknown words are <unk>."""
        word = word if word in self.vocab else UNK
        history = tuple(w if w in self.vocab else UNK for w in context)[-(self.order - 1):] if self.order > 1 else ()
        return self._prob(word, history)

    def _prob(self, word: str, history: tuple[str, ...]) -> float:
        lower = self._prob(word, history[1:]) if history else 1 / len(self.predicted)
        ctx = self.contexts[len(history)].get(history)
        if ctx is None:  # unseen context: all its mass goes to the lower order
            return lower
        count = ctx.counts.get(word, 0)
        d = self.discounts[len(history)][min(count, 3) - 1] if count else 0.0
        return (count - d) / ctx.total + ctx.backoff * lower

    def logprob(self, sentence: str | Sequence[str], eos: bool = True) -> float:
        """Natural log-probability of a sentence (a string is tokenized; </s> is scored unless eos is False)."""
        tokens = self.tokenize(sentence) if isinstance(sentence, str) else list(sentence)
        history = [BOS] + [w if w in self.vocab else UNK for w in tokens]
        targets = history[1:] + ([EOS] if eos else [])
        return sum(math.log(self.prob(word, history[:i + 1])) for i, word in enumerate(targets))


def _discounts(counts: Iterable[int], fixed: float | None) -> tuple[float, float, float]:
    if fixed is not None:
        return (fixed,) * 3
    n = Counter(c for c in counts if c <= 4)
    if not all(n[r] for r in (1, 2, 3, 4)):
        return DEFAULT_DISCOUNTS
    y = n[1] / (n[1] + 2 * n[2])
    estimates = (1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3])
    # A discount must stay within (0, r] for counts r, or probabilities stop summing to 1.
    return tuple(float(np.clip(d, 0.05, r)) for r, d in zip((1, 2, 3), estimates, strict=True))


def train(lines: Iterable[str], order: int = 3, tokenize: Callable[[str], list[str]] = whitespace,
          discount: float | None = None) -> NgramLM:
    """An order-`order` model of the sentences in `lines` (blank ones skipped)."""
    if not 1 <= order <= MAX_ORDER:
        raise NgramError(f"order must be 1 to {MAX_ORDER}, not {order}")
    if discount is not None and not 0 < discount <= 1:
        raise NgramError(f"a fixed discount must be in (0, 1], not {discount}")
    raw: Counter[tuple[str, ...]] = Counter()
    vocab = {BOS, EOS, UNK}
    for line in lines:
        tokens = tokenize(line)
        if not tokens:
            continue
        vocab.update(tokens)
        seq = (BOS, *tokens, EOS)
        for k in range(1, order + 1):
            raw.update(seq[i:i + k] for i in range(len(seq) - k + 1))
    if not raw:
        raise NgramError("no sentences to train on")
    # Adjusted counts: highest order and <s>-initial n-grams keep their counts; others count distinct
    # predecessors.
    adjusted: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order + 1)]
    for gram, count in raw.items():
        if len(gram) == order or gram[0] == BOS:
            adjusted[len(gram)][gram] = count
        if len(gram) > 1 and gram[1] != BOS and len(gram) - 1 < order:
            adjusted[len(gram) - 1][gram[1:]] += 1
    contexts: list[dict[tuple[str, ...], Context]] = []
    discounts = []
    for k in range(1, order + 1):
        grams = {g: c for g, c in adjusted[k].items() if g[-1] != BOS}
        d = _discounts(grams.values(), discount)
        by_context: dict[tuple[str, ...], dict[str, int]] = defaultdict(dict)
        for gram, count in grams.items():
            by_context[gram[:-1]][gram[-1]] = count
        table = {}
        for history, counts in by_context.items():
            total = sum(counts.values())
            taken = sum(d[min(c, 3) - 1] for c in counts.values())
            table[history] = Context(counts, total, taken / total)
        contexts.append(table)
        discounts.append(d)
    return NgramLM(order, contexts, frozenset(vocab), discounts, tokenize)


# ---------------------------------------------------------------------------------------------------- pairs
def read_pairs(path: str | Path) -> pd.DataFrame:
    """Minimal pairs from a BLiMP-style jsonl file (or a task file of `tasks add`, with `choices`), or every *.jsonl
    in a folder: task (UID, else the file name), item, phenomenon (linguistics_term, else ""), sentence_good,
    sentence_bad."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise NgramError(f"no .jsonl files in {path}")
    rows = []
    for file in files:
        for i, line in enumerate(file.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                pair = json.loads(line)
                if "sentence_good" in pair or "choices" not in pair:
                    good, bad = pair["sentence_good"], pair["sentence_bad"]
                else:  # a task file written by `tasks add`: choices [good, bad], after a shared prefix if any
                    prefix = pair["prefix"] + " " if pair.get("prefix") else ""
                    good, bad = prefix + pair["choices"][0], prefix + pair["choices"][1]
                rows.append({"task": pair.get("UID", file.stem), "item": i,
                             "phenomenon": pair.get("linguistics_term", ""), "sentence_good": good,
                             "sentence_bad": bad})
            except (json.JSONDecodeError, KeyError, TypeError, IndexError) as err:
                raise NgramError(f"{file}:{i + 1}: not a minimal pair with sentence_good and sentence_bad ({err})") \
                    from err
    return pd.DataFrame(rows)


def score_pairs(lm: NgramLM, pairs: pd.DataFrame, eos: bool = True) -> pd.DataFrame:
    """Each pair's sentence log-probabilities and whether the good one is more probable (PAIR_COLUMNS)."""
    good = np.array([lm.logprob(s, eos) for s in pairs.sentence_good])
    bad = np.array([lm.logprob(s, eos) for s in pairs.sentence_bad])
    scored = pairs.assign(logp_good=good, logp_bad=bad, correct=good > bad)
    for column in ("task", "item", "phenomenon"):
        if column not in scored:
            scored[column] = "" if column != "item" else np.arange(len(scored))
    return scored[list(PAIR_COLUMNS)].reset_index(drop=True)


def paradigm_accuracy(scored: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per task of `score_pairs` output (ACCURACY_COLUMNS)."""
    table = scored.groupby(["task", "phenomenon"]).correct.agg(n="size", acc="mean").reset_index()
    table["acc_stderr"] = np.sqrt(table.acc * (1 - table.acc) / table.n)
    return table[list(ACCURACY_COLUMNS)]


# baselines: one row per (order, task): ACCURACY_COLUMNS and the n-gram order.
BASELINE_COLUMNS = ("order", *ACCURACY_COLUMNS)
ORDERS = (1, 2, 3, 4, 5)


def _order_accuracy(corpus: str, order: int, pairs: pd.DataFrame) -> pd.DataFrame:
    lm = NgramLM.from_file(corpus, order, words_and_punctuation)
    return paradigm_accuracy(score_pairs(lm, pairs)).assign(order=order)


def baselines(corpus: str | Path, pairs: pd.DataFrame, orders: Sequence[int] = ORDERS,
              workers: int | None = None) -> pd.DataFrame:
    """Accuracy per task of an interpolated modified Kneser-Ney model of each order trained on `corpus` (a text
    file, one sentence per line; words and punctuation marks are tokens), on `pairs` (read_pairs' columns); one
    order per worker process (BASELINE_COLUMNS)."""
    from concurrent.futures import ProcessPoolExecutor

    if not Path(corpus).is_file():
        raise NgramError(f"{corpus}: no such corpus file")
    workers = workers or min(len(orders), os.cpu_count() or 1)
    if workers == 1:
        parts = [_order_accuracy(str(corpus), order, pairs) for order in orders]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_order_accuracy, [str(corpus)] * len(orders), orders, [pairs] * len(orders)))
    return pd.concat(parts, ignore_index=True)[list(BASELINE_COLUMNS)]
