"""The report over a stored sweep, and results JSON files written by lm-eval itself imported into curves."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

import trajectories as tj
from tests.helpers import synthetic_sweep
from trajectories.analysis import AnalysisError
from trajectories.curves import collect
from trajectories.errors import UserError
from trajectories.imports import ResultsImportError, import_lm_eval_json
from trajectories.schema import SweepSpec
from trajectories.store import Store


def write_report(out, **options):
    return tj.analyze(out, **options).folder

MIDPOINTS = {"agreement": 64, "islands": 4000}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """A stored sweep: 160m stops at step 8000, 70m's step 1000 failed and its step 64000 duplicates step 128."""
    out = tmp_path_factory.mktemp("sweep")
    units = synthetic_sweep(models=["70m", "160m"], midpoints={"70m": MIDPOINTS, "160m": MIDPOINTS}, n_items=100)
    spec = SweepSpec("synthetic", tuple(sorted(units[0][1].tasks)))
    store = Store(out)
    store.open(spec, [c for c, _ in units])
    results = {(c.model.name, c.step): r for c, r in units}
    for ckpt, result in units:
        if ckpt.model.name == "160m" and ckpt.step > 8000:
            continue
        if ckpt.key == ("70m", 1000):
            store.save_failure(ckpt, "OSError: checkpoint shard missing")
            continue
        if ckpt.key == ("70m", 64000):
            result.items = results[("70m", 128)].items.assign(step=64000)
        store.save_unit(ckpt, result, spec)
    collect(out, n_boot=100)
    return out


def test_report_over_a_partial_sweep(out):
    report = write_report(out, n_boot=100)
    acq = pd.read_csv(report / "acquisition.csv")
    assert set(zip(acq.model, acq.level, strict=True)) == {(m, lvl) for m in ("70m", "160m")
                                                          for lvl in ("phenomenon", "paradigm")}
    assert len(acq) == 2 * (2 + 4) and set(acq.ci_method) == {"bootstrap-items"}
    late = acq[(acq.model == "160m") & (acq.task == "phenomenon:islands")].iloc[0]
    assert late.last_step == 8000
    suspicious = pd.read_csv(report / "suspicious.csv")
    assert [64000, 128] in suspicious[suspicious.kind == "duplicate"][["step", "other_step"]].values.tolist()
    for name in ("order", "agreement", "dedup", "onedim"):
        assert (report / f"{name}.csv").exists()
    md = (report / "report.md").read_text()
    assert "bootstrap-items" in md and "Failed unit: 70m step 1000" in md
    assert "Requested but absent" in md and "160m step 16,000" in md
    assert "| agreement |" in md and "duplicate" in md
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        assert (report / image).exists()
    page = (report / "report.html").read_text()
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) >= 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<table" in page and "Kendall" in page


def test_report_errors_are_clear(tmp_path, out):
    with pytest.raises(UserError, match="has no curves table.*trajectories collect"):
        write_report(tmp_path / "nowhere")
    with pytest.raises(UserError, match="trajectories collect"):
        write_report(tmp_path)
    pd.DataFrame({"model": ["x"], "step": [0]}).to_parquet(tmp_path / "curves.parquet")
    with pytest.raises(AnalysisError, match="lacks columns"):
        write_report(tmp_path)


def _lm_eval_results(model_dir, blimp_dir, output_path):
    """Run lm-eval on one BLiMP paradigm and save its results the way its CLI does."""
    import lm_eval
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=False, include_path=str(lm_eval.__path__[0] + "/tasks/blimp"))
    cfg = dict(manager.task_index["blimp_adjunct_island"].cfg)
    cfg.update(dataset_path="json", dataset_name=None,
               dataset_kwargs={"data_files": {"train": str(blimp_dir / "adjunct_island.jsonl")}})
    tracker = EvaluationTracker(output_path=str(output_path))
    results = simple_evaluate(model="hf", model_args=f"pretrained={model_dir},revision=step1,device=cpu",
                              tasks=[cfg], task_manager=manager, limit=20, evaluation_tracker=tracker)
    results.pop("samples", None)
    tracker.save_results_aggregated(results=results, samples=None)
    (written,) = output_path.rglob("results_*.json")
    return written


def test_import_results_written_by_lm_eval(tiny_suite, blimp_dir, tmp_path):
    written = _lm_eval_results(tiny_suite / "tiny" / "step1", blimp_dir, tmp_path / "lm_eval")
    reported = json.loads(written.read_text())["results"]["blimp_adjunct_island"]
    # The same file with no revision, for a Pythia model, named by step: the step comes from the file name.
    renamed = json.loads(written.read_text())
    renamed["config"]["model_args"] = "pretrained=EleutherAI/pythia-160m-deduped"
    renamed["config"]["model_revision"] = "main"
    (tmp_path / "pythia-160m-deduped_step2000.json").write_text(json.dumps(renamed))
    # lm-eval 0.3's layout: bare metric names, model_args a string; a non-grammar task with another metric.
    (tmp_path / "old.json").write_text(json.dumps({
        "results": {"blimp_adjunct_island": {"acc": 0.61, "acc_stderr": 0.015},
                    "lambada_openai": {"ppl": 31.5, "ppl_stderr": 1.2, "acc": 0.35, "acc_stderr": 0.007}},
        "versions": {"blimp_adjunct_island": 0, "lambada_openai": 0},
        "config": {"model": "hf-causal", "model_args": "pretrained=EleutherAI/pythia-70m,revision=step3000",
                   "num_fewshot": 0, "batch_size": 16, "device": "cuda", "limit": None},
    }))
    table = import_lm_eval_json([written, tmp_path / "pythia-160m-deduped_step2000.json", tmp_path / "old.json"]).curves
    rows = table.set_index(["model", "step", "task"])
    tiny = rows.loc[("tiny", 1, "blimp_adjunct_island")]
    assert tiny.acc == reported["acc,none"] and tiny.acc_stderr == reported["acc_stderr,none"]
    assert tiny.n == 20 and tiny.phenomenon == "island_effects" and tiny.ci_method == "stderr"
    pythia = rows.loc[("160m-deduped", 2000, "blimp_adjunct_island")]
    assert pythia.deduped and pythia["size"] == "160m" and pythia.tokens == 2000 * 2_097_152
    assert rows.loc[("70m", 3000, "lambada_openai/ppl")].level == "metric"
    lambada = rows.loc[("70m", 3000, "lambada_openai")]  # an accuracy, but not of a minimal-pair paradigm
    assert lambada.level == "metric" and lambada.phenomenon == "" and lambada.acc == 0.35


