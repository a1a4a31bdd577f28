"""`trajectories tasks add/check/list`: user minimal pairs become lm-eval tasks that score exactly the input text."""

import csv
import json
import re
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import reference_logprobs
from trajectories import taskfiles
from trajectories.authoring import Layout, add_task, check, check_source, check_task
from trajectories.cli import main
from trajectories.schema import Checkpoint, EvalSettings, ModelInfo, SweepSpec
from trajectories.taskfiles import task_config
from trajectories.tasks import BLIMP_PARADIGMS, TaskCatalog, TaskError, format_task_list

PAIRS = [
    ("The cat sleeps.", "The cat sleep."),
    ('He said "hi" {{ name }} {% if x %}', 'He say "hi" {{ name }} {% if x %}'),
    ("  Leading and trailing spaces  ", "  Leading and trailing space  "),
    ("!function evil.run: [a, b] # not a comment", "!function evil.run: [a, b] #"),
    ("Ça marche\u00a0— naïve 🙂 e\u0301", "Ça marchent\u00a0— naïve 🙂 e\u0301"),
    ("back\\slash 'quote' \\n", "back\\slash 'quote' \\t"),
]


@pytest.fixture(autouse=True, scope="module")
def datasets_cache(tmp_path_factory):
    """lm-eval builds each task's dataset through `datasets`; keep the many tiny caches out of ~/.cache."""
    import datasets

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("datasets")))
        yield


@pytest.fixture(scope="module")
def byte_model(tmp_path_factory) -> Path:
    """A random tiny GPT-NeoX with a byte-level BPE tokenizer: any text has a tokenization, nothing is <unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator([s for pair in PAIRS for s in pair], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=256, bos_token_id=0, eos_token_id=0,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("byte_model")
    GPTNeoXForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_pairs(path: Path, pairs, bad_first=False) -> Path:
    path.write_text("".join(f"{b}\n{g}\n\n" if bad_first else f"{g}\n{b}\n" for g, b in pairs), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_table(path: Path, header, rows) -> Path:
    """CSV as Python's csv module quotes it, or TSV (by the name) with no quoting at all."""
    if path.suffix == ".tsv":
        path.write_text("".join("\t".join(row) + "\n" for row in [header, *rows]), encoding="utf-8")
        return path
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows([header, *rows])
    return path


def scored(tasks_dir: Path, names: list[str]) -> dict[str, list[list[tuple]]]:
    """For each task, the (context, continuation) arguments lm-eval builds for each document, in document order."""
    tasks = TaskCatalog(tasks_dir).load(names)["tasks"]
    out = {}
    for name in names:
        task = tasks[name]
        task.build_all_requests()
        docs: dict[int, list] = {}
        for instance in sorted(task.instances, key=lambda i: (i.doc_id, i.idx)):
            docs.setdefault(instance.doc_id, []).append(instance.args)
        out[name] = [docs[i] for i in range(len(docs))]
    return out


def logprob(model, tokenizer, context: str, continuation: str) -> float:
    return reference_logprobs(model, tokenizer, [(context, continuation)])[0]


def evaluate(model_dir: Path, tasks_dir: Path, names: list[str]):
    from trajectories.evaluate import Evaluator

    spec = SweepSpec("test", tuple(names))
    evaluator = Evaluator(spec, EvalSettings(batch_size=4), TaskCatalog(tasks_dir))
    ckpt = Checkpoint("test", ModelInfo("byte", "tiny"), 0, path=str(model_dir))
    return evaluator.evaluate(ckpt)


def test_round_trip_pairs_to_per_item_results(byte_model, tmp_path):
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    tasks_dir = tmp_path / "tasks"
    source = write_pairs(tmp_path / "agreement.txt", PAIRS, bad_first=True)
    folder, report = add_task(source, "mine", Layout(phenomenon="agreement", bad_first=True), tasks_dir)
    assert report.ok and sorted(p.name for p in folder.iterdir()) == [
        "README.md", "_mine.yaml", "_template_yaml", "agreement.jsonl", "agreement.yaml"
    ]
    assert TaskCatalog(tasks_dir).expand("mine:agreement") == ["mine_agreement"]

    requests = scored(tasks_dir, ["mine_agreement"])["mine_agreement"]
    assert requests == [[("", " " + good), ("", " " + bad)] for good, bad in PAIRS]

    result = evaluate(byte_model, tasks_dir, ["mine_agreement"])
    model, tokenizer = GPTNeoXForCausalLM.from_pretrained(byte_model).eval(), AutoTokenizer.from_pretrained(byte_model)
    items = result.items
    assert list(items.item) == list(range(len(PAIRS))) and result.tasks["mine_agreement"].phenomenon == "agreement"
    for (good, bad), row in zip(PAIRS, items.itertuples(), strict=True):
        assert row.logp_good == pytest.approx(logprob(model, tokenizer, "", " " + good), abs=1e-4)
        assert row.logp_bad == pytest.approx(logprob(model, tokenizer, "", " " + bad), abs=1e-4)
        assert row.correct == (row.logp_good > row.logp_bad)


