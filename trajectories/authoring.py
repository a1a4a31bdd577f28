"""Authoring tasks: a file (or folder) of minimal pairs is checked and becomes lm-eval tasks in the user's task
folder (tasks/NAME/), written by taskfiles.py: user data stays data, never templates or code.

Scoring methods (BLiMP's names):
  full sentence ("simple LM method", the default): is log P(good sentence) > log P(bad sentence)? Use it when the two
    sentences differ anywhere, or in more than one place; it also counts how the rest of the sentence fits.
  shared prefix ("one-prefix method", --prefix-field): is log P(good | prefix) > log P(bad | prefix)? Use it when the
    pair shares a prefix and differs only in what comes next (e.g. the verb after a subject): it asks only for the
    model's prediction at that point. The model reads prefix + " " + continuation.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from trajectories import taskfiles
from trajectories.tasks import (
    BLIMP_PARADIGMS,
    BLIMP_PHENOMENA,
    BUILTIN_TASKS_DIR,
    MAX_DATA_BYTES,
    TaskCatalog,
    TaskError,
    lm_eval_names,
    user_tasks_dir,
)

FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "pairs", ".pairs": "pairs"}
GOOD_FIELDS = ("sentence_good", "good")
BAD_FIELDS = ("sentence_bad", "bad")
BLIMP_PHENOMENON_FIELD = "linguistics_term"
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
MAX_NAME_CHARS = 64  # a family name is a folder name and the start of every task name
MAX_PARADIGM_CHARS = 100  # a paradigm name is a file name (<paradigm>.jsonl) and ends a task name
# Minimal pairs are sentences: Pythia reads 2,048 tokens (about 8,000 characters of English); lm-eval keeps only the
# end of a longer text. Far longer, a sentence is a mistake, and a tokenizer may not survive it.
LONG_SENTENCE_CHARS = 8_000
MAX_SENTENCE_CHARS = 100_000
# Phenomena appear in `--tasks NAME:PHENOMENON` (split on "," and ":") and in paradigm names.
PHENOMENON_RE = re.compile(r"[\w.-]+\Z")
SHOWN = 20  # problems listed per kind; the rest are counted


@dataclass(frozen=True)
class Layout:
    """How to read a source: its format and which fields hold what; None means detect or default."""

    format: str | None = None
    good: str | None = None
    bad: str | None = None
    prefix: str | None = None
    phenomenon: str | None = None
    phenomenon_field: str | None = None
    bad_first: bool = False

    def validate(self) -> None:
        if self.format and self.format not in FORMATS.values():
            raise TaskError(f"unknown format {self.format!r}; formats: {', '.join(sorted(set(FORMATS.values())))}")
        if self.phenomenon and self.phenomenon_field:
            raise TaskError("give --phenomenon or --phenomenon-field, not both")
        if self.phenomenon and not PHENOMENON_RE.match(self.phenomenon):
            raise TaskError(f"phenomenon {self.phenomenon!r} must be letters, digits, '_', '.' or '-'")


@dataclass(frozen=True)
class MinimalPair:
    good: str
    bad: str
    phenomenon: str
    where: str  # file:line of the input, kept in the data so that a result can be traced back to it
    prefix: str | None = None

    def row(self) -> dict:
        text = (
            {"sentence_good": self.good, "sentence_bad": self.bad} if self.prefix is None
            else {"prefix": self.prefix, "good": self.good, "bad": self.bad}
        )
        return text | {"choices": [self.good, self.bad], "phenomenon": self.phenomenon, "source": self.where}


@dataclass
class CheckResult:
    """What a check found: the paradigms a task would have (their pairs in input order) and the problems."""

    paradigms: dict[str, list[MinimalPair]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def counts(self) -> Counter:
        return Counter(p.phenomenon for pairs in self.paradigms.values() for p in pairs)

    def summary(self) -> str:
        counts = self.counts()
        lines = [f"{sum(counts.values())} pairs, {len(self.paradigms)} paradigms, {len(counts)} phenomena"]
        lines += [f"  {'paradigm':<40} {'phenomenon':<32} pairs"]
        lines += [f"  {p:<40} {pairs[0].phenomenon:<32} {len(pairs):>5}" for p, pairs in self.paradigms.items()]
        lines += ["  per phenomenon:"]
        lines += [
            f"  {ph:<40} {n:>5}" + ("  (also a BLiMP phenomenon)" if ph in BLIMP_PHENOMENA else "")
            for ph, n in sorted(counts.items())
        ]
        for kind, problems in (("warning", self.warnings), ("error", self.errors)):
            lines += [f"{kind}: {p}" for p in problems[:SHOWN]]
            if len(problems) > SHOWN:
                lines.append(f"... and {len(problems) - SHOWN} more {kind}s")
        return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"\W+", "_", text, flags=re.ASCII).strip("_")


def _lines(path: Path, errors: list[str]) -> list[str]:
    """The file's lines without their "\\n"; bytes that are not UTF-8 are reported by line and replaced."""
    if path.stat().st_size > MAX_DATA_BYTES:
        errors.append(f"{path}: {path.stat().st_size:,} bytes, over the {MAX_DATA_BYTES:,} a file of minimal pairs "
                      "may have: is it the right file?")
        return []
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        errors.append(f"{path}:1: the file is UTF-16; save it as UTF-8")
        return []
    lines = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            errors.append(f"{path}:{n}: not UTF-8: byte {raw[err.start]:#04x} at column {err.start + 1}")
            lines.append(raw.decode("utf-8", "replace"))
    if lines[-1] == "":
        lines.pop()
    return lines


