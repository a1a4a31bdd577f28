"""Fault injection, as a hostile user would try it: damaged results folders, bad options, suites typed differently,
task names that would hide lm-eval's, a full or read-only disk, offline hubs, ambiguous imports. Each test fails on
the behaviour before the hardening (tracebacks, silent wrong results, a sweep waiting ten minutes) and passes now."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import trajectories as tj
from tests.helpers import BLIMP_DIR, TEST_PARADIGMS, Shape, build_tiny_suite, local_sweep, sweep_args
from trajectories import authoring, locks
from trajectories.cli import build_parser, environment_error, main
from trajectories.executors import UnitWorker
from trajectories.locks import UNWRITTEN_S
from trajectories.schema import Checkpoint, EvalSettings, ModelInfo, UnitState
from trajectories.store import Store
from trajectories.suites import select_steps
from trajectories.tasks import BUILTIN_TASKS_DIR, TaskCatalog, TaskError, lm_eval_names

LIMIT = 4  # pairs per task: the faults are in the files around the results, not in the scores
FIXTURE = Path(__file__).parent / "fixtures" / "results_v0"


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    """Two tiny models of four steps each: eight units."""
    return build_tiny_suite(tmp_path_factory.mktemp("eight"), steps=(0, 1, 2, 3))


@pytest.fixture(scope="module")
def swept(suite, tmp_path_factory) -> Path:
    """A complete sweep of the eight units (never changed: tests damage copies)."""
    out = tmp_path_factory.mktemp("swept") / "out"
    assert local_sweep(suite, out, limit=LIMIT).ok
    return out


@pytest.fixture
def out(swept, tmp_path) -> Path:
    shutil.copytree(swept, tmp_path / "out")
    return tmp_path / "out"


def args_of(suite: Path, out: Path, *extra: str) -> list[str]:
    """The command line of the module's sweep (local_sweep's, with LIMIT)."""
    args = sweep_args(suite, out, *extra)
    args[args.index("--limit") + 1] = str(LIMIT)
    return args


def unit_file(out: Path, suffix: str = ".json", model: str = "tiny", step: int = 1) -> Path:
    return out / "units" / model / f"step{step}{suffix}"


def cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


RECORD_DAMAGE = {  # what a unit record can hold after a crash on another tool, a bad copy or a full disk
    "cut in half": cut_in_half,
    "garbage": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff not json at all"),
    "empty object": lambda p: p.write_text("{}"),
    "null": lambda p: p.write_text("null"),
    "0 bytes": lambda p: p.write_bytes(b""),
}


def run_commands(out: Path, capsys, analyze: bool = True) -> tuple[str, str]:
    """status, collect and analyze on OUT: none may raise (a traceback); their output and warnings. `analyze` takes
    20 s here (its figures): it runs once per kind of damaged file, not for every kind of damage."""
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert main(["collect", str(out)]) == 0
    assert not analyze or main(["analyze", str(out)]) == 0
    return status, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- damaged units
@pytest.mark.parametrize("damage", list(RECORD_DAMAGE))
def test_a_damaged_unit_record_is_reported_skipped_and_healed(damage, out, suite, capsys):
    record = unit_file(out)
    RECORD_DAMAGE[damage](record)
    damaged_bytes = record.read_bytes()
    status, warnings = run_commands(out, capsys, analyze=damage == "garbage")
    assert Store(out).unit(("tiny", 1)).state is UnitState.DAMAGED
    assert "tiny                         3       0        1        0" in status
    assert f"damaged tiny step 1: {record}" in status
    assert "warning: skipping 1 damaged units (tiny step 1:" in warnings
    curves = pd.read_parquet(out / "curves.parquet")
    assert ("tiny", 1) not in set(zip(curves.model, curves.step)) and len(curves.groupby(["model", "step"])) == 7

    summary = local_sweep(suite, out, limit=LIMIT)
    assert [c.key for c in summary.done] == [("tiny", 1)] and len(summary.skipped) == 7 and summary.ok
    assert [c.key for c, _ in summary.damaged] == [("tiny", 1)]
    assert (out / "damaged" / "tiny" / "step1.json").read_bytes() == damaged_bytes
    assert Store(out).unit(("tiny", 1)).state is UnitState.DONE


def test_one_damaged_unit_of_eight_heals_in_one_rerun(out, suite, capsys):
    """The acceptance case, through the command: 1 re-evaluated, 7 skipped, the damaged files kept."""
    cut_in_half(unit_file(out))
    items = unit_file(out, ".items.parquet").read_bytes()
    assert main(args_of(suite, out)) == 0
    report = capsys.readouterr().out
    assert "sweep: 1 evaluated, 7 already done, 0 failed" in report
    assert f"damaged tiny step 1: {unit_file(out)}: not a unit record" in report
    assert sorted(p.name for p in (out / "damaged" / "tiny").iterdir()) == ["step1.items.parquet", "step1.json"]
    assert (out / "damaged" / "tiny" / "step1.items.parquet").read_bytes() == items
    assert main(["status", str(out)]) == 0
    assert "tiny                         4       0        0        0" in capsys.readouterr().out


def test_a_truncated_items_file_is_damaged_not_done(out, suite, capsys):
    cut_in_half(unit_file(out, ".items.parquet", "small", 2))
    status, warnings = run_commands(out, capsys)
    assert "damaged small step 2:" in status and "items file step2.items.parquet is unreadable" in status
    assert "skipping 1 damaged units (small step 2" in warnings
    summary = local_sweep(suite, out, limit=LIMIT)
    assert [c.key for c in summary.done] == [("small", 2)] and len(summary.skipped) == 7
    assert len(Store(out).items()) == 8 * len(TEST_PARADIGMS) * LIMIT


def test_a_unit_from_another_sweep_is_not_taken_as_done(out, suite, tmp_path, capsys):
    """A unit copied in from an OUT made with another --limit, and a record copied under another step's name."""
    other = tmp_path / "other"
    assert local_sweep(suite, other, limit=LIMIT + 1, models="tiny", steps="1").ok
    for suffix in (".json", ".items.parquet"):
        shutil.copy(unit_file(other, suffix), unit_file(out, suffix))
        shutil.copy(unit_file(out, suffix, "small", 0), unit_file(out, suffix, "small", 3))
    status, _ = run_commands(out, capsys, analyze=False)
    assert f"damaged tiny step 1: {unit_file(out)}: made with another spec (limit: 4 here, 5 in the unit)" in status
    assert "damaged small step 3:" in status and "holds the record of small step 0" in status
    summary = local_sweep(suite, out, limit=LIMIT)
    assert sorted(c.key for c in summary.done) == [("small", 3), ("tiny", 1)] and len(summary.skipped) == 6