def test_shared_prefix_scores_continuations_after_the_prefix(byte_model, tmp_path):
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    rows = [("The cats", "are", "is"), ('She said "{{', 'hi}}" ', "hi}}'"), ("  x  ", "  y", "z  ")]
    source = write_table(tmp_path / "prefixed.csv", ["start", "ok", "nope"], rows)
    layout = Layout(good="ok", bad="nope", prefix="start")
    add_task(source, "pre", layout, tmp_path / "tasks")
    assert scored(tmp_path / "tasks", ["pre_prefixed"])["pre_prefixed"] == [
        [(prefix, " " + good), (prefix, " " + bad)] for prefix, good, bad in rows
    ]
    items = evaluate(byte_model, tmp_path / "tasks", ["pre_prefixed"]).items
    model, tokenizer = GPTNeoXForCausalLM.from_pretrained(byte_model).eval(), AutoTokenizer.from_pretrained(byte_model)
    for (prefix, good, bad), row in zip(rows, items.itertuples(), strict=True):
        # lm-eval moves the prefix's trailing spaces onto the continuation; the text the model reads is unchanged.
        context = prefix.rstrip()
        spaces = prefix[len(context):]
        assert row.logp_good == pytest.approx(logprob(model, tokenizer, context, spaces + " " + good), abs=1e-4)
        assert row.logp_bad == pytest.approx(logprob(model, tokenizer, context, spaces + " " + bad), abs=1e-4)


def test_blimp_files_keep_blimps_phenomena(blimp_dir, tmp_path):
    source = tmp_path / "filtered"
    source.mkdir()
    for paradigm in ("adjunct_island", "wh_island", "determiner_noun_agreement_1"):
        (source / f"{paradigm}.jsonl").symlink_to(blimp_dir / f"{paradigm}.jsonl")
    add_task(source, "myblimp", tasks_dir=tmp_path / "tasks")
    catalog = TaskCatalog(tmp_path / "tasks", blimp_dir)
    assert catalog.expand("myblimp:island_effects") == ["myblimp_adjunct_island", "myblimp_wh_island"]
    assert catalog.phenomenon("myblimp_determiner_noun_agreement_1") == BLIMP_PARADIGMS["determiner_noun_agreement_1"]
    report = check_task("myblimp", catalog)
    assert report.ok and report.counts() == {"island_effects": 2000, "determiner_noun_agreement": 1000}
    assert check_task("blimp_wh_island", catalog).ok  # BLiMP's own `{{[sentence_good, sentence_bad]}}` form

    one_prefix = Layout(prefix="one_prefix_prefix", good="one_prefix_word_good", bad="one_prefix_word_bad")
    assert check_source(source / "determiner_noun_agreement_1.jsonl", one_prefix).ok
    report = check_source(source / "adjunct_island.jsonl", one_prefix)  # BLiMP has no one-prefix form of it
    assert any(e.endswith("adjunct_island.jsonl:1: field 'one_prefix_prefix' is missing") for e in report.errors)


def test_one_paradigm_per_file_and_phenomenon(tmp_path):
    rows = [{"s": f"a{i}", "t": f"b{i}", "kind": kind} for i, kind in enumerate(["x", "y", "x", "y", "z"])]
    write_jsonl(tmp_path / "mixed.jsonl", rows)
    report = check(str(tmp_path / "mixed.jsonl"), Layout(good="s", bad="t", phenomenon_field="kind"))
    assert {p: [x.good for x in pairs] for p, pairs in report.paradigms.items()} == {
        "mixed_x": ["a0", "a2"], "mixed_y": ["a1", "a3"], "mixed_z": ["a4"]
    }
    assert [x.where for x in report.paradigms["mixed_y"]] == ["mixed.jsonl:2", "mixed.jsonl:4"]


