"""The demo end to end on a suite smaller than --quick: train, then both experiments through the engine (the grammar
sweep: curves, figures, report; memorization of sampled rows and canaries: rows, figures, report with the answer)."""

import pandas as pd

from trajectories.demo.run import run_demo
from trajectories.demo.train import TINY
from trajectories.store import Store


def test_demo_runs_the_whole_pipeline_and_resumes(tmp_path, capsys):
    assert run_demo(tmp_path, config=TINY, limit=10, n_boot=60) == 0
    printed = capsys.readouterr().out
    curves = pd.read_parquet(tmp_path / "sweep" / "curves.parquet")
    models = {"mini-s", "mini-s-deduped", "mini-m", "mini-m-deduped"}
    assert set(curves.model) == models and set(curves.step) == {0, 1, 2, 4, 8, 16}
    paradigms = curves[curves.level == "paradigm"]
    assert paradigms.task.str.startswith("minigrammar_").all() and (paradigms.n == 10).all()
    assert set(curves.level) == {"paradigm", "phenomenon", "field", "metric"}
    assert set(curves[curves.level == "field"].phenomenon) == {"morphology", "syntax", "semantics"}
    assert set(curves[curves.level == "metric"].task) == {f"minigrammar_heldout/{m}" for m in
                                                          ("word_perplexity", "byte_perplexity", "bits_per_byte")}
    report = tmp_path / "sweep" / "report"
    assert (report / "report.html").stat().st_size > 10_000
    md = (report / "report.md").read_text()
    for section in ("## Matched held-out loss", "## N-gram baselines", "## Stages", "## Item-level agreement"):
        assert section in md
    ngram = pd.read_csv(report / "ngram.csv")
    assert set(ngram.order) == {1, 2, 3, 4, 5} and ngram.task.nunique() == 14 and (ngram.n == 10).all()
    plots = {p.name for p in (tmp_path / "sweep" / "plots").glob("*.png")}
    assert {"phenomena.png", "phenomena_by_loss.png", "fields.png", "kappa_matched.png"} <= plots
    for where in ("suite:", "curves:", "figures:", "reports:", "final accuracy per paradigm"):
        assert where in printed

    # Memorization at the evenly spaced checkpoints (8 and 16) of every model: each on its own data's rows.
    memorized = Store(tmp_path / "memorization")
    assert {r.key for r in memorized.records()} == {(m, s) for m in models for s in (8, 16)}
    items, rows = memorized.items(), memorized.rows()
    assert set(rows.data) == {"standard", "deduped"} and rows.canary.sum() == 2 * 3 * len(TINY.canary_repetitions)
    assert (items.seen_at_step < items.step).all() and items.canary.any()
    assert set(items[items.model.str.endswith("deduped")].repetitions.dropna()) == {1}
    assert set(items[items.model == "mini-m"].repetitions.dropna()) == set(TINY.canary_repetitions)
    assert "are rows seen later in training more likely to be memorized?" in printed
    assert "mini-m step 16, canaries:" in printed
    report = (tmp_path / "memorization" / "report" / "report.md").read_text()
    assert "## Are rows seen later in training more likely to be memorized?" in report
    assert list((tmp_path / "memorization" / "plots").glob("repetitions.png"))

    assert run_demo(tmp_path, config=TINY, limit=10, n_boot=60) == 0  # re-running reuses the suite and every unit
    printed = capsys.readouterr().out
    assert "0 evaluated, 24 already done" in printed and "memorization: 0 evaluated, 8 already done" in printed
    assert len(Store(tmp_path / "sweep").records()) == 24
