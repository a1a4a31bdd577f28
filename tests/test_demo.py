"""The demo end to end on a suite smaller than --quick: train, sweep through the engine, curves, figures, report."""

import pandas as pd

from trajectories.demo.run import run_demo
from trajectories.demo.train import TINY
from trajectories.store import Store


def test_demo_runs_the_whole_pipeline_and_resumes(tmp_path, capsys):
    assert run_demo(tmp_path, config=TINY, limit=10) == 0
    printed = capsys.readouterr().out
    curves = pd.read_parquet(tmp_path / "sweep" / "curves.parquet")
    models = {"mini-s", "mini-s-deduped", "mini-m", "mini-m-deduped"}
    assert set(curves.model) == models and set(curves.step) == {0, 1, 2, 4, 8, 16}
    paradigms = curves[curves.level == "paradigm"]
    assert paradigms.task.str.startswith("minigrammar_").all() and (paradigms.n == 10).all()
    assert set(curves.level) == {"paradigm", "phenomenon"}
    assert (tmp_path / "sweep" / "report" / "report.html").stat().st_size > 10_000
    assert list((tmp_path / "sweep" / "plots").glob("phenomena.png"))
    for where in ("suite:", "curves:", "figures:", "report:", "final accuracy per paradigm"):
        assert where in printed

    assert run_demo(tmp_path, config=TINY, limit=10) == 0  # re-running reuses the suite and every unit
    assert "0 evaluated, 24 already done" in capsys.readouterr().out
    assert len(Store(tmp_path / "sweep").records()) == 24
