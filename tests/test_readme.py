"""The README's Python API example runs as written."""

import re
from pathlib import Path

import pandas as pd

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_notebook_example_runs_as_written(tmp_path, monkeypatch, capsys):
    section = README.read_text().split("## Python API (notebooks)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAJECTORIES_TASKS_DIR", raising=False)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "sweep: 24 evaluated, 0 already done, 0 failed" in printed
    assert (tmp_path / "results" / "notebook" / "report" / "report.html").exists()
    assert (tmp_path / "tasks" / "mine" / "my_pairs.yaml").exists()
    mine = pd.read_parquet(tmp_path / "results" / "mine" / "curves.parquet")
    assert set(mine.task) == {"mine_my_pairs", "phenomenon:agreement"} and set(mine.step) == {16}
    assert (tmp_path / "results" / "notebook_memorization" / "report" / "recency.csv").exists()