def _records(path: Path, fmt: str, layout: Layout, errors: list[str]) -> list[tuple[int, dict]]:
    """(line, fields) for each pair in the file."""
    lines = _lines(path, errors)
    if fmt == "jsonl":
        return _jsonl_records(path, lines, errors)
    if fmt == "pairs":
        return _pairs_records(path, lines, layout.bad_first, errors)
    # A TSV has no quoting: a '"' in a sentence is text. A CSV quotes by the usual rules.
    reader = csv.reader(
        io.StringIO("\n".join(lines), newline=""), strict=True,
        **({"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}),
    )
    records, header = [], None
    try:
        for row in reader:
            if not row:
                continue
            if header is None:
                header = row
            elif len(row) != len(header):
                errors.append(f"{path}:{reader.line_num}: expected {len(header)} columns, found {len(row)}")
            else:
                records.append((reader.line_num, dict(zip(header, row, strict=True))))
    except csv.Error as err:
        errors.append(f"{path}:{reader.line_num}: {err}")
    return records


def _jsonl_records(path: Path, lines: list[str], errors: list[str]) -> list[tuple[int, dict]]:
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            errors.append(f"{path}:{n}: invalid JSON: {err.msg} at column {err.colno}")
            continue
        if isinstance(record, dict):
            records.append((n, record))
        else:
            errors.append(f"{path}:{n}: expected a JSON object, found {type(record).__name__}")
    return records


def _pairs_records(path: Path, lines: list[str], bad_first: bool, errors: list[str]) -> list[tuple[int, dict]]:
    """Two consecutive lines per pair; blank lines may separate pairs. Only the line break is removed."""
    records, pending = [], []
    for n, line in enumerate(lines, 1):
        line = line.removesuffix("\r")
        if not line.strip():
            if pending:
                errors.append(f"{path}:{n}: blank line inside the pair that starts on line {pending[0][0]}")
                pending = []
            continue
        pending.append((n, line))
        if len(pending) == 2:
            (start, first), (_, second) = pending
            records.append((start, {"good": second, "bad": first} if bad_first else {"good": first, "bad": second}))
            pending = []
    if pending:
        errors.append(f"{path}:{pending[0][0]}: a sentence without its pair at the end of the file")
    return records


def _problem(value) -> str | None:
    if value is None:
        return "is missing"
    if not isinstance(value, str):
        return f"must be text, not {type(value).__name__}"
    if not value.strip():
        return "is empty"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"is not valid Unicode ({value[err.start]!a} at position {err.start})"
    if len(value) > MAX_SENTENCE_CHARS:
        return (f"is {len(value):,} characters long, over the {MAX_SENTENCE_CHARS:,} a sentence may have (far beyond "
                "any model's context)")
    return None


def _file_pairs(path: Path, records: list[tuple[int, dict]], layout: Layout, default_phenomenon: str,
                report: CheckResult) -> list[MinimalPair]:
    first = records[0][1] if records else {}
    fields = {
        "good": layout.good or next((f for f in GOOD_FIELDS if f in first), GOOD_FIELDS[0]),
        "bad": layout.bad or next((f for f in BAD_FIELDS if f in first), BAD_FIELDS[0]),
        "prefix": layout.prefix,
        "phenomenon": layout.phenomenon_field,
    }
    if not layout.phenomenon and not fields["phenomenon"] and all(BLIMP_PHENOMENON_FIELD in r for _, r in records):
        fields["phenomenon"] = BLIMP_PHENOMENON_FIELD  # BLiMP's own files label their phenomenon
    pairs = []
    for n, record in records:
        values, ok = {}, True
        for role, name in fields.items():
            problem = _problem(record.get(name)) if name else None
            if problem:
                report.errors.append(f"{path}:{n}: field {name!r} {problem}")
                ok = False
            elif name:
                values[role] = record[name]
                if len(record[name]) > LONG_SENTENCE_CHARS:
                    report.warnings.append(f"{path}:{n}: field {name!r} is {len(record[name]):,} characters long: "
                                           "it may not fit a model's context (Pythia: 2,048 tokens), and lm-eval "
                                           "scores only the end of what does not fit")
        phenomenon = values.get("phenomenon") or layout.phenomenon or default_phenomenon
        if ok and values["good"] == values["bad"]:
            report.errors.append(f"{path}:{n}: the good and the bad sentence are identical")
        elif ok and not PHENOMENON_RE.match(phenomenon):
            report.errors.append(f"{path}:{n}: phenomenon {phenomenon!r} must be letters, digits, '_', '.' or '-'")
        elif ok:
            where = f"{path.name}:{n}"
            pairs.append(MinimalPair(values["good"], values["bad"], phenomenon, where, values.get("prefix")))
    return pairs


def _source_files(source: Path, layout: Layout) -> list[Path]:
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in FORMATS)
        if not files:
            raise TaskError(f"{source}: no files of minimal pairs ({', '.join(FORMATS)}) in this folder")
        return files
    if not source.is_file():
        raise TaskError(f"{source}: no such file or folder")
    if not layout.format and source.suffix.lower() not in FORMATS:
        raise TaskError(f"{source}: cannot tell the format from its name; pass --format jsonl|csv|tsv|pairs")
    return [source]


def check_source(source: str | Path, layout: Layout = Layout(), name: str | None = None) -> CheckResult:
    """Parse and validate a file or folder of minimal pairs without writing anything.

    One paradigm per (file, phenomenon): named after the file, plus the phenomenon when a file holds several.
    Pairs without a phenomenon get NAME's (the file's name when there is no NAME)."""
    layout.validate()
    source = Path(source)
    report = CheckResult()
    for path in _source_files(source, layout):
        fmt = layout.format or FORMATS[path.suffix.lower()]
        if fmt == "pairs" and (layout.good or layout.bad or layout.prefix or layout.phenomenon_field):
            raise TaskError("a pairs file has no fields: --good, --bad, --prefix-field and --phenomenon-field "
                            "apply to jsonl, csv and tsv")
        records = _records(path, fmt, layout, report.errors)
        pairs = _file_pairs(path, records, layout, name or _slug(source.stem), report)
        if not records:
            report.errors.append(f"{path}: no pairs")
        by_phenomenon: dict[str, list[MinimalPair]] = {}
        for pair in pairs:
            by_phenomenon.setdefault(pair.phenomenon, []).append(pair)
        for phenomenon, some in by_phenomenon.items():
            paradigm = _slug(path.stem) if len(by_phenomenon) == 1 else _slug(f"{path.stem}_{phenomenon}")
            if paradigm in report.paradigms or not paradigm:
                report.errors.append(f"{path}: paradigm name {paradigm!r} is empty or taken; rename the file")
            elif len(paradigm) > MAX_PARADIGM_CHARS:
                report.errors.append(f"{path}: paradigm name {paradigm[:24]}... is {len(paradigm)} characters long, "
                                     f"over {MAX_PARADIGM_CHARS}; rename the file")
            report.paradigms[paradigm] = some
    _warn_duplicate_pairs(report)
    return report


def _warn_duplicate_pairs(report: CheckResult) -> None:
    first: dict[tuple, str] = {}
    for pairs in report.paradigms.values():
        for p in pairs:
            key = (p.prefix, p.good, p.bad)
            if key in first:
                report.warnings.append(f"{p.where}: duplicate of the pair at {first[key]}")
            first.setdefault(key, p.where)


def check_task(name: str, catalog: TaskCatalog | None = None) -> CheckResult:
    """Validate the local data of a known task or family (tasks in tasks/, or BLiMP with a --blimp-dir)."""
    catalog = catalog or TaskCatalog()
    report = CheckResult()
    for task in catalog.expand(name):
        cfg = catalog.config(task)
        files = (cfg.get("dataset_kwargs") or {}).get("data_files") or {}
        fields = _fields_of(cfg)
        if cfg.get("dataset_path") != "json" or not isinstance(files, dict) or fields is None:
            report.errors.append(f"{task}: not a minimal-pair task with local data; nothing to check")
            continue
        prefix, good, bad = fields
        layout = Layout("jsonl", good, bad, prefix, phenomenon=catalog.phenomenon(task) or None)
        for file in map(Path, files.values()):
            if not file.is_file():
                report.errors.append(f"{task}: missing data file {file}")
                continue
            pairs = _file_pairs(file, _records(file, "jsonl", layout, report.errors), layout, task, report)
            report.paradigms.setdefault(task, []).extend(pairs)
    _warn_duplicate_pairs(report)
    return report


def _fields_of(cfg: dict) -> tuple[str | None, str, str] | None:
    """(prefix, good, bad) fields of a task this module wrote, or of a BLiMP-style `{{[good, bad]}}` task."""
    if cfg.get("doc_to_choice") == "choices":
        shared_prefix = cfg.get("doc_to_text") == "prefix"
        return ("prefix", "good", "bad") if shared_prefix else (None, "sentence_good", "sentence_bad")
    template = re.fullmatch(r"\{\{\s*\[\s*(\w+)\s*,\s*(\w+)\s*\]\s*\}\}", str(cfg.get("doc_to_choice", "")))
    return (None, *template.groups()) if template and not cfg.get("doc_to_text") else None


def check(target: str, layout: Layout = Layout(), name: str | None = None, catalog: TaskCatalog | None = None
          ) -> CheckResult:
    """`tasks check`: a path is checked as `tasks add` would read it; anything else is a task name."""
    if name is not None:
        check_name(name)
    if Path(target).exists():
        return check_source(target, layout, name)
    return check_task(target, catalog)


def _readme(name: str, report: CheckResult, source: str, layout: Layout, tasks: list[str]) -> str:
    method = (
        f"shared prefix (BLiMP's one-prefix method): log P(good | prefix) vs log P(bad | prefix), prefix from "
        f"{layout.prefix!r}" if layout.prefix else "full sentence (BLiMP's simple LM method): log P(good) vs log P(bad)"
    )
    counts = report.counts()
    rows = [f"| {t} | {pairs[0].phenomenon} | {len(pairs)} |" for t, pairs in zip(tasks, report.paradigms.values(),
                                                                                     strict=True)]
    return "\n".join([
        f"# {name}", "",
        f"Minimal pairs from `{source}`, added by `trajectories tasks add`. Scoring: {method}.",
        f"{sum(counts.values())} pairs in {len(tasks)} paradigms. Run: `trajectories sweep --suite ... --tasks {name}`"
        f" (one phenomenon: `--tasks {name}:PHENOMENON`).", "",
        "| phenomenon | pairs |", "|---|---|", *[f"| {ph} | {n} |" for ph, n in sorted(counts.items())], "",
        "| task | phenomenon | pairs |", "|---|---|---|", *rows, "",
        "Each line of a paradigm's jsonl is one pair; `source` is the file and line it came from.", "",
    ])


def check_name(name: str) -> None:
    """A family name must be usable as a folder name and on the command line."""
    if not NAME_RE.match(name):
        raise TaskError(f"task name {name[:40]!r} must start with a letter and hold only letters, digits and '_'")
    if len(name) > MAX_NAME_CHARS:
        raise TaskError(f"task name {name[:24]}... is {len(name)} characters long; at most {MAX_NAME_CHARS}")


def _taken_names(catalog: TaskCatalog, own: Path) -> set[str]:
    """Names that a new task must not reuse: every task, group and tag lm-eval defines, those of our task folders
    outside `own` (the built-in families included), and bare BLiMP paradigm names (they expand to BLiMP's tasks)."""
    taken = {name for name, entry in catalog.index.entries.items()
             if not (entry.yaml_path and entry.yaml_path.resolve().is_relative_to(own.resolve()))}
    return taken | lm_eval_names() | set(BLIMP_PARADIGMS)


def add_task(source: str | Path, name: str, layout: Layout = Layout(), tasks_dir: str | Path | None = None,
             force: bool = False) -> tuple[Path, CheckResult]:
    """Check `source` and write tasks/NAME/ (task YAML + jsonl per paradigm, template, group YAML, README), all
    or nothing."""
    check_name(name)
    tasks_dir = user_tasks_dir(tasks_dir)
    if tasks_dir.is_relative_to(BUILTIN_TASKS_DIR):
        raise TaskError(f"{tasks_dir} holds the tasks built into trajectories; choose another --tasks-dir")
    report = check_source(source, layout, name)
    if not report.ok:
        raise TaskError(f"{source}: {len(report.errors)} problems, nothing written\n{report.summary()}")
    target = tasks_dir / name
    if target.exists() and not force:
        raise TaskError(f"{target} exists; pass --force to replace it")
    tasks = [f"{name}_{paradigm}" for paradigm in report.paradigms]
    clashes = sorted({name, *tasks} & _taken_names(TaskCatalog(tasks_dir), target))
    if clashes:
        raise TaskError(f"names already taken by other tasks: {', '.join(clashes)}; choose another --name")
    files = [taskfiles.TaskFile(task, paradigm, pairs[0].phenomenon, [p.row() for p in pairs], str(source))
             for task, (paradigm, pairs) in zip(tasks, report.paradigms.items(), strict=True)]
    taskfiles.write_family(target, name, files, layout.prefix is not None,
                           "Generated by `trajectories tasks add` (data only); rerun it rather than editing.",
                           _readme(name, report, str(source), layout, tasks))
    return target, report


# ---------------------------------------------------------------------------------------------------- text tasks
TEXT_UNITS = ("line", "paragraph", "file")


def text_documents(source: str | Path, per: str = "line") -> list[str]:
    """The documents of a text file: each non-blank line, each blank-line-separated paragraph (its lines joined by
    "\\n"), or the whole file; text is kept as written. Raises TaskError naming the file and line on bad input."""
    if per not in TEXT_UNITS:
        raise TaskError(f"unknown document unit {per!r}; choose from {', '.join(TEXT_UNITS)}")
    path = Path(source)
    if not path.is_file():
        raise TaskError(f"{path}: no such file")
    errors: list[str] = []
    lines = _lines(path, errors)
    if errors:
        raise TaskError(f"{errors[0]}" + (f" (and {len(errors) - 1} more lines)" if len(errors) > 1 else ""))
    if per == "line":
        documents = [line for line in lines if line.strip()]
    elif per == "paragraph":
        documents = ["\n".join(block).strip("\n") for blank, block in itertools.groupby(
            lines, key=lambda line: not line.strip()) if not blank]
    else:
        documents = ["\n".join(lines)] if any(line.strip() for line in lines) else []
    if not documents:
        raise TaskError(f"{path}: no text (only blank lines)")
    return documents


def add_text_task(source: str | Path, name: str, per: str = "line", tasks_dir: str | Path | None = None,
                  force: bool = False) -> tuple[Path, int]:
    """Turn a text file into a perplexity task tasks/NAME/ (lm-eval's loglikelihood_rolling: word and byte
    perplexity, bits per byte), all or nothing; returns the folder and the number of documents."""
    if not NAME_RE.match(name):
        raise TaskError(f"task name {name!r} must start with a letter and hold only letters, digits and '_'")
    documents = text_documents(source, per)
    target = user_tasks_dir(tasks_dir) / name
    if target.exists() and not force:
        raise TaskError(f"{target} exists; pass --force to replace it")
    if name in _taken_names(TaskCatalog(tasks_dir), target):
        raise TaskError(f"the name {name!r} is already taken by another task; choose another --name")
    readme = "\n".join([
        f"# {name}", "", f"Held-out text from `{source}` ({len(documents)} documents, one per {per}), added by "
        "`trajectories tasks add-text`. lm-eval scores each document's log-likelihood (loglikelihood_rolling) and "
        "reports word and byte perplexity and bits per byte; `trajectories analyze --align loss` and "
        "`trajectories plot --x loss` use bits per byte as the loss.", "",
    ])
    header = "Generated by `trajectories tasks add-text` (data only); rerun it rather than editing."
    taskfiles.write_text_task(target, name, documents, header, str(source), readme)
    return target, len(documents)


def export_tasks(family: str, dest: str | Path, tasks_dir: str | Path | None = None, force: bool = False) -> Path:
    """`tasks export`: a copy of one of our task families in DEST/FAMILY/ that stock lm-eval runs from any working
    directory (`lm_eval --include_path DEST --tasks FAMILY`); returns the folder."""
    catalog = TaskCatalog(tasks_dir)
    families = catalog.families()
    if family not in families:
        raise TaskError(f"no task family {family!r} in {', '.join(map(str, catalog.task_dirs))}; "
                        f"families: {', '.join(sorted(families))}")
    dest = Path(dest).expanduser().resolve()
    inside = [d for d in catalog.task_dirs if dest.is_relative_to(d)]
    if inside:
        raise TaskError(f"{dest} is inside the task folder {inside[0]}: the exported tasks would be defined twice; "
                        "export somewhere else")
    target = dest / family
    if target.exists() and not force:
        raise TaskError(f"{target} exists; pass --force to replace it")
    return taskfiles.export_family(families[family], target)