BAD_INPUTS = [
    ("x.jsonl", b'{"sentence_good": "a", "sentence_bad": "b"}\n{"sentence_good": "a",\n', r"x\.jsonl:2: invalid JSON"),
    ("x.jsonl", b'["a", "b"]\n', r"x\.jsonl:1: expected a JSON object, found list"),
    ("x.jsonl", b'{"sentence_good": "a"}\n', r"x\.jsonl:1: field 'sentence_bad' is missing"),
    ("x.jsonl", b'{"sentence_good": " \\t", "sentence_bad": "b"}\n', r"x\.jsonl:1: field 'sentence_good' is empty"),
    ("x.jsonl", b'{"sentence_good": 7, "sentence_bad": "b"}\n', r"field 'sentence_good' must be text, not int"),
    ("x.jsonl", b'{"sentence_good": "same", "sentence_bad": "same"}\n', r"x\.jsonl:1: .* are identical"),
    ("x.jsonl", b'\n\n{"sentence_good": "caf\xe9", "sentence_bad": "b"}\n', r"x\.jsonl:3: not UTF-8: byte 0xe9"),
    ("x.jsonl", b'{"sentence_good": "\\ud800", "sentence_bad": "b"}\n', r"'sentence_good' is not valid Unicode"),
    ("x.jsonl", b'{"sentence_good": "a", "sentence_bad": "b", "linguistics_term": "island effects"}\n',
     r"x\.jsonl:1: phenomenon 'island effects' must be"),
    ("x.csv", b"good,bad\na,b\nc,d,e\n", r"x\.csv:3: expected 2 columns, found 3"),
    ("x.csv", b"good,wrong\na,b\n", r"x\.csv:2: field 'sentence_bad' is missing"),
    ("x.csv", b'good,bad\n"a,b\n', r"x\.csv:\d: unexpected end of data"),
    ("x.tsv", b"good\tbad\na\t\n", r"x\.tsv:2: field 'bad' is empty"),
    ("x.txt", b"a\nb\nc\n", r"x\.txt:3: a sentence without its pair"),
    ("x.txt", b"a\n\nb\n", r"x\.txt:2: blank line inside the pair that starts on line 1"),
    ("x.txt", b"", r"x\.txt: no pairs"),
    ("x.txt", "a\nb\n".encode("utf-16"), r"x\.txt:1: the file is UTF-16; save it as UTF-8"),
]


@pytest.mark.parametrize(("file", "content", "error"), BAD_INPUTS)
def test_bad_input_is_reported_and_nothing_is_written(tmp_path, file, content, error):
    source = tmp_path / "in" / file
    source.parent.mkdir()
    source.write_bytes(content)
    report = check_source(source)
    assert not report.ok and any(re.search(error, e) for e in report.errors), report.errors
    tasks_dir = tmp_path / "tasks"
    with pytest.raises(TaskError, match="nothing written"):
        add_task(source, "broken", tasks_dir=tasks_dir)
    assert not tasks_dir.exists()


def test_duplicates_are_reported_but_allowed(tmp_path):
    source = write_pairs(tmp_path / "d.txt", [("a", "b"), ("c", "d"), ("a", "b")])
    report = check_source(source)
    assert report.ok and report.warnings == ["d.txt:5: duplicate of the pair at d.txt:1"]
    assert "warning: d.txt:5: duplicate" in report.summary()


