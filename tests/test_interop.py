"""Interoperating with stock lm-eval and W&B: exported task folders run in the real `lm_eval` command from any working
directory with our sweep's accuracies; exported results are lm-eval results files that read back into the same
curves; a sweep's curves land in a W&B run (offline here), one history row per model and checkpoint."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import trajectories as tj
from tests.helpers import BLIMP_DIR, SYNTHETIC_STEPS, synthetic_sweep, wandb_history, wandb_offline_records
from trajectories.cli import main
from trajectories.schema import SweepSpec, display_name
from trajectories.store import Store
from trajectories.tasks import TaskCatalog

LIMIT = 6
PAIRS_FROM = ("adjunct_island", "anaphor_number_agreement")  # BLiMP files: two phenomena, so two paradigms
TASKS = "minigrammar,agree"


@pytest.fixture(scope="module")
def swept(tiny_suite, tmp_path_factory) -> dict:
    """Our sweep of the built-in minigrammar and a family made by `tasks add`, LIMIT pairs each, both tiny models,
    every step."""
    root = tmp_path_factory.mktemp("interop")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(line + "\n" for p in PAIRS_FROM
                             for line in (BLIMP_DIR / f"{p}.jsonl").read_text().splitlines()[:LIMIT]))
    tasks_dir = root / "tasks"
    tj.add_task(pairs, name="agree", tasks_dir=tasks_dir)
    out = root / "sweep"
    summary = tj.sweep(f"local:{tiny_suite}", TASKS, out=out, tasks_dir=tasks_dir, limit=LIMIT, device="cpu",
                       batch_size=8, progress=False)
    assert summary.ok and len(summary.done) == 6
    return {"out": out, "tasks_dir": tasks_dir, "suite": tiny_suite, "root": root}


def _sweep_cli(swept, out: Path, *extra: str) -> list[str]:
    return ["sweep", "--suite", f"local:{swept['suite']}", "--tasks", TASKS, "--tasks-dir", str(swept["tasks_dir"]),
            "--limit", str(LIMIT), "--out", str(out), "--device", "cpu", "--batch-size", "8", *extra]


# ---------------------------------------------------------------------------------------------------- task folders
def test_stock_lm_eval_runs_exported_task_folders_from_anywhere(swept, tmp_path):
    lm_tasks = tmp_path / "lm_tasks"
    assert main(["tasks", "export", "minigrammar", str(lm_tasks)]) == 0
    assert main(["tasks", "export", "agree", str(lm_tasks), "--tasks-dir", str(swept["tasks_dir"])]) == 0
    elsewhere = tmp_path / "elsewhere"  # neither the task folders nor anything above them
    elsewhere.mkdir()
    checkpoint = swept["suite"] / "tiny" / "step2"
    lm_eval = Path(sys.executable).with_name("lm_eval")  # the real command, installed with lm-eval
    command = [str(lm_eval), "--model", "hf", "--model_args", f"pretrained={checkpoint},dtype=float32",
               "--tasks", TASKS, "--include_path", str(lm_tasks), "--limit", str(LIMIT), "--device", "cpu",
               "--batch_size", "8", "--output_path", str(tmp_path / "lm_eval_out"), "--log_samples"]
    env = os.environ | {"HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    run = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (results_path,) = (tmp_path / "lm_eval_out").rglob("results_*.json")
    theirs = json.loads(results_path.read_text())["results"]

    ours = Store(swept["out"]).record(("tiny", 2))
    assert len(ours.tasks) == 16 and {t for t in ours.tasks if t.startswith("agree_")} == {
        "agree_pairs_island_effects", "agree_pairs_anaphor_agreement"}
    for task, result in ours.tasks.items():
        assert theirs[task]["acc,none"] == result.acc, task
        assert theirs[task]["acc_stderr,none"] == pytest.approx(result.acc_stderr), task

    # lm_eval's own output imports as the same paradigm rows, with its samples as our items.
    assert main(["collect", str(tmp_path / "imported"), "--import", str(results_path)]) == 0
    imported = tj.load_curves(tmp_path / "imported").set_index(["step", "task"])
    curves = tj.load_curves(swept["out"])
    # Field rows come from the fields our units record; lm-eval's results files do not carry a minigrammar task's.
    mine = curves[(curves.model == "tiny") & (curves.step == 2) & (curves.level != "field")].set_index(["step", "task"])
    paradigms = mine[mine.level == "paradigm"]
    # Not the group lm_eval reports too: phenomena are computed here, as for our sweep.
    assert set(imported.index) == set(mine.index) and set(imported.level) == {"paradigm", "phenomenon"}
    row = imported.loc[paradigms.index]
    assert (row.model == "tiny").all() and (row.level == "paradigm").all()
    pd.testing.assert_series_equal(row.acc, paradigms.acc)
    pd.testing.assert_series_equal(row.phenomenon, paradigms.phenomenon)
    assert (row.n == LIMIT).all() and (row.ci_method == "bootstrap-items").all()
    phenomena = mine[mine.level == "phenomenon"]  # (their CIs differ: replicates are drawn over a curve's steps)
    pd.testing.assert_frame_equal(imported.loc[phenomena.index, ["acc", "n"]], phenomena[["acc", "n"]])
    their_items = tj.load_items(tmp_path / "imported").set_index(["task", "item"]).sort_index()
    my_items = tj.load_items(swept["out"], model="tiny").query("step == 2").set_index(["task", "item"]).sort_index()
    assert their_items.index.equals(my_items.index)
    assert (their_items.correct == my_items.correct).all()
    assert (their_items.logp_good - my_items.logp_good).abs().max() < 1e-4
    assert (their_items.logp_bad - my_items.logp_bad).abs().max() < 1e-4


def test_our_tool_reads_an_exported_folder_as_the_original(swept, tmp_path):
    from trajectories.authoring import export_tasks

    folder = export_tasks("agree", tmp_path / "lm_tasks", swept["tasks_dir"])
    original, exported = TaskCatalog(swept["tasks_dir"]), TaskCatalog(folder.parent)
    tasks = original.expand("agree")
    assert exported.expand("agree") == tasks and len(tasks) == 2
    for task in tasks:
        (source,), (copy,) = original.data_files(task), exported.data_files(task)
        assert copy.is_absolute() and copy.parent == folder and copy.read_bytes() == source.read_bytes()
        assert exported.phenomenon(task) == original.phenomenon(task)
    config = (folder / f"{tasks[0].removeprefix('agree_')}.yaml").read_text()
    assert f"train: {folder}/" in config and "!function" not in config


def test_export_of_task_folders_refuses_what_would_break(swept, tmp_path, capsys):
    assert main(["tasks", "export", "nosuch", str(tmp_path)]) == 2
    assert "no task family 'nosuch'" in capsys.readouterr().err and not list(tmp_path.iterdir())
    # Inside a task folder the exported tasks would be defined twice.
    inside = swept["tasks_dir"] / "exported"
    assert main(["tasks", "export", "agree", str(inside), "--tasks-dir", str(swept["tasks_dir"])]) == 2
    assert "defined twice" in capsys.readouterr().err and not inside.exists()
    assert main(["tasks", "export", "minigrammar", str(tmp_path)]) == 0
    assert main(["tasks", "export", "minigrammar", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["tasks", "export", "minigrammar", str(tmp_path), "--force"]) == 0


# ---------------------------------------------------------------------------------------------------- results files
def test_exported_results_are_lm_eval_files_that_read_back_into_the_same_curves(swept, tmp_path):
    from lm_eval.utils import (
        get_file_task_name,
        get_results_filenames,
        get_sample_results_filenames,
        make_table,
    )

    dest = tmp_path / "lm_eval_results"
    assert main(["export", str(swept["out"]), "--format", "lm-eval", str(dest), "--tasks-dir",
                 str(swept["tasks_dir"])]) == 0
    files = sorted(str(p) for p in dest.rglob("*") if p.is_file())
    results_files = get_results_filenames(files)  # lm-eval's own readers of its output folders
    assert len(results_files) == 6 and len(get_sample_results_filenames(files)) == 6 * 16
    store = Store(swept["out"])
    for record in store.records():
        (path,) = (dest / record.model.name / f"step{record.step}").glob("results_*.json")
        assert str(path) in results_files
        data = json.loads(path.read_text())
        assert {"results", "configs", "versions", "n-samples", "config"} <= set(data)
        assert data["config"]["model_args"].startswith(f"pretrained={record.path},revision=step{record.step},")
        assert data["n-samples"]["agree_pairs_island_effects"] == {"original": LIMIT, "effective": LIMIT}
        assert data["n-samples"]["minigrammar_transitivity"] == {"original": 1000, "effective": LIMIT}
        assert data["configs"]["minigrammar_transitivity"]["metadata"]["phenomenon"] == "argument_structure"
        table = make_table(data)  # the table lm_eval prints
        assert all(f"|{task}" in table.replace(" ", "") for task in record.tasks)
        date = path.stem.removeprefix("results_")
        items = store.unit_items(record.key)
        for task, rows in items.groupby("task"):
            samples = path.with_name(f"samples_{task}_{date}.jsonl")
            assert get_file_task_name(samples.name) == task
            lines = [json.loads(line) for line in samples.read_text().splitlines()]
            assert [s["doc_id"] for s in lines] == sorted(rows.item)
            by_item = rows.set_index("item")
            for sample in lines:
                good, bad = (float(r[0]) for r in sample["filtered_resps"])
                item = by_item.loc[sample["doc_id"]]
                assert (good, bad, bool(sample["acc"])) == (item.logp_good, item.logp_bad, item.correct)

    again = tmp_path / "again"
    assert main(["collect", str(again), "--import", f"{dest}/**/results_*.json"]) == 0
    swept_curves = tj.load_curves(swept["out"])  # less the field rows, which only our units' fields give
    pd.testing.assert_frame_equal(tj.load_curves(again), swept_curves[swept_curves.level != "field"]
                                  .reset_index(drop=True))
    key = ["model", "step", "task", "item"]
    pd.testing.assert_frame_equal(tj.load_items(again).sort_values(key, ignore_index=True),
                                  tj.load_items(swept["out"]).sort_values(key, ignore_index=True))


def test_a_synthetic_sweep_round_trips_with_everything_a_curve_row_holds(tmp_path):
    """Deduped twins, tokens, many steps, results without lm-eval's metric dict, and a unit that carries another
    step's results (same_weights_as): all come back."""
    units = synthetic_sweep(models=("70m", "70m-deduped"), n_items=40, steps=SYNTHETIC_STEPS[:6])
    store = Store(tmp_path / "synthetic")
    spec = SweepSpec("synthetic", tuple(sorted(units[0][1].tasks)))
    store.open(spec, [ckpt for ckpt, _ in units])
    for i, (ckpt, result) in enumerate(units):
        store.save_unit(ckpt, result, spec, same_weights_as=units[i - 1][0].step if i == 3 else None)
    curves = tj.collect(store.out)
    assert curves.same_weights_as.notna().any() and curves.deduped.any() and curves.tokens.notna().all()
    tj.export(store.out, tmp_path / "exported")
    again = tj.collect(tmp_path / "again", imports=str(tmp_path / "exported" / "**" / "results_*.json"))
    pd.testing.assert_frame_equal(again, curves)
    pd.testing.assert_frame_equal(tj.load_curves(tmp_path / "again"), tj.load_curves(store.out))