def test_a_damaged_failure_record_is_reported_and_redone(out, suite, capsys):
    unit_file(out).unlink()
    unit_file(out, ".items.parquet").unlink()
    unit_file(out, ".failed.json").write_text('{"model": "tiny", "st')
    status, _ = run_commands(out, capsys)
    assert "damaged tiny step 1:" in status and "not a failure record" in status
    assert [c.key for c in local_sweep(suite, out, limit=LIMIT).done] == [("tiny", 1)]
    assert (out / "damaged" / "tiny" / "step1.failed.json").exists()


def test_a_damaged_sweep_json_says_how_to_recover(out, suite, capsys):
    (out / "sweep.json").write_text('{"spec": {"suite": "loc')
    for command in (["status", str(out)], ["collect", str(out)], args_of(suite, out)):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "sweep.json is damaged (JSONDecodeError" in err
        assert "move it aside and run the sweep command that made this folder again" in err
    (out / "sweep.json").rename(tmp := out.parent / "sweep.json.bad")
    summary = local_sweep(suite, out, limit=LIMIT)
    assert (len(summary.done), len(summary.skipped)) == (0, 8) and tmp.exists()


def test_damaged_tables_and_job_records_are_one_line(out, capsys):
    (out / "curves.parquet").write_bytes(b"PAR1 not really")
    for command in (["analyze", str(out)], ["plot", str(out)]):
        assert main(command) == 2
        assert "curves.parquet is damaged" in (err := capsys.readouterr().err) and "trajectories collect" in err
    assert main(["collect", str(out)]) == 0  # collect rebuilds it
    (out / "imported.parquet").write_bytes(b"")
    assert main(["collect", str(out)]) == 2
    assert "imported.parquet is damaged" in capsys.readouterr().err
    (out / "imported.parquet").unlink()
    (out / "jobs").mkdir()
    (out / "jobs" / "123.units.json").write_text("[1, 2")
    unit_file(out, ".lock").write_bytes(b"\x00{garbage")
    old = time.time() - UNWRITTEN_S - 1
    os.utime(unit_file(out, ".lock"), (old, old))
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert f"damaged job record {out / 'jobs' / '123.units.json'}: not a job record" in status
    assert re.search(r"tiny step 1: an empty or unreadable lock, \d+ s old, STALE", status)


