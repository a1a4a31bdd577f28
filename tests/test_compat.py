"""Results folders written by earlier versions still resume and collect: nothing re-evaluated, the same curves."""

import shutil
from pathlib import Path

import pandas as pd

from tests.helpers import BLIMP_DIR, build_tiny_suite
from trajectories.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "results_v0"


def test_a_folder_written_before_the_redesign_resumes_and_collects(tmp_path, monkeypatch, capsys):
    """tests/fixtures/README.md says how the folder was made: this sweep, from a folder holding `suite`."""
    build_tiny_suite(tmp_path / "suite")
    out = tmp_path / "results_v0"
    shutil.copytree(FIXTURE, out)
    monkeypatch.chdir(tmp_path)
    units = {p: p.stat().st_mtime_ns for p in (out / "units").rglob("*")}
    args = ["sweep", "--suite", "local:suite", "--tasks", "adjunct_island,anaphor_number_agreement,"
            "determiner_noun_agreement_1", "--blimp-dir", str(BLIMP_DIR),
            "--limit", "4", "--out", "results_v0", "--device", "cpu", "--batch-size", "8"]
    assert main(args) == 0
    assert "0 evaluated, 6 already done, 0 failed" in capsys.readouterr().out
    assert units == {p: p.stat().st_mtime_ns for p in (out / "units").rglob("*")}
    assert main(["collect", "results_v0"]) == 0
    old, new = pd.read_parquet(FIXTURE / "curves.parquet"), pd.read_parquet(out / "curves.parquet")
    # Every old row comes back exactly, in its old order; what the curves have gained since is only new columns
    # at their defaults (seed: the main run; grouping: the data's, on phenomenon rows) and field rows.
    kept = new[new.level.isin(old.level.unique())].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept[old.columns], old)
    assert set(new.columns) - set(old.columns) == {"seed", "grouping"} and kept.seed.isna().all()
    assert (kept.grouping == kept.level.map({"phenomenon": "data"}).fillna("")).all()
    assert set(new.level) - set(old.level) == {"field"}
    fields = new[new.level == "field"]
    assert set(fields.task) == {"field:syntax", "field:morphology"} and (fields.ci_method == "bootstrap-items").all()