def test_format_and_layout_errors(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(TaskError, match="cannot tell the format.*--format"):
        check_source(tmp_path / "x.json")
    with pytest.raises(TaskError, match="no such file"):
        check_source(tmp_path / "missing.txt")
    write_pairs(tmp_path / "p.txt", PAIRS)
    with pytest.raises(TaskError, match="a pairs file has no fields"):
        check_source(tmp_path / "p.txt", Layout(good="x"))
    with pytest.raises(TaskError, match="not both"):
        check_source(tmp_path / "p.txt", Layout(phenomenon="a", phenomenon_field="b"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TaskError, match="no files of minimal pairs"):
        check_source(empty)


def test_names_clashes_and_force(tmp_path):
    tasks_dir = tmp_path / "tasks"
    first = write_pairs(tmp_path / "p.txt", PAIRS[:2])
    add_task(first, "mine", tasks_dir=tasks_dir)
    with pytest.raises(TaskError, match="exists; pass --force"):
        add_task(first, "mine", tasks_dir=tasks_dir)
    add_task(write_pairs(tmp_path / "p.txt", PAIRS), "mine", tasks_dir=tasks_dir, force=True)
    assert check_task("mine", TaskCatalog(tasks_dir)).counts() == {"mine": len(PAIRS)}
    for name, message in [("blimp", "already taken"), ("causative", "already taken"), ("mmlu", "already taken"),
                          ("minigrammar", "already taken"),
                          ("a-b", "must start with a letter"), ("9x", "must start with a letter")]:
        with pytest.raises(TaskError, match=message):
            add_task(first, name, tasks_dir=tasks_dir)
    clash = write_pairs(tmp_path / "gender_agreement.txt", PAIRS)
    with pytest.raises(TaskError, match="already taken by other tasks: blimp_anaphor_gender_agreement;"):
        add_task(clash, "blimp_anaphor", tasks_dir=tasks_dir)
    assert [p.name for p in tasks_dir.iterdir()] == ["mine"]


def test_a_failed_write_leaves_no_trace(tmp_path, monkeypatch):
    tasks_dir = tmp_path / "tasks"
    add_task(write_pairs(tmp_path / "p.txt", PAIRS[:2]), "mine", tasks_dir=tasks_dir)
    before = {p.name: p.read_bytes() for p in (tasks_dir / "mine").iterdir()}

    written = []

    def fail(task):  # the second paradigm's YAML cannot be written
        written.append(task)
        if len(written) == 2:
            raise OSError("disk full")
        return task_config(task)

    monkeypatch.setattr(taskfiles, "task_config", fail)
    source = tmp_path / "two"
    source.mkdir()
    write_pairs(source / "a.txt", PAIRS[:3])
    write_pairs(source / "b.txt", PAIRS[3:])
    with pytest.raises(OSError, match="disk full"):
        add_task(source, "mine", tasks_dir=tasks_dir, force=True)
    written.clear()
    with pytest.raises(OSError, match="disk full"):
        add_task(source, "other", tasks_dir=tasks_dir)
    assert [p.name for p in tasks_dir.iterdir()] == ["mine"]
    assert {p.name: p.read_bytes() for p in (tasks_dir / "mine").iterdir()} == before


def test_generated_yaml_is_data_only(tmp_path):
    weird = tmp_path / "we!rd: {{dir}} & *x"
    weird.mkdir()
    source = write_pairs(weird / "p.txt", PAIRS)
    folder, _ = add_task(source, "mine", tasks_dir=tmp_path / "tasks")
    configs = {}
    for path in [*folder.glob("*.yaml"), folder / "_template_yaml"]:
        text = path.read_text()
        assert "!function" not in text and "{%" not in text
        configs[path.name] = yaml.safe_load(text)  # no tags at all: safe_load would refuse one
    assert configs["_template_yaml"]["doc_to_choice"] == "choices" and configs["_template_yaml"]["doc_to_text"] == ""
    assert configs["p.yaml"]["include"] == "_template_yaml"
    assert configs["p.yaml"]["metadata"] == {"version": 1.0, "phenomenon": "mine", "source": str(source)}
    readme = (folder / "README.md").read_text()
    assert "full sentence" in readme and "| mine | 6 |" in readme


def test_check_and_add_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRAJECTORIES_TASKS_DIR", str(tmp_path / "tasks"))
    good = write_table(tmp_path / "g.tsv", ["sentence_good", "sentence_bad", "ph"], [(g, b, "agr") for g, b in PAIRS])
    assert main(["tasks", "check", str(good), "--phenomenon-field", "ph"]) == 0
    assert "agr" in capsys.readouterr().out
    bad = tmp_path / "b.txt"
    bad.write_text("lonely\n")
    assert main(["tasks", "check", str(bad)]) == 1
    assert "b.txt:1: a sentence without its pair" in capsys.readouterr().out
    assert main(["tasks", "add", str(bad), "--name", "b"]) == 2
    assert "nothing written" in capsys.readouterr().err and not (tmp_path / "tasks").exists()
    assert main(["tasks", "add", str(good), "--name", "g", "--phenomenon-field", "ph"]) == 0
    assert "wrote " in capsys.readouterr().out
    assert main(["tasks", "check", "g"]) == 0
    assert capsys.readouterr().out.startswith(f"{len(PAIRS)} pairs, 1 paradigms, 1 phenomena")


def test_list_knows_blimp_local_tasks_and_lm_evals_families(tmp_path):
    add_task(write_pairs(tmp_path / "p.txt", PAIRS), "mine", Layout(phenomenon="agr"), tmp_path / "tasks")
    infos = TaskCatalog(tmp_path / "tasks").known_tasks()
    blimp = [i for i in infos if i.family == "blimp"]
    assert len(blimp) == 67 and all(i.pairs == 1000 and i.phenomenon == BLIMP_PARADIGMS[i.task[6:]] for i in blimp)
    mine = [i for i in infos if i.family == "mine"]
    assert [(i.task, i.phenomenon, i.pairs, i.source) for i in mine] == [("mine_p", "agr", 6, str(tmp_path / "p.txt"))]
    families = {i.family for i in infos if i.summarized}
    assert {"blimp_nl", "multiblimp", "zhoblimp"} <= families
    assert all(i.pairs is None and i.source.startswith("hub: ") for i in infos if i.summarized)
    table = format_task_list(infos)
    assert "blimp_adjunct_island" in table and "mine_p" in table and "multiblimp_abk" not in table
    assert "multiblimp_abk" in format_task_list(infos, "multiblimp")
    with pytest.raises(TaskError, match="no family"):
        format_task_list(infos, "nope")


# Characters that break naive YAML, Jinja, JSON, CSV or whitespace handling.
AWKWARD = [
    '"', "'", "\\", "{{", "}}", "{%", "%}", "{#", "#}", "!function x.y", "- ", ": ", "#", "&a", "*a", "|", ">", "---",
    " ", "  ", "\u00a0", "\u200b", "\u2028", "\u0085", "\ufeff", "é", "e\u0301", "🙂", "\x00", ",", "[", "]", "null",
    "~", "%", "@", "`", "\\n", "\\u0041", "1e3", "0x1F", "yes",
]
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=4)


def sentences(forbidden: str = ""):
    pieces = st.one_of(st.sampled_from(AWKWARD), ANY_TEXT)
    text = st.lists(pieces, min_size=1, max_size=6).map("".join)
    return text.map(lambda s: "".join(c for c in s if c not in forbidden)).filter(lambda s: s.strip())


def pair_lists(forbidden: str = ""):
    pair = st.tuples(sentences(forbidden), sentences(forbidden)).filter(lambda p: p[0] != p[1])
    return st.lists(pair, min_size=1, max_size=5)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    free=pair_lists(),
    one_line=pair_lists("\n\r\t"),
    in_jsonl=st.booleans(),
)
def test_lm_eval_scores_the_input_byte_for_byte(free, one_line, in_jsonl):
    """Whatever the sentence, lm-eval's requests hold exactly " " + the sentence as the input file spells it."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in"
        source.mkdir()
        if in_jsonl:
            write_jsonl(source / "free.jsonl", [{"sentence_good": g, "sentence_bad": b} for g, b in free])
        else:
            write_table(source / "free.csv", ["good", "bad"], free)
        write_table(source / "tabs.tsv", ["good", "bad"], one_line)
        # A byte-order mark that opens a file is an encoding mark, not text, and is dropped: start with a plain pair.
        lines = [("first", "pair"), *one_line]
        write_pairs(source / "lines.txt", lines)
        expected = {"t_free": free, "t_tabs": one_line, "t_lines": lines}
        report = check_source(source, name="t")
        assert report.ok, report.errors
        add_task(source, "t", tasks_dir=Path(tmp) / "tasks")
        requests = scored(Path(tmp) / "tasks", list(expected))
        for task, pairs in expected.items():
            assert requests[task] == [[("", " " + g), ("", " " + b)] for g, b in pairs]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(rows=st.lists(st.tuples(sentences(), sentences(), sentences()).filter(lambda r: r[1] != r[2]), min_size=1,
                     max_size=4))
def test_shared_prefix_is_byte_for_byte(rows):
    with tempfile.TemporaryDirectory() as tmp:
        source = write_jsonl(Path(tmp) / "p.jsonl", [{"pre": p, "good": g, "bad": b} for p, g, b in rows])
        add_task(source, "t", Layout(prefix="pre"), Path(tmp) / "tasks")
        assert scored(Path(tmp) / "tasks", ["t_p"])["t_p"] == [[(p, " " + g), (p, " " + b)] for p, g, b in rows]


def test_a_sweep_runs_an_added_task_and_curves_follow_its_phenomena(tiny_suite, tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.setenv("TRAJECTORIES_TASKS_DIR", str(tmp_path / "tasks"))
    source = tmp_path / "pairs"
    source.mkdir()
    write_pairs(source / "agreement.txt", PAIRS[:3])
    write_table(source / "islands.csv", ["good", "bad"], PAIRS[3:])
    assert main(["tasks", "add", str(source), "--name", "mine", "--phenomenon", "syntax"]) == 0
    out = tmp_path / "out"
    assert main(["sweep", "--suite", f"local:{tiny_suite}", "--models", "tiny", "--steps", "0", "--tasks", "mine",
                 "--out", str(out), "--device", "cpu"]) == 0
    curves = pd.read_csv(out / "curves.csv")
    paradigms = curves[curves.level == "paradigm"].set_index("task")
    assert paradigms.loc[["mine_agreement", "mine_islands"], "n"].tolist() == [3, 3]
    assert curves[curves.level == "phenomenon"].task.tolist() == ["phenomenon:syntax"]
