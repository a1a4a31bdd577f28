"""The grammar: deterministic corpora, well-formed BLiMP-style paradigms kept out of training, the built-in tasks."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from trajectories.demo import grammar
from trajectories.tasks import BUILTIN_TASKS_DIR

TASK_DIR = BUILTIN_TASKS_DIR / "minigrammar"
BLIMP_KEYS = ["sentence_good", "sentence_bad", "field", "linguistics_term", "UID", "simple_LM_method",
              "one_prefix_method", "two_prefix_method", "lexically_identical", "pairID"]
SENTENCE = re.compile(r"^[A-Z][a-z]*( [a-zA-Z]+)*[.?]$")


@pytest.fixture(scope="module")
def paradigms() -> dict[str, list[dict]]:
    return grammar.generate_paradigms()


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return grammar.generate_corpus(300_000, seed=0, exclude=grammar.paradigm_sentences())


def test_corpus_is_deterministic_given_a_seed():
    assert grammar.generate_corpus(5000, seed=3) == grammar.generate_corpus(5000, seed=3)
    assert grammar.generate_corpus(5000, seed=3) != grammar.generate_corpus(5000, seed=4)


def test_corpus_size_and_form(corpus):
    tokens = sum(s.count(" ") + 3 for s in corpus)  # words, final punctuation, <|endoftext|>
    assert 300_000 <= tokens < 300_050
    assert all(SENTENCE.match(s) for s in corpus)
    vocab = set(grammar.vocabulary())
    assert {w for s in corpus for w in s[:-1].split()} <= vocab


def test_corpus_repeats_sentences_so_dedup_matters(corpus):
    unique = len(set(corpus))
    assert 0.5 * len(corpus) < unique < 0.9 * len(corpus)


def test_paradigms_shape(paradigms):
    assert len(paradigms) >= 10
    assert len({rows[0]["linguistics_term"] for rows in paradigms.values()}) >= 6
    for name, rows in paradigms.items():
        assert len(rows) == grammar.N_PAIRS
        assert [row["pairID"] for row in rows] == [str(i) for i in range(len(rows))]
        assert len({row["sentence_good"] for row in rows}) == len(rows), name
        for row in rows:
            assert list(row) == BLIMP_KEYS
            assert row["UID"] == name and row["simple_LM_method"] is True
            good, bad = row["sentence_good"], row["sentence_bad"]
            assert SENTENCE.match(good) and SENTENCE.match(bad), row
            # A minimal pair: same length, one or two words changed (two where words swap places).
            changed = sum(g != b for g, b in zip(good.split(), bad.split()))
            assert len(good.split()) == len(bad.split()) and 1 <= changed <= 2, row
            assert row["lexically_identical"] == (sorted(good.lower().split()) == sorted(bad.lower().split()))


def test_paradigms_are_deterministic_and_prefix_stable(paradigms):
    assert grammar.generate_paradigms(n_pairs=50) == {k: v[:50] for k, v in paradigms.items()}
    assert grammar.generate_paradigms(seed=1, n_pairs=50) != grammar.generate_paradigms(n_pairs=50)


def test_grammatical_paradigm_sentences_never_occur_in_training(corpus):
    goods = grammar.paradigm_sentences()
    assert not goods & set(corpus)
    # The exclusion is needed: the grammar does produce these sentences when left alone.
    assert goods & set(grammar.generate_corpus(300_000, seed=0))


def test_ungrammatical_sentences_are_never_generated(paradigms, corpus):
    bads = {row["sentence_bad"] for rows in paradigms.values() for row in rows}
    assert not bads & set(grammar.generate_corpus(300_000, seed=0))


def test_phenomena_are_all_present_in_training(corpus):
    words = Counter(w for s in corpus for w in s[:-1].split())
    for w in ("these", "those", "himself", "herself", "themselves", "ever", "not", "who", "did", "seen", "saw"):
        assert words[w] > 100, w
    assert any(" not ever " in s for s in corpus) and any(" near " in s for s in corpus)


def test_built_in_tasks_equal_a_regeneration(tmp_path):
    written = grammar.write_tasks(tmp_path / "minigrammar")
    assert sorted(p.name for p in written.iterdir()) == sorted(p.name for p in TASK_DIR.iterdir())
    for path in written.iterdir():
        assert path.read_bytes() == (TASK_DIR / path.name).read_bytes(), path.name
        assert path.stat().st_size < 2_000_000


def test_lm_eval_loads_a_task():
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_defaults=False, include_path=str(TASK_DIR))  # stock lm-eval, not our catalog
    names = {f"minigrammar_{p.name}" for p in grammar.PARADIGMS}
    assert names | {"minigrammar"} <= set(tm.task_index)
    cfg = dict(tm.task_index["minigrammar_transitivity"].cfg)
    cfg["dataset_kwargs"] = {"data_files": {"train": str(TASK_DIR / "transitivity.jsonl")}}
    task = tm.load([cfg])["tasks"]["minigrammar_transitivity"]
    docs = list(task.validation_docs())
    first = json.loads((TASK_DIR / "transitivity.jsonl").read_text().splitlines()[0])
    assert len(docs) == grammar.N_PAIRS
    assert task.doc_to_choice(docs[0]) == [first["sentence_good"], first["sentence_bad"]]
    assert task.doc_to_target(docs[0]) == 0
