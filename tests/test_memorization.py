"""Scoring memorization on real tiny GPT-NeoX checkpoints, checked against transformers' own `generate`.

A model is trained here on a training stream written in the training-data layout: a few planted rows in every batch
(memorized) among fresh rows seen once (not memorized), so the truth of every row is known.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPTNeoXForCausalLM

from tests.helpers import (
    PLANTED,
    PLANTED_BATCH,
    PLANTED_EOS,
    PLANTED_EOS_AT,
    PLANTED_ROW,
    PLANTED_STEPS,
    PLANTED_VOCAB,
    build_planted_suite,
    planted_model,
    random_rows,
)
from trajectories.errors import UserError
from trajectories.memorization import greedy_continuations, score_checkpoint, score_rows
from trajectories.schema import MEMORIZATION_COLUMNS
from trajectories.trainingdata import open_training_data

VOCAB, EOS, ROW = PLANTED_VOCAB, PLANTED_EOS, PLANTED_ROW
STEPS, BATCH, EOS_AT = PLANTED_STEPS, PLANTED_BATCH, PLANTED_EOS_AT


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(data, planted rows, {step: model}): a stream of STEPS batches, each the PLANTED rows and 3 fresh ones."""
    suite, plant = build_planted_suite(tmp_path_factory.mktemp("planted"))
    data = open_training_data(suite / "data" / "standard", row_len=ROW, rows_per_step=BATCH)
    models = {step: GPTNeoXForCausalLM.from_pretrained(suite / "planted" / f"step{step}").eval() for step in (0, STEPS)}
    return data, plant, models


def hf_generate(model, tokens: np.ndarray, prefix: int = 32, continuation: int = 32) -> np.ndarray:
    x = torch.as_tensor(tokens[:, :prefix])
    out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=continuation,
                         min_new_tokens=continuation, pad_token_id=EOS)
    return out[:, prefix:].numpy()


def probe_rows(model, plant: np.ndarray) -> np.ndarray:
    """Rows whose truth differs in telling ways: planted, fresh, the model's own greedy continuations (memorized by
    construction), those with one token changed, and planted prefixes with another continuation."""
    own = random_rows(12, seed=5)
    own[:, 32:] = hf_generate(model, own)
    off_by_one = own.copy()
    off_by_one[np.arange(12), 32 + np.arange(12) * 2] = (off_by_one[np.arange(12), 32 + np.arange(12) * 2] % 63) + 1
    other_ending = np.concatenate([plant[:, :32], random_rows(len(plant), seed=6)[:, 32:]], axis=1)
    return np.concatenate([plant, random_rows(20, seed=7), own, off_by_one, other_ending])


@pytest.mark.parametrize("step", [0, STEPS])
def test_teacher_forced_exact_equals_generate(planted, step):
    data, plant, models = planted
    model = models[step]
    rows = np.concatenate([probe_rows(model, plant), data.tokens(range(0, data.n_rows, 7))])
    generated = hf_generate(model, rows)
    truth = (generated == rows[:, 32:]).all(1)
    scores = score_rows(model, rows, batch_size=16, generate=True)
    assert np.array_equal(scores.memorized, truth)
    assert np.allclose(scores.match_fraction, (generated == rows[:, 32:]).mean(1))
    assert truth.sum() >= 12  # the model's own continuations at least, so both outcomes are tested
    # Our batched greedy decoding with the KV cache is generate's, token for token.
    ours = greedy_continuations(model, torch.as_tensor(rows[:, :32]), 32).numpy()
    assert np.array_equal(ours, generated)