def test_results_export_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere"), str(tmp_path / "dest")]) == 2
    assert "no completed units" in capsys.readouterr().err and not (tmp_path / "dest").exists()
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path), "--format", "csv", str(tmp_path / "dest")])
    assert "invalid choice: 'csv'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- W&B
@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """A W&B that reads its settings from this test's environment: wandb keeps the first settings it saw in a
    process until torn down."""
    wandb = pytest.importorskip("wandb", reason="W&B logging is the optional extra trajectories[wandb]")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb.teardown()
    yield monkeypatch
    wandb.teardown()


def test_a_sweep_logs_its_curves_to_one_wandb_run(swept, tmp_path, wandb_env):
    monkeypatch = wandb_env
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "sweep"  # a copy of the sweep: every unit is done, so the sweep only collects and logs
    shutil.copytree(swept["out"], out)
    assert main(_sweep_cli(swept, out, "--wandb", "trajectories-test")) == 0
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    history = wandb_history(run_file)
    curves = tj.load_curves(out)
    units = sorted({(r.model, r.step) for r in curves.itertuples()})
    assert len(history) == len(units) == 6
    for row, (model, step) in zip(history, units):
        assert row["step"] == step and row["tokens"] == step * 1024
        mine = curves[(curves.model == model) & (curves.step == step)]
        assert {k for k in row if k not in ("step", "tokens")} == {
            f"{model}/{r.level}/{display_name(r.task)}" for r in mine.itertuples()}
        for r in mine.itertuples():
            assert row[f"{model}/{r.level}/{display_name(r.task)}"] == r.acc
    artifacts = [r.artifact for r in wandb_offline_records(run_file) if r.WhichOneof("record_type") == "artifact"]
    assert {a.type for a in artifacts} == {"curves", "figures"}  # no report: `analyze` has not run
    figures = next(a for a in artifacts if a.type == "figures")
    assert any(e.path.endswith(".png") for e in figures.manifest.contents)

    # Uploading again logs nothing twice: the same run, no new rows.
    run_id = run_file.stem.removeprefix("run-")
    assert main(["wandb", str(out), "--project", "trajectories-test"]) == 0
    runs = sorted(tmp_path.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(runs) == 2 and wandb_history(next(r for r in runs if r != run_file)) == []


def test_without_wandb_the_error_names_the_extra_before_any_work(swept, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: importing it raises ImportError
    assert main(["wandb", str(swept["out"])]) == 2
    assert "pip install 'trajectories[wandb]'" in capsys.readouterr().err
    assert main(_sweep_cli(swept, tmp_path / "new", "--wandb", "p")) == 2
    assert "trajectories[wandb]" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_a_run_wandb_refuses_is_a_clear_error(swept, tmp_path, wandb_env, capsys):
    monkeypatch = wandb_env
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no saved login
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO())  # nobody to ask for a key
    assert main(["wandb", str(swept["out"]), "--project", "p"]) == 2
    err = capsys.readouterr().err
    assert "W&B did not start the run" in err and f"trajectories wandb {swept['out']}" in err
    assert not (swept["out"] / "wandb.json").exists()
