"""The demo suite's trainer: layout, determinism, resumption, and models that really learn the grammar.

Accuracies here are computed independently of the sweep engine, the way lm-eval scores a BLiMP pair: the summed
log-probability of each sentence's tokens after one <|endoftext|> token, good beating bad.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers import load_checkpoint, reference_logprobs
from trajectories.demo import grammar, train
from trajectories.demo.train import ModelSize, TrainConfig
from trajectories.tasks import BUILTIN_TASKS_DIR
from trajectories.trainingdata import open_training_data

# Two sizes, standard data only: enough to see learning, small enough for the test budget.
LEARN = replace(train.QUICK, sizes=(train.QUICK.sizes[0], train.QUICK.sizes[-1]), deduped=False)
TINY = TrainConfig(sizes=(ModelSize("t", 1, 16, 2),), steps=8, batch_size=4, block_size=32, warmup=2,
                   checkpoint_every=4, corpus_tokens=20_000, canary_repetitions=(1, 2), canaries_per_count=1)
N_PAIRS = 150
LOCAL = ("determiner_noun_agreement", "subject_verb_agreement_local")


def sentence_logprobs(model, tokenizer, sentences: list[str]) -> torch.Tensor:
    return torch.tensor(reference_logprobs(model, tokenizer, [("", " " + s) for s in sentences], batch_size=256,
                                           dtype=torch.float32))


def accuracies(model_dir: Path, paradigms: dict[str, list[dict]]) -> dict[str, float]:
    model, tokenizer = load_checkpoint(model_dir)
    out = {}
    for name, rows in paradigms.items():
        good = sentence_logprobs(model, tokenizer, [r["sentence_good"] for r in rows])
        bad = sentence_logprobs(model, tokenizer, [r["sentence_bad"] for r in rows])
        out[name] = (good > bad).float().mean().item()
    return out


def steps_of(model_dir: Path) -> list[int]:
    return sorted(int(p.name[4:]) for p in model_dir.iterdir() if p.name.startswith("step"))


def first_reaching(curve: dict[int, dict[str, float]], paradigm: str, level: float = 0.8) -> float:
    return next((step for step, accs in curve.items() if accs[paradigm] >= level), math.inf)


@pytest.fixture(scope="session")
def learned(tmp_path_factory) -> tuple[Path, dict[str, dict[int, dict[str, float]]]]:
    """A trained two-size suite and every checkpoint's accuracy per paradigm: {model: {step: {paradigm: acc}}}."""
    suite = train.build_suite(tmp_path_factory.mktemp("learn"), LEARN)
    paradigms = grammar.generate_paradigms(n_pairs=N_PAIRS)
    curves = {}
    for name in json.loads((suite / "suite.json").read_text())["models"]:
        curves[name] = {step: accuracies(suite / name / f"step{step}", paradigms) for step in steps_of(suite / name)}
    return suite, curves


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    return train.build_suite(tmp_path_factory.mktemp("tiny"), TINY)


def test_checkpoint_schedule_is_pythias_scaled_down():
    assert train.checkpoint_steps(256, 64) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 192, 256]
    assert train.checkpoint_steps(100, 40) == [0, 1, 2, 4, 8, 16, 32, 40, 64, 80, 100]


def test_tokenizer_is_word_level_and_ignores_the_leading_space():
    tok = train.build_tokenizer(64)
    sentence = "Has the man near these dogs ever seen himself?"
    assert tok(sentence)["input_ids"] == tok(" " + sentence)["input_ids"]
    assert tok.convert_ids_to_tokens(tok(sentence)["input_ids"])[-2:] == ["himself", "?"]
    assert tok.decode(tok(sentence)["input_ids"]) == sentence
    assert tok.bos_token == tok.eos_token == tok.pad_token == "<|endoftext|>"
    words = {w for s in grammar.generate_corpus(20_000, seed=1) for w in tok.tokenize(s)}
    assert tok.unk_token not in words