def test_an_empty_or_unreadable_lock_is_stale_after_a_short_grace(tmp_path):
    store, ckpt = Store(tmp_path), Checkpoint("local:x", ModelInfo("tiny", "tiny"), 1)
    lock = tmp_path / "units" / "tiny" / "step1.lock"
    lock.parent.mkdir(parents=True)
    for content in (b"", b"\x00\x00garbage", b"[]"):
        lock.write_bytes(content)
        assert not store.lock(ckpt, locks.owner()), "a lock being written right now is a live holder's"
        old = time.time() - UNWRITTEN_S - 1
        os.utime(lock, (old, old))
        me = locks.owner()
        assert store.lock(ckpt, me), "the holder died between creating and writing it: it is stale"
        store.unlock(ckpt, me)


def test_two_forced_sweeps_at_once_evaluate_each_unit_once(out, suite):
    """Two sweeps with --force running at the same time: whichever evaluates a unit first, the other takes it as
    done (it was done after it started), rather than evaluating it again."""
    store = Store(out)
    spec = store.spec()
    units = [u.record for u in store.stored_units()]
    checkpoints = [Checkpoint(r.suite, r.model, r.step, r.tokens, r.revision, r.path) for r in units][:3]
    settings = EvalSettings("cpu", 8, str(BLIMP_DIR))
    first = UnitWorker(spec, out, settings, locks.owner("first"), force=True)
    second = UnitWorker(spec, out, settings, locks.owner("second"), force=True)
    first.run(checkpoints)
    second.run(checkpoints)
    assert first.model_loads == 3 and second.model_loads == 0
    assert all(store.record(c.key).by["sweep"] == "first" for c in checkpoints)


# ---------------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize("option, value, message", [
    ("--limit", "0", "--limit 0: expected a whole number >= 1"),
    ("--limit", "-1", "--limit -1: expected a whole number >= 1"),
    ("--batch-size", "0", "--batch-size 0: expected a whole number >= 1, or auto"),
    ("--batch-size", "-1", "--batch-size -1: expected a whole number >= 1, or auto"),
    ("--device", "gpu", "--device 'gpu': expected one of cpu, cuda, cuda:<N>, mps"),
    ("--device", "meta", "--device 'meta': expected one of cpu, cuda, cuda:<N>, mps"),
    ("--dtype", "foo", "--dtype 'foo': expected one of auto, float32, float16, bfloat16"),
    ("--steps", "5:1:1", "bad --steps '5:1:1': the range starts at 5, after its end 1"),
    ("--models", ",", "--models ',' names no model"),
    ("--workers", "-2", "--workers -2: expected a whole number >= 1"),
    ("--units-per-job", "0", "--units-per-job 0: expected a whole number >= 1"),
])
def test_bad_options_are_refused_before_any_work(option, value, message, suite, tmp_path, capsys):
    args = sweep_args(suite, tmp_path / "out", "--executor", "processes")
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists(), "nothing may be written, not even sweep.json"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_refused(suite, tmp_path, capsys):
    args = sweep_args(suite, tmp_path / "out")
    args[args.index("--device") + 1] = "cuda"
    assert main(args) == 2
    assert "--device 'cuda': this machine has no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_steps_ranges_are_intersected_lazily_and_models_counted_once(suite, capsys):
    assert select_steps("0:300000000000:1", [0, 512, 143000], "m") == [0, 512, 143000]
    assert select_steps("1:3:2", [0, 1, 2, 3], "m") == [1, 3]
    assert main(["checkpoints", "--suite", f"local:{suite}", "--models", "tiny,tiny", "--steps", "0:1000:1"]) == 0
    assert [line.split("\t")[:2] for line in capsys.readouterr().out.splitlines()[1:]] == [
        ["tiny", str(s)] for s in range(4)]
    assert main(["checkpoints", "--suite", f"local:{suite}", "--steps", "9:20:1"]) == 2
    assert "--steps '9:20:1' selects no checkpoint" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- suite identity
