"""The demo end to end on a suite smaller than --quick: train, sweep through the engine, curves, figures, report."""

import pandas as pd

from trajectories.demo import run_demo
from trajectories.store import Store
from trajectories.train import ModelSize, TrainConfig

TINY = TrainConfig(sizes=(ModelSize("s", 1, 16, 2), ModelSize("m", 1, 32, 2)), steps=16, checkpoint_every=8,
                   corpus_tokens=20_000)


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
    assert len(Store(tmp_path / "sweep").done_units()) == 24