def test_planted_rows_and_only_they_are_memorized(planted):
    data, plant, models = planted
    tokens = data.tokens(range(data.n_rows))
    is_planted = (tokens[:, None, :] == plant[None]).all(-1).any(-1)
    is_eos_row = (tokens == plant[-1]).all(-1)
    assert is_planted.sum() == STEPS * PLANTED
    scores = score_rows(models[STEPS], tokens, batch_size=128)
    # generate bans EOS before min_length, so the row with a document boundary in its continuation never matches
    assert np.array_equal(scores.memorized, is_planted & ~is_eos_row)
    assert np.array_equal(score_rows(models[STEPS], tokens, ban_eos=False).memorized, is_planted)
    assert not score_rows(models[0], tokens).memorized.any()
    assert (scores.tf_match_fraction[is_eos_row] == 31 / 32).all()
    # Memorized rows are likely (over 0.6 per token on average); fresh rows seen once are near chance (1/63 a token).
    assert scores.logp[is_planted].min() > 32 * np.log(0.6) and scores.logp[~is_planted].max() < 32 * np.log(2 / 63)


def test_partial_matches_and_configurable_lengths(planted):
    _, plant, models = planted
    model = models[STEPS]
    changed = plant[:-1].copy()
    changed[:, 63] = changed[:, 63] % 63 + 1  # the last continuation token wrong: 31 of 32 right either way
    scores = score_rows(model, changed, generate=True)
    assert not scores.memorized.any()
    assert np.allclose(scores.tf_match_fraction, 31 / 32) and np.allclose(scores.match_fraction, 31 / 32)
    short = score_rows(model, changed, prefix=16, continuation=8, generate=True)
    assert short.memorized.all()  # tokens [16:24] are right
    assert np.array_equal(greedy_continuations(model, torch.as_tensor(changed[:, :16]), 8).numpy(),
                          hf_generate(model, changed, prefix=16, continuation=8))
    with pytest.raises(UserError, match="at least prefix \\+ continuation = 72 tokens"):
        score_rows(model, changed, prefix=40, continuation=32)


def test_logp_and_batching_match_a_plain_forward(planted):
    data, plant, models = planted
    model = models[STEPS]
    rows = np.concatenate([plant, data.tokens(range(30))])
    with torch.no_grad():
        logp = model(input_ids=torch.as_tensor(rows)).logits.log_softmax(-1)
    expected = logp[:, 31:63].gather(-1, torch.as_tensor(rows[:, 32:, None]))[..., 0].sum(-1).numpy()
    one_by_one = score_rows(model, rows, batch_size=1)
    all_at_once = score_rows(model, rows, batch_size=len(rows))
    assert np.allclose(all_at_once.logp, expected, atol=1e-4)
    assert np.allclose(one_by_one.logp, all_at_once.logp, atol=1e-4)
    assert np.array_equal(one_by_one.memorized, all_at_once.memorized)
    assert np.isnan(all_at_once.match_fraction).all()  # not generated


def test_score_checkpoint_gives_the_unit_table(planted, tmp_path):
    data, plant, models = planted
    data = open_training_data(data.path, row_len=ROW, rows_per_step=BATCH)
    table = score_checkpoint(models[STEPS], "planted", 50, data, rows=[400, 3, 399, 3, 17, 600], generate=True)
    assert list(table.columns) == list(MEMORIZATION_COLUMNS)
    assert list(table.row) == [3, 17, 399]  # sorted, unique, and only rows the step-50 checkpoint had seen
    assert list(table.seen_at_step) == [0, 2, 49] and (table.step == 50).all() and (table.model == "planted").all()
    tokens = data.tokens(table.row)
    assert np.array_equal(table.memorized, score_rows(models[STEPS], tokens).memorized)
    assert table.match_fraction.notna().all()
    everything = score_checkpoint(models[STEPS], "planted", 50, data, rows=[3, 600], seen_only=False)
    assert list(everything.seen_at_step) == [0, 75] and everything.match_fraction.isna().all()
    assert isinstance(everything, pd.DataFrame)


def test_tokens_outside_the_vocabulary_are_refused(planted):
    _, plant, models = planted
    bad = plant.copy()
    bad[0, 5] = VOCAB
    with pytest.raises(UserError, match="token id 64 is outside the model's vocabulary of 64"):
        score_rows(models[0], bad)
    with pytest.raises(ValueError, match="training mode"):
        score_rows(planted_model(), plant)