def test_a_suite_is_what_it_is_not_how_it_was_typed(suite, tmp_path, monkeypatch, capsys):
    one = tmp_path / "one"
    shutil.copytree(suite, one / "suite")
    monkeypatch.chdir(one)
    out = tmp_path / "out"
    base = ["--tasks", "adjunct_island", "--blimp-dir", str(BLIMP_DIR), "--limit", str(LIMIT), "--out", str(out),
            "--device", "cpu", "--models", "tiny", "--steps", "0"]
    assert main(["sweep", "--suite", "local:suite", *base]) == 0
    for typed in ("local:./suite/", f"local:{one / 'suite'}", "local:suite/", f"local:{tmp_path}/one/../one/suite"):
        assert main(["sweep", "--suite", typed, *base]) == 0, typed
        assert "0 evaluated, 1 already done" in capsys.readouterr().out

    two = tmp_path / "two"  # `local:suite` typed in another folder: another suite
    build_tiny_suite(two / "suite", models={"tiny": Shape(1, 24)}, steps=(0,))
    monkeypatch.chdir(two)
    before = (out / "sweep.json").read_text()
    assert main(["sweep", "--suite", "local:suite", *base]) == 2
    one, two = one.resolve(), two.resolve()
    assert f"suite: 'local:{one / 'suite'}' there, 'local:{two / 'suite'}' now" in capsys.readouterr().err
    assert (out / "sweep.json").read_text() == before

    shutil.rmtree(one / "suite")  # the same folder, rebuilt with other models: another suite
    shutil.copytree(two / "suite", one / "suite")
    monkeypatch.chdir(one)
    assert main(["sweep", "--suite", "local:suite", *base]) == 2
    assert "suite_fingerprint: {'tiny': '" in capsys.readouterr().err


def test_a_suite_may_grow(suite, tmp_path, capsys):
    grown = tmp_path / "suite"
    shutil.copytree(suite, grown)
    out = tmp_path / "out"
    args = ["--tasks", "adjunct_island", "--blimp-dir", str(BLIMP_DIR), "--limit", str(LIMIT), "--out", str(out),
            "--device", "cpu", "--models", "tiny", "--steps", "all"]
    shutil.rmtree(grown / "tiny" / "step3")
    assert main(["sweep", "--suite", f"local:{grown}", *args]) == 0
    shutil.copytree(suite / "tiny" / "step3", grown / "tiny" / "step3")  # training went on
    assert main(["sweep", "--suite", f"local:{grown}", *args]) == 0
    assert "1 evaluated, 3 already done" in capsys.readouterr().out


def test_an_old_folder_is_upgraded_in_place_and_keeps_its_units(tmp_path, monkeypatch):
    """tests/fixtures/results_v0 names its suite as typed (`local:suite`), with no fingerprint."""
    build_tiny_suite(tmp_path / "suite")
    shutil.copytree(FIXTURE, tmp_path / "old")
    monkeypatch.chdir(tmp_path)
    assert tj.sweep("local:./suite", list(TEST_PARADIGMS), out="old", limit=4, blimp_dir=BLIMP_DIR, device="cpu",
                    batch_size=8, progress=False).model_loads == 0
    manifest = json.loads((tmp_path / "old" / "sweep.json").read_text())
    assert manifest["spec"]["suite"] == f"local:{tmp_path / 'suite'}" and manifest["suite_aliases"] == ["local:suite"]
    assert set(manifest["spec"]["suite_fingerprint"]) == {"tiny", "small"}
    assert len(Store(tmp_path / "old").records()) == 6


# ---------------------------------------------------------------------------------------------------- task names
def pairs_file(path: Path, sentence: str = "The cat sleeps.") -> Path:
    path.write_text(json.dumps({"sentence_good": sentence, "sentence_bad": sentence + "x"}) + "\n")
    return path


def test_names_lm_eval_defines_are_refused(tmp_path):
    names = lm_eval_names()
    assert {"lambada_openai", "arc_easy", "mmlu", "blimp"} <= names  # a task, a task, a group, a group
    for name in ("lambada_openai", "arc_easy", "ai2_arc"):  # two tasks and a tag
        with pytest.raises(TaskError, match=f"names already taken by other tasks: {name};"):
            authoring.add_task(pairs_file(tmp_path / "p.jsonl"), name, tasks_dir=tmp_path / "tasks")
    assert not (tmp_path / "tasks").exists()


def test_built_in_tasks_cannot_be_replaced(tmp_path, capsys):
    before = {p: p.read_bytes() for p in BUILTIN_TASKS_DIR.rglob("*") if p.is_file()}
    source = pairs_file(tmp_path / "p.jsonl")
    assert main(["tasks", "add", str(source), "--name", "minigrammar", "--force", "--tasks-dir",
                 str(BUILTIN_TASKS_DIR)]) == 2
    assert "holds the tasks built into trajectories" in capsys.readouterr().err
    assert main(["tasks", "add", str(source), "--name", "minigrammar", "--force", "--tasks-dir",
                 str(tmp_path / "tasks")]) == 2
    assert "names already taken by other tasks: minigrammar" in capsys.readouterr().err
    assert before == {p: p.read_bytes() for p in BUILTIN_TASKS_DIR.rglob("*") if p.is_file()}


