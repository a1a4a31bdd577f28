"""The demo end to end on a suite smaller than --quick: train, sweep through the engine, curves, figures, report."""

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
    for where in ("suite:", "curves:", "figures:", "report:", "final accuracy per paradigm"):
        assert where in printed

    assert run_demo(tmp_path, config=TINY, limit=10, n_boot=60) == 0  # re-running reuses the suite and every unit
    assert "0 evaluated, 24 already done" in capsys.readouterr().out
    assert len(Store(tmp_path / "sweep").records()) == 24