def test_suite_layout(tiny):
    meta = json.loads((tiny / "suite.json").read_text())
    assert meta["name"] == "minipythia" and meta["tokens_per_step"] == TINY.batch_size * TINY.block_size
    assert list(meta["models"]) == ["mini-t", "mini-t-deduped"]
    standard, deduped = meta["models"]["mini-t"], meta["models"]["mini-t-deduped"]
    assert standard["size"] == deduped["size"] == "t" and not standard["deduped"] and deduped["deduped"]
    assert standard["params"] == deduped["params"] > 0 and standard["d_head"] == 8
    for name in meta["models"]:
        assert sorted(p.name for p in (tiny / name).iterdir()) == sorted(f"step{s}" for s in [0, 1, 2, 4, 8])
        files = {p.name for p in (tiny / name / "step8").iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert not [p for p in tiny.rglob(".*")]  # no temporary folder or file left behind
    # The twins start from the same initialisation and see different data.
    same_init = [(tiny / m / "step0" / "model.safetensors").read_bytes() for m in meta["models"]]
    trained = [(tiny / m / "step8" / "model.safetensors").read_bytes() for m in meta["models"]]
    assert same_init[0] == same_init[1] and trained[0] != trained[1]


def test_training_streams_and_canaries_are_where_suite_json_says(tiny):
    entry = json.loads((tiny / "suite.json").read_text())["training_data"]
    assert (entry["row_len"], entry["rows_per_step"], entry["dtype"]) == (32, 4, "uint16")
    data = {v: open_training_data(tiny / path, 32, 4) for v, path in entry["files"].items()}
    canaries = {v: pd.read_csv(tiny / path) for v, path in entry["canaries"].items()}
    assert set(data) == set(canaries) == {"standard", "deduped"} and data["standard"].n_steps == TINY.steps
    eot = train.build_tokenizer(32).eos_token_id
    for variant, table in canaries.items():
        tokens = data[variant].tokens(range(data[variant].n_rows))
        assert len(table.canary.unique()) == 3 * len(TINY.canary_repetitions)
        for _, occurrences in table.groupby("canary"):
            planted = tokens[occurrences.row.iloc[0]]
            assert eot not in planted and (tokens[occurrences.row] == planted).all()
            # The file holds it exactly as often as the table says: the deduped data once.
            assert (tokens == planted).all(1).sum() == len(occurrences) == occurrences.repetitions.iloc[0]
            assert (occurrences.step == occurrences.row // 4).all()
    standard, deduped = canaries["standard"], canaries["deduped"]
    assert list(standard.groupby("canary").row.max()) == list(deduped.groupby("canary").row.max())
    assert (deduped.repetitions == 1).all() and sorted(standard.repetitions.unique()) == [1, 2]


def test_the_default_demo_plants_its_canaries_by_thirds():
    config = train.DEFAULT
    stream = np.zeros((config.steps, config.batch_size, 4), np.int64)
    table = train.plant_canaries(stream, config, np.arange(10, 500))
    per_count = config.canaries_per_count
    assert len(table) == 3 * per_count * sum(config.canary_repetitions) == 3060 and table.row.is_unique
    assert (stream.reshape(-1, 4)[table.row] != 0).all() and (stream != 0).any(2).sum() == 3060
    for (region, count), occurrences in table.groupby(["region", "repetitions"]):
        third = train.REGIONS.index(region)
        lo, hi = third * 256, (third + 1) * 256
        assert occurrences.canary.nunique() == per_count and len(occurrences) == per_count * count
        assert occurrences.step.between(lo, hi - 1).all()
        last = occurrences.groupby("canary").step.max()
        assert (last >= hi - 32).all()  # last seen near the end of its third, whatever its count
        if count >= 8:  # spread over the third, not bunched
            assert (occurrences.groupby("canary").step.min() < lo + 40).all()


def test_deduped_data_has_no_repeated_sentence_and_fewer_blocks():
    tok = train.build_tokenizer(32)
    corpus = grammar.generate_corpus(20_000, 0)
    unique = list(dict.fromkeys(corpus))
    assert len(unique) < len(corpus)
    assert len(train.pack(unique, tok, 32)) < len(train.pack(corpus, tok, 32))


def test_same_command_gives_bit_identical_checkpoints_and_resumes(tiny, tmp_path):
    again = train.build_suite(tmp_path / "again", TINY)
    for path in tiny.rglob("*.safetensors"):
        assert path.read_bytes() == (again / path.relative_to(tiny)).read_bytes(), path
    # A completed suite is reused as it is ...
    before = {p: p.stat().st_mtime_ns for p in again.rglob("*")}
    train.build_suite(again, TINY)
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*")} == before
    # ... an interrupted one retrains only the unfinished model, to the same bytes ...
    meta = json.loads((again / "suite.json").read_text())
    del meta["models"]["mini-t-deduped"]
    (again / "suite.json").write_text(json.dumps(meta))
    kept = (again / "mini-t" / "step8" / "model.safetensors").stat().st_mtime_ns
    train.build_suite(again, TINY)
    assert (again / "mini-t" / "step8" / "model.safetensors").stat().st_mtime_ns == kept
    for path in tiny.rglob("*.safetensors"):
        assert path.read_bytes() == (again / path.relative_to(tiny)).read_bytes(), path
    # ... and a different recipe is refused rather than mixed in.
    with pytest.raises(ValueError, match="another recipe"):
        train.build_suite(again, replace(TINY, lr=1e-3))


def test_untrained_models_are_at_chance(learned):
    _, curves = learned
    for name, curve in curves.items():
        for p in grammar.PARADIGMS:
            assert abs(curve[0][p.name] - 0.5) <= 0.15, (name, p.name, curve[0][p.name])


def test_largest_model_learns_local_agreement(learned):
    _, curves = learned
    final = curves["mini-l"][LEARN.steps]
    for paradigm in LOCAL:
        assert final[paradigm] >= 0.9, (paradigm, final[paradigm])


def test_phenomena_are_acquired_at_clearly_different_steps(learned):
    _, curves = learned
    curve = curves["mini-l"]
    acquired = {}
    for p in grammar.PARADIGMS:
        acquired[p.phenomenon] = min(acquired.get(p.phenomenon, math.inf), first_reaching(curve, p.name))
    steps = sorted(s for s in acquired.values() if s < math.inf)
    assert len(steps) >= 2 and steps[-1] >= 3 * max(steps[0], 1), acquired


def test_larger_models_learn_no_later(learned):
    _, curves = learned
    compared = [p.name for p in grammar.PARADIGMS
                if min(first_reaching(curves[m], p.name) for m in ("mini-s", "mini-l")) < math.inf]
    no_later = [p for p in compared if first_reaching(curves["mini-l"], p) <= first_reaching(curves["mini-s"], p)]
    assert len(no_later) > len(compared) / 2, (compared, no_later)


def test_agreement_attraction_stage_is_visible(learned):
    """Agreement across a PP first follows the nearest noun, scoring well below chance, before it recovers."""
    _, curves = learned
    dips = [min(acc["subject_verb_agreement_across_pp"] for step, acc in curve.items() if step > 0)
            for curve in curves.values()]
    assert min(dips) < 0.4, dips


def test_lm_eval_scores_a_checkpoint_as_we_do(learned):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    suite, _ = learned
    model_dir = suite / "mini-l" / f"step{LEARN.steps}"
    task_dir = BUILTIN_TASKS_DIR / "minigrammar"
    tm = TaskManager(include_defaults=False, include_path=str(task_dir))
    cfg = dict(tm.task_index["minigrammar_subject_verb_agreement_across_pp"].cfg)
    cfg["dataset_kwargs"] = {"data_files": {"train": str(task_dir / "subject_verb_agreement_across_pp.jsonl")}}
    lm = HFLM(pretrained=str(model_dir), device="cpu", batch_size=32)
    out = simple_evaluate(model=lm, tasks=[cfg], task_manager=tm, limit=40, log_samples=True)
    samples = out["samples"]["minigrammar_subject_verb_agreement_across_pp"]
    rows = grammar.generate_paradigms(n_pairs=40)["subject_verb_agreement_across_pp"]
    model, tokenizer = load_checkpoint(model_dir)
    ours = sentence_logprobs(model, tokenizer, [s for r in rows for s in (r["sentence_good"], r["sentence_bad"])])
    theirs = [resp[0][0] for sample in sorted(samples, key=lambda s: s["doc_id"]) for resp in sample["resps"]]
    assert torch.allclose(ours, torch.tensor(theirs, dtype=ours.dtype), atol=1e-3)


def test_extra_seeds_are_added_to_a_finished_suite_with_their_own_init_and_order(tmp_path):
    suite = train.build_suite(tmp_path / "seeded", replace(TINY, seed_sizes=("t",)))
    main_bytes = (suite / "mini-t" / "step8" / "model.safetensors").stat().st_mtime_ns
    train.build_suite(suite, replace(TINY, seed_sizes=("t",)), seeds=2)  # later, more seeds: nothing retrained
    assert (suite / "mini-t" / "step8" / "model.safetensors").stat().st_mtime_ns == main_bytes
    meta = json.loads((suite / "suite.json").read_text())["models"]
    assert list(meta) == ["mini-t", "mini-t-seed1", "mini-t-seed2", "mini-t-deduped"]
    assert meta["mini-t-seed2"]["seed"] == 2 and "seed" not in meta["mini-t"] and meta["mini-t-seed1"]["size"] == "t"
    inits = {(suite / m / "step0" / "model.safetensors").read_bytes() for m in meta}
    assert len(inits) == 3  # the deduped twin shares the main run's initialisation; each seed has its own
    corpus = (suite / "corpus.txt").read_text().splitlines()
    assert len(corpus) > 100 and not set(corpus) & set(grammar.heldout_sentences())