def test_the_tasks_dir_variable_adds_to_the_tasks_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    authoring.add_task(pairs_file(tmp_path / "p.jsonl"), "here", tasks_dir=tmp_path / "tasks")
    monkeypatch.setenv("TRAJECTORIES_TASKS_DIR", str(tmp_path / "elsewhere"))
    authoring.add_task(pairs_file(tmp_path / "p.jsonl"), "there")
    assert (tmp_path / "elsewhere" / "there").is_dir()
    assert TaskCatalog().expand("here,there,minigrammar")[:2] == ["here_p", "there_p"]


def test_a_long_name_is_one_line(tmp_path, capsys):
    source = pairs_file(tmp_path / "p.jsonl")
    assert main(["tasks", "add", str(source), "--name", "x" * 301, "--tasks-dir", str(tmp_path / "tasks")]) == 2
    assert "is 301 characters long; at most 64" in capsys.readouterr().err
    long_file = pairs_file(tmp_path / f"{'p' * 120}.jsonl")
    assert main(["tasks", "add", str(long_file), "--name", "ok", "--tasks-dir", str(tmp_path / "tasks")]) == 2
    assert "is 120 characters long, over 100; rename the file" in capsys.readouterr().err
    assert not (tmp_path / "tasks").exists()


def test_absurd_sentences_and_files_are_refused(tmp_path, monkeypatch, capsys):
    huge = pairs_file(tmp_path / "huge.jsonl", "word " * 30_000)
    assert main(["tasks", "check", str(huge)]) == 1
    assert "field 'sentence_good' is 150,000 characters long, over the 100,000" in capsys.readouterr().out
    long = pairs_file(tmp_path / "long.jsonl", "word " * 2_000)
    assert main(["tasks", "check", str(long)]) == 0
    assert "warning: " in (out := capsys.readouterr().out) and "may not fit a model's context" in out
    monkeypatch.setattr(authoring, "MAX_DATA_BYTES", 1000)
    big = pairs_file(tmp_path / "big.jsonl", "word " * 300)
    assert main(["tasks", "add", str(big), "--name", "big", "--tasks-dir", str(tmp_path / "tasks")]) == 2
    assert f"{big.stat().st_size:,} bytes, over the 1,000 a file of minimal pairs may have" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- environment
def confined(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a shell script in its own user and mount namespace, where it may mount a tiny or read-only tmpfs: a
    real full disk and a real read-only filesystem, for this process only. Skips where namespaces are not allowed."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode:
        pytest.skip("unprivileged user and mount namespaces are not available here")
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(["unshare", "-Urm", "sh", "-c", script], cwd=cwd, env=env, capture_output=True, text=True)


def test_a_full_disk_is_one_line_and_nothing_is_half_written(suite, tmp_path):
    """OUT/units on a 8 KiB tmpfs with one page left: the unit's lock fits, its results do not."""
    args = " ".join(sweep_args(suite, tmp_path / "out", "--models", "tiny", "--steps", "0"))
    done = confined(f"mkdir -p out/units && mount -t tmpfs -o size=8k tmpfs out/units && "
                    f"head -c 4096 /dev/zero > out/units/filler && {sys.executable} -m trajectories {args}; "
                    "echo rc=$?; ls -A out/units out/units/tiny", tmp_path)
    assert "rc=1" in done.stdout, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot write {tmp_path / 'out' / 'units' / 'tiny' / 'step0.items.parquet'}: "
                      "No space left on device"], done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.split("rc=1")[1].split() == ["out/units:", "filler", "tiny", "out/units/tiny:"]


def test_a_read_only_out_is_one_line(swept, suite, tmp_path):
    """A finished sweep on a read-only filesystem: `status` reads it; `collect` and `sweep` say they cannot write."""
    shutil.copytree(swept, tmp_path / "out")
    ro = tmp_path / "ro"
    ro.mkdir()
    python = f"{sys.executable} -m trajectories"
    done = confined(f"mount -t tmpfs tmpfs ro && cp -a out/. ro/ && mount -o remount,ro ro && "
                    f"{python} status {ro} > /dev/null; echo status=$?; {python} collect {ro}; echo collect=$?; "
                    f"{python} {' '.join(args_of(suite, ro, '--force'))}; echo sweep=$?", tmp_path)
    assert "status=0" in done.stdout and "collect=1" in done.stdout and "sweep=1" in done.stdout, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot write {ro / 'curves.parquet'}: Read-only file system",
                      f"error: cannot write {ro / 'sweep.json'}: Read-only file system"], done.stderr
    assert "Traceback" not in done.stderr


