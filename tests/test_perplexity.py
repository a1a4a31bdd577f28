"""Perplexity tasks on held-out text: `tasks add-text`, the built-in minigrammar_heldout, and lm-eval's numbers kept
exactly (word and byte perplexity, bits per byte), checked against an independent transformers computation."""

import json
import math
import re

import pandas as pd
import pytest

from tests.helpers import BLIMP_DIR, blimp_sentences, build_tiny_suite, load_checkpoint, reference_logprobs
from trajectories.authoring import add_text_task, text_documents
from trajectories.cli import main
from trajectories.demo import grammar
from trajectories.tasks import BUILTIN_TASKS_DIR, TaskError


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppl")
    suite = build_tiny_suite(root / "suite", steps=(0, 3))
    documents = blimp_sentences()[:60:4]
    (root / "held.txt").write_text("\n".join(documents) + "\n\n")
    add_text_task(root / "held.txt", "held", tasks_dir=root / "tasks")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TRAJECTORIES_TASKS_DIR", str(root / "tasks"))
        assert main(["sweep", "--suite", f"local:{suite}", "--tasks", "adjunct_island,held", "--blimp-dir",
                     str(BLIMP_DIR), "--limit", "6", "--out", str(root / "out"), "--device", "cpu",
                     "--batch-size", "4"]) == 0
    return suite, documents[:6], pd.read_parquet(root / "out" / "curves.parquet"), root / "out"


def test_perplexity_rows_equal_an_independent_computation(swept):
    suite, documents, curves, _ = swept
    for model in ("tiny", "small"):
        for step in (0, 3):
            lm, tokenizer = load_checkpoint(suite / model / f"step{step}")
            logprob = sum(reference_logprobs(lm, tokenizer, [("", doc) for doc in documents]))
            words = sum(len(re.split(r"\s+", doc)) for doc in documents)
            size = sum(len(doc.encode("utf-8")) for doc in documents)
            expected = {"word_perplexity": math.exp(-logprob / words), "byte_perplexity": math.exp(-logprob / size),
                        "bits_per_byte": -logprob / size / math.log(2)}
            rows = curves[(curves.model == model) & (curves.step == step) & (curves.level == "metric")]
            got = dict(zip(rows.task.str.removeprefix("held/"), rows.acc, strict=True))
            assert got.keys() == expected.keys()
            for metric, value in expected.items():
                assert got[metric] == pytest.approx(value, rel=1e-5), (model, step, metric)
            assert (rows.n == len(documents)).all() and (rows.phenomenon == "").all()


def test_perplexity_rows_are_lm_evals_own_numbers(swept):
    _, _, curves, out = swept
    unit = json.loads((out / "units" / "small" / "step3.json").read_text())
    reported = unit["tasks"]["held"]["lm_eval"]
    rows = curves[(curves.model == "small") & (curves.step == 3) & curves.task.str.startswith("held/")]
    for task, value in zip(rows.task, rows.acc, strict=True):
        assert value == reported[task.removeprefix("held/") + ",none"]
    assert math.isnan(unit["tasks"]["held"]["acc"])
    items = pd.read_parquet(out / "units" / "small" / "step3.items.parquet")
    assert set(items.task) == {"blimp_adjunct_island"}  # a perplexity task has no minimal pairs to store


def test_plot_and_analyze_against_the_held_out_loss(swept, capsys):
    _, _, _, out = swept
    assert main(["plot", str(out), "--x", "loss"]) == 0
    assert (out / "plots" / "phenomena_by_loss.png").exists() and "phenomena_by_loss.png" in capsys.readouterr().out
    assert main(["analyze", str(out), "--align", "loss", "--n-boot", "30"]) == 0
    acq = pd.read_csv(out / "report" / "acquisition_loss.csv")
    assert {"acq_loss", "acq_loss_low", "acq_loss_high"} <= set(acq.columns)
    assert "## Matched held-out loss" in (out / "report" / "report.md").read_text()
    assert main(["plot", str(out), "--x", "loss", "--loss-task", "wiki"]) == 2
    assert "no perplexity task 'wiki' in the curve table; perplexity tasks: held" in capsys.readouterr().err


def test_text_documents_per_line_paragraph_and_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("one line\n  \nsecond para\nstill second\n\n\nthird\n")
    assert text_documents(path) == ["one line", "second para", "still second", "third"]
    assert text_documents(path, "paragraph") == ["one line", "second para\nstill second", "third"]
    assert text_documents(path, "file") == ["one line\n  \nsecond para\nstill second\n\n\nthird"]


def test_bad_text_files_are_refused_naming_the_file_and_line(tmp_path, capsys):
    (tmp_path / "blank.txt").write_text("\n \n")
    (tmp_path / "latin1.txt").write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(TaskError, match="blank.txt: no text"):
        text_documents(tmp_path / "blank.txt")
    with pytest.raises(TaskError, match=r"latin1.txt:2: not UTF-8"):
        text_documents(tmp_path / "latin1.txt")
    args = ["tasks", "add-text", str(tmp_path / "latin1.txt"), "--name", "t", "--tasks-dir", str(tmp_path / "tasks")]
    assert main(args) == 2
    assert "latin1.txt:2" in capsys.readouterr().err and not (tmp_path / "tasks" / "t").exists()
    (tmp_path / "ok.txt").write_text("a b\n")
    assert main(args[:2] + [str(tmp_path / "ok.txt")] + args[3:]) == 0
    assert main(args[:2] + [str(tmp_path / "ok.txt")] + args[3:]) == 2  # exists: only with --force
    assert main(args[:2] + [str(tmp_path / "ok.txt"), "--name", "blimp", "--tasks-dir", str(tmp_path / "tasks")]) == 2


def test_builtin_heldout_text_is_never_in_a_suites_corpus():
    heldout = grammar.heldout_sentences()
    rows = [json.loads(line) for line in
            (BUILTIN_TASKS_DIR / "minigrammar_heldout" / "minigrammar_heldout.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == heldout  # the built-in file is the grammar's
    assert len(set(heldout)) == grammar.N_HELDOUT and not set(heldout) & grammar.paradigm_sentences()
    drawn = grammar.generate_corpus(30_000, seed=0)
    assert set(drawn) & set(heldout)  # the corpus's own distribution: held-out sentences would occur in training
    assert not set(grammar.generate_corpus(30_000, seed=0, exclude=grammar.kept_out())) & set(heldout)