def test_collect_imports_into_out_and_keeps_them(tmp_path):
    (tmp_path / "runs").mkdir()
    for step, acc in ((1000, 0.6), (2000, 0.7)):
        (tmp_path / "runs" / f"r{step}.json").write_text(json.dumps({
            "results": {"blimp_adjunct_island": {"acc,none": acc, "acc_stderr,none": 0.02, "alias": "x"}},
            "config": {"model": "hf", "model_args": {"pretrained": "org/my-model", "revision": f"step{step}"}},
        }))
    out = tmp_path / "out"
    table = collect(out, imports=str(tmp_path / "runs" / "*.json"))
    phen = table[table.level == "phenomenon"]
    assert phen.task.tolist() == ["phenomenon:island_effects"] * 2 and (phen.ci_method == "stderr").all()
    assert collect(out).equals(table)  # a later collect (as after a sweep) keeps the imported rows
    (tmp_path / "runs" / "nostep.json").write_text(json.dumps({
        "results": {"blimp_adjunct_island": {"acc,none": 0.5}}, "config": {"model_args": "pretrained=org/m"}}))
    with pytest.raises(ResultsImportError, match="nostep.json: cannot tell the training step"):
        collect(out, imports=[tmp_path / "runs" / "nostep.json"])
    with pytest.raises(ResultsImportError, match="no such files"):
        collect(out, imports="/nonexistent/*.json")


def test_report_sections_of_the_literatures_analyses(out):
    report = write_report(out, n_boot=60, method="sigmoid", progress=False)
    acq, onsets = pd.read_csv(report / "acquisition.csv"), pd.read_csv(report / "onsets.csv")
    assert set(acq.method) == {"sigmoid"} and set(acq.definition) == {"asymptote@0.5"}
    assert set(onsets.method) == {"sigmoid", "isotonic"}
    early = onsets[(onsets.task == "phenomenon:agreement") & (onsets.model == "70m")].set_index("method")
    for method in ("sigmoid", "isotonic"):  # the planted midpoint, step 64, within both methods' CIs
        assert early.loc[method, "ci_low"] <= 64 <= early.loc[method, "ci_high"]
    for name in ("stages", "kappa_matched", "kappa_by_step", "step_matched", "kappa_summary"):
        assert (report / f"{name}.csv").exists()
    md = (report / "report.md").read_text()
    for section in ("## Stages", "## Item-level agreement", "### Both onset methods side by side",
                    "Sigmoid fit quality", "Phenomena grouped by the data's linguistics_term"):
        assert section in md
    assert "asymptote" in md and "kappa_matched.png" in md
    # Each figure once, in the section it belongs to: the kappa heatmap under item-level agreement.
    shown = re.findall(r"!\[([^\]]+)\]", md)
    assert len(shown) == len(set(shown)) == len(list((out / "plots").glob("*.png")))
    agreement = md.split("## Item-level agreement")[1].split("\n## ")[0]
    assert "kappa_matched.png" in agreement
    assert "## Matched held-out loss" not in md and "## Seeds" not in md  # no perplexity task, no seeds here
    with pytest.raises(AnalysisError, match="no perplexity task in the curve table"):
        write_report(out, n_boot=20, align="loss", progress=False)


def test_collect_grouping_paper_is_kept_by_later_collects(tmp_path, capsys):
    from trajectories.cli import main

    (tmp_path / "runs").mkdir()
    for paradigm in ("animate_subject_passive", "causative", "adjunct_island"):
        (tmp_path / "runs" / f"{paradigm}_step10.json").write_text(json.dumps({
            "results": {f"blimp_{paradigm}": {"acc,none": 0.7, "acc_stderr,none": 0.02}},
            "config": {"model_args": "pretrained=org/m,revision=step10"}}))
    assert main(["collect", str(tmp_path / "out"), "--import", str(tmp_path / "runs" / "*.json"),
                 "--grouping", "paper"]) == 0

    def phenomena(grouping):
        table = pd.read_parquet(tmp_path / "out" / "curves.parquet")
        phen = table[table.level == "phenomenon"]
        assert set(phen.grouping) == {grouping} and set(table[table.level == "field"].task) == {"field:syntax"}
        return set(phen.task)

    paper = {"phenomenon:argument_structure", "phenomenon:island_effects"}
    assert phenomena("paper") == paper
    assert main(["collect", str(tmp_path / "out")]) == 0  # as a sweep's collect: the grouping stays
    assert phenomena("paper") == paper
    assert main(["collect", str(tmp_path / "out"), "--grouping", "data"]) == 0
    assert phenomena("data") == paper | {"phenomenon:s-selection"}
    with pytest.raises(SystemExit):
        main(["collect", str(tmp_path / "out"), "--grouping", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
