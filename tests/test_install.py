"""A normal (non-editable) install works outside the source tree: a wheel built with `python -m build`, installed
into a fresh virtual environment, sweeps the built-in tasks, adds a user task in the working directory and sweeps
it. The venv borrows this environment's dependencies (CI's own fresh venv proves they install), so only the wheel
provides `trajectories`."""

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import BLIMP_DIR

REPO = Path(__file__).resolve().parents[1]


# Nothing in the environment may point at the source tree (a PYTHONPATH would make pip see it installed).
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TRAJECTORIES_"))}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel; returns its bin folder."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(REPO)], check=True,
                   capture_output=True)
    (wheel,) = (work / "dist").glob("trajectories-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, env=CLEAN_ENV)
    venv_site = next((work / "venv" / "lib").glob("python*/site-packages"))
    (venv_site / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(work / "venv" / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, env=CLEAN_ENV, cwd=work)
    return work / "venv" / "bin"


def run(bin_dir: Path, cwd: Path, *args: str, program: str = "trajectories") -> subprocess.CompletedProcess:
    """A program of the wheel's venv."""
    return subprocess.run([str(bin_dir / program), *args], cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True)


def test_the_wheel_sweeps_built_in_and_added_tasks_from_anywhere(installed, tiny_suite, tmp_path):
    where = run(installed, tmp_path, "-c", "import trajectories; print(trajectories.__file__)", program="python").stdout
    assert str(installed.parent) in where, where  # the wheel's copy, not the source tree's
    version = run(installed, tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.strip() == "trajectories 0.1.0"

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(json.loads(line)) + "\n" for line in
                             (BLIMP_DIR / "adjunct_island.jsonl").read_text().splitlines()[:5]))
    added = run(installed, tmp_path, "tasks", "add", str(pairs), "--name", "mine")
    assert added.returncode == 0, added.stderr
    assert (tmp_path / "tasks" / "mine" / "pairs.yaml").exists()  # ./tasks of the working directory
    listed = run(installed, tmp_path, "tasks", "list")
    assert "mine_pairs" in listed.stdout and "minigrammar_transitivity" in listed.stdout

    # One sweep of a built-in task (shipped in the wheel) and the added one.
    swept = run(installed, tmp_path, "sweep", "--suite", f"local:{tiny_suite}", "--models", "tiny", "--steps", "0",
                "--tasks", "minigrammar:argument_structure,mine", "--limit", "5", "--out", "out", "--device", "cpu")
    assert swept.returncode == 0, swept.stderr
    assert "1 evaluated" in swept.stdout
    curves = (tmp_path / "out" / "curves.csv").read_text()
    assert "minigrammar_transitivity" in curves and "mine_pairs" in curves
    module = run(installed, tmp_path, "-m", "trajectories", "status", "out", program="python")
    assert module.returncode == 0 and "tiny" in module.stdout
