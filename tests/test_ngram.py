"""The Kneser-Ney n-gram baseline: normalised distributions, hand-computed values, and minimal pairs."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from trajectories import ngram

CORPUS = [
    "the dog runs", "the dogs run", "the cat sleeps", "the cats sleep", "a dog sleeps", "the dog sees the cat",
    "the dogs see the cats", "the cat sees a dog", "the cats see the dog", "a cat runs", "the dogs run",
    "the dog runs", "the cat sleeps",
]


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_probabilities_sum_to_one_over_the_vocabulary_in_every_context(order):
    lm = ngram.train(CORPUS, order)
    words = sorted(lm.vocab - {ngram.BOS})
    seen = [tuple(line.split()[:i]) for line in CORPUS for i in range(4)]
    unseen = [("cats", "runs"), ("zebra",), ("the", "zebra", "sleeps"), ("sees", "sees", "a", "the")]
    for context in set(seen + unseen):
        history = (ngram.BOS, *context)
        total = sum(lm.prob(w, history) for w in words)
        assert total == pytest.approx(1, abs=1e-12), (context, total)
    assert all(0 < d <= r for ds in lm.discounts for r, d in zip((1, 2, 3), ds, strict=True))


def test_bigram_values_by_hand():
    # Corpus "a b", "a a"; fixed discount 0.5; predicted vocabulary {a, b, </s>, <unk>}.
    # Unigram continuation counts: a 2 (after <s>, a), b 1 (after a), </s> 2 (after b, a); total 5; 3 types, so
    # backoff 0.5 * 3 / 5 = 0.3 and P(a) = 1.5/5 + 0.3/4 = 0.375, P(b) = 0.175, P(</s>) = 0.375, P(<unk>) = 0.075.
    # Context a: b, a, </s> once each: P(b | a) = 0.5/3 + 0.5 * 0.175; context <s>: a twice: P(a | <s>) = 1.5/2 +
    # 0.25 * 0.375; context b: </s> once: P(</s> | b) = 0.5 + 0.5 * 0.375.
    lm = ngram.train(["a b", "a a"], order=2, discount=0.5)
    assert lm.prob("a") == pytest.approx(0.375) and lm.prob("zebra") == pytest.approx(0.075)
    assert lm.prob("b", ["a"]) == pytest.approx(0.5 / 3 + 0.5 * 0.175)
    assert lm.prob("a", [ngram.BOS]) == pytest.approx(0.84375)
    expected = math.log(0.84375) + math.log(0.5 / 3 + 0.0875) + math.log(0.6875)
    assert lm.logprob("a b") == pytest.approx(expected)
    assert lm.logprob("a b", eos=False) == pytest.approx(expected - math.log(0.6875))


def test_modified_discounts_from_counts_of_counts():
    # A unigram model keeps raw counts: a, b, c, d and </s> once, e and f twice, g 3 times, h 4 times, so the
    # counts of counts n1..n4 are 5, 2, 1, 1 and Y = n1 / (n1 + 2 n2) = 5/9.
    lm = ngram.train(["a b c d e e f f g g g h h h h"], order=1)
    y = 5 / 9
    assert lm.discounts[0] == pytest.approx((1 - 2 * y * 2 / 5, 2 - 3 * y * 1 / 2, 3 - 4 * y * 1 / 1))


def test_a_bigram_solves_local_agreement_and_a_unigram_cannot():
    pairs = [("the dogs run", "the dogs runs"), ("the dog runs", "the dog run"), ("the cats sleep", "the cats sleeps"),
             ("the cat sleeps", "the cat sleep")]
    bigram, unigram = ngram.train(CORPUS, 2), ngram.train(CORPUS, 1)
    assert all(bigram.logprob(good) > bigram.logprob(bad) for good, bad in pairs)
    # Both verb forms occur as often, so word frequencies cannot tell the pairs apart in both directions.
    assert sum(unigram.logprob(good) > unigram.logprob(bad) for good, bad in pairs) < len(pairs)


def test_scoring_a_minimal_pair_task_file(tmp_path):
    lines = [{"sentence_good": g, "sentence_bad": b, "UID": uid, "linguistics_term": "agreement"}
             for uid, (g, b) in itertools.product(["sv"], [("the dogs run", "the dogs runs"),
                                                           ("the cat sleeps", "the cat sleep")])]
    lines.append({"sentence_good": "the dog sees the cat", "sentence_bad": "the dog the cat sees", "UID": "order",
                  "linguistics_term": "word_order"})
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n\n")
    lm = ngram.NgramLM.from_file(corpus, order=3)
    scored = ngram.score_pairs(lm, ngram.read_pairs(tmp_path))
    assert tuple(scored.columns) == ngram.PAIR_COLUMNS and scored.correct.all()
    table = ngram.paradigm_accuracy(scored).set_index("task")
    assert table.loc["sv", "n"] == 2 and table.loc["sv", "acc"] == 1
    assert table.loc["order", "phenomenon"] == "word_order"
    (tmp_path / "broken.jsonl").write_text('{"sentence_good": "x"}\n')
    with pytest.raises(ngram.NgramError, match="broken.jsonl:1"):
        ngram.read_pairs(tmp_path / "broken.jsonl")
    with pytest.raises(ngram.NgramError, match="order"):
        ngram.train(CORPUS, 6)


def test_tokenizers():
    assert ngram.words_and_punctuation("Who should Derek hug Richard?") == ["Who", "should", "Derek", "hug",
                                                                             "Richard", "?"]
    lm = ngram.train(["Who saw Richard?"], 2, tokenize=ngram.words_and_punctuation)
    assert "?" in lm.vocab and lm.logprob("Who saw Richard?") > lm.logprob("Who Richard saw?")