def test_out_being_a_file_is_one_line(suite, tmp_path, capsys):
    (tmp_path / "out").write_text("I am a file")
    assert main(sweep_args(suite, tmp_path / "out")) == 2
    assert f"--out {tmp_path / 'out'}: {tmp_path / 'out'} is a file, not a folder" in capsys.readouterr().err
    assert main(sweep_args(suite, tmp_path / "out" / "sub")) == 2
    assert f"--out {tmp_path / 'out' / 'sub'}: {tmp_path / 'out'} is a file" in capsys.readouterr().err
    for command in ("status", "collect"):
        assert main([command, str(tmp_path / "out")]) == 2
        assert "not a sweep folder" in capsys.readouterr().err


def test_real_bugs_keep_their_traceback(tmp_path):
    """Only OSErrors about the environment, on paths the user named, become one line."""
    args = build_parser().parse_args(["status", str(tmp_path)])
    assert environment_error(PermissionError(13, "Permission denied", str(tmp_path / "x")), args) == \
        f"{tmp_path / 'x'}: Permission denied"
    assert environment_error(PermissionError(13, "Permission denied", "/proc/1/mem"), args) is None
    assert environment_error(OSError(22, "Invalid argument", str(tmp_path)), args) is None


def test_offline_hub_suites_and_tasks_are_refused_before_anything_is_written(suite, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TRAJECTORIES_BLIMP_DIR", raising=False)
    out = tmp_path / "out"
    assert main(["sweep", "--suite", "hf:org/repo", "--tasks", "minigrammar", "--out", str(out)]) == 2
    assert "offline (HF_HUB_OFFLINE=1) and the local hub cache holds no branches of org/repo" in capsys.readouterr().err
    assert main(["sweep", "--suite", f"local:{suite}", "--tasks", "adjunct_island", "--out", str(out)]) == 2
    assert "task blimp_adjunct_island reads nyu-mll/blimp (adjunct_island) from the hub, which is offline" \
        in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------- imports, files
def results_file(path: Path, acc: float, model_args: str = "pretrained=EleutherAI/pythia-70m") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"results": {"lambada_openai": {"acc,none": acc, "acc_stderr,none": 0.01}},
                                "config": {"model_args": model_args}}))
    return path


def test_imports_take_the_step_from_the_file_or_its_model_args_only(tmp_path, capsys):
    out = tmp_path / "out"
    final = results_file(tmp_path / "runs" / "step7" / "results.json", 0.5)
    assert main(["collect", str(out), "--import", str(final)]) == 2
    assert "cannot tell the training step" in capsys.readouterr().err
    named = results_file(tmp_path / "runs" / "step7" / "results_step3.json", 0.5)
    assert main(["collect", str(out), "--import", str(named)]) == 0
    assert f"import {named}: 70m step 3 (the step from the file name)" in capsys.readouterr().err
    revision = results_file(tmp_path / "runs" / "step7" / "r.json", 0.5, "pretrained=EleutherAI/pythia-70m,"
                                                                          "revision=step1000")
    assert main(["collect", str(out), "--import", str(revision)]) == 0
    assert "70m step 1000 (the step from model_args revision)" in capsys.readouterr().err
    assert sorted(pd.read_parquet(out / "curves.parquet").step.unique()) == [3, 1000]


def test_two_files_for_one_checkpoint_are_refused(tmp_path, capsys):
    a = results_file(tmp_path / "a" / "results_step5.json", 0.30)
    b = results_file(tmp_path / "b" / "results_step5.json", 0.95)
    assert main(["collect", str(tmp_path / "out"), "--import", str(tmp_path / "*" / "*.json")]) == 2
    assert f"{a} and {b} both hold 70m step 5 (lambada_openai)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_result_files_follow_the_umask(umask, mode, tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "out")
    subprocess.run([sys.executable, "-m", "trajectories", "collect", str(tmp_path / "out")], check=True,
                   capture_output=True, preexec_fn=lambda: os.umask(umask))
    for name in ("curves.parquet", "curves.csv"):
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == mode, name
