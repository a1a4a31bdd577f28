"""Shared fixtures: a tiny local suite of random GPT-NeoX checkpoints with a word-level tokenizer trained here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

BLIMP_DIR = Path(__file__).resolve().parents[2] / "shared" / "blimp"
TEST_PARADIGMS = ("adjunct_island", "anaphor_number_agreement", "determiner_noun_agreement_1")
MODELS = {"tiny": (1, 16), "small": (2, 32)}  # name: (layers, hidden size)
STEPS = (0, 1, 2)


def blimp_sentences(paradigms=TEST_PARADIGMS) -> list[str]:
    sentences = []
    for paradigm in paradigms:
        for line in (BLIMP_DIR / f"{paradigm}.jsonl").read_text().splitlines():
            pair = json.loads(line)
            sentences += [pair["sentence_good"], pair["sentence_bad"]]
    return sentences


def build_tiny_suite(root: Path, models=MODELS, steps=STEPS) -> Path:
    """Random-init checkpoints (one seed per step, so steps differ) saved as `<root>/<model>/step<N>/`."""
    import torch
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers import models as tok_models
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    word_level = Tokenizer(tok_models.WordLevel(unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<|endoftext|>", "<unk>"])
    word_level.train_from_iterator(blimp_sentences(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, unk_token="<unk>", eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    meta = {"tokens_per_step": 1024, "models": {}}
    for i, (name, (layers, hidden)) in enumerate(models.items()):
        config = GPTNeoXConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
            intermediate_size=2 * hidden, max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
        )
        for step in steps:
            torch.manual_seed(1000 * i + step)
            model = GPTNeoXForCausalLM(config)
            model.save_pretrained(root / name / f"step{step}")
            tokenizer.save_pretrained(root / name / f"step{step}")
        meta["models"][name] = {"size": name, "params": model.num_parameters(), "layers": layers, "d_model": hidden}
    (root / "suite.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory) -> Path:
    """Read-only: tests that damage checkpoints copy it first."""
    return build_tiny_suite(tmp_path_factory.mktemp("suite"))


@pytest.fixture(scope="session")
def blimp_dir() -> Path:
    assert BLIMP_DIR.is_dir(), f"BLiMP data expected at {BLIMP_DIR}"
    return BLIMP_DIR
