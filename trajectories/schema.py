"""Data contracts shared by every stage, defined once here: the unit of work (a checkpoint), what a results folder
measures (the spec of its experiment: a grammar sweep or a memorization run), how units are run (settings), the
records a unit leaves in the store, and the columns of every table.

Records round-trip through JSON in the layout the store has always written, so older results folders still read.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class ModelInfo:
    """One model of a suite: a size, trained on a stated data variant."""

    name: str  # as used on the command line and in results, e.g. "160m-deduped" or "tiny"
    size: str  # size label shared by a standard/deduped pair, e.g. "160m"
    params: int | None = None  # parameter count, orders sizes in plots
    deduped: bool = False
    seed: int | None = None  # Pythia's -seedN reruns; None for the main run
    layers: int | None = None
    d_model: int | None = None
    heads: int | None = None
    d_head: int | None = None
    learning_rate: float | None = None
    train_dtype: str | None = None  # the precision it was trained in: the default evaluation dtype on a GPU
    tokens_per_step: int | None = None
    repo: str | None = None  # hub repo id for hub suites
    path: str | None = None  # model folder for local suites (holds step<N>/)

    @classmethod
    def from_dict(cls, data: dict) -> ModelInfo:
        return cls(**{k: v for k, v in data.items() if k in _field_names(cls)})


@dataclass(frozen=True)
class Checkpoint:
    """One (model, step): the unit of work a sweep evaluates and stores."""

    suite: str
    model: ModelInfo
    step: int
    tokens: int | None = None
    revision: str | None = None  # hub branch, e.g. "step1000"; None for local checkpoints
    path: str | None = None  # local HF model folder; None for hub checkpoints
    listing: Listing | None = None  # what the sweep's audit found in it: the load guard checks the files against it

    @property
    def source(self) -> str:
        """What to hand to `from_pretrained`: a local folder or a hub repo id."""
        return self.path or self.model.repo or self.model.name

    @property
    def key(self) -> tuple[str, int]:
        return (self.model.name, self.step)

    def describe(self) -> str:
        where = self.path or f"{self.model.repo}@{self.revision}"
        return f"{self.model.name} step {self.step} ({where})"


@dataclass(frozen=True)
class WeightFile:
    """One weight file of a checkpoint, as its suite lists it without reading it (hub: LFS metadata)."""

    path: str  # relative to the checkpoint folder, e.g. "model.safetensors"
    size: int
    sha256: str | None  # None: not known without downloading (a hub file stored outside LFS)


@dataclass(frozen=True)
class Listing:
    """What one checkpoint holds, read from hub metadata or from local files, without loading its weights."""

    model: str
    step: int
    weights: tuple[WeightFile, ...]  # the files a sweep loads: the safetensors where there are any, else the .bin
    config_shape: str | None  # config.json without the keys that may differ between checkpoints of one model (JSON)
    tokenizer: str | None  # a digest of the tokenizer files
    revision: str | None = None  # hub branch
    commit: str | None = None  # the commit the branch pointed at when listed

    @property
    def size(self) -> int:
        return sum(f.size for f in self.weights)

    @property
    def content(self) -> tuple | None:
        """Equal for checkpoints whose weights, config shape and tokenizer are byte-identical; None when unknown."""
        if not self.weights or any(f.sha256 is None for f in self.weights):
            return None
        return tuple(sorted((f.path, f.sha256) for f in self.weights)), self.config_shape, self.tokenizer


class FindingKind(str, enum.Enum):
    """What the audit found out of line in a suite's checkpoints."""

    DUPLICATE = "duplicate"  # byte-identical weights (and config, tokenizer) to another step of the model
    NO_BRANCH = "no-branch"  # a requested step the repo has no branch for
    SHARDS = "shards"  # a weight file set unlike the model's other checkpoints in the same format
    SIZE = "size"  # total weight size out of line with the model's other checkpoints in the same format
    CONFIG = "config"  # config.json differs in shape from the model's other checkpoints
    UNLISTED = "unlisted"  # no metadata to audit (offline, and not in the local hub cache)

    def __str__(self) -> str:
        return self.value


# Findings that make a unit fail before anything is downloaded; the others are warnings.
FAILING_FINDINGS = (FindingKind.NO_BRANCH, FindingKind.CONFIG)


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    model: str
    steps: tuple[int, ...]  # DUPLICATE: the group, first step first; otherwise the one step concerned
    detail: str  # plain words, e.g. "steps 0, 1, 2 have identical weights"


# The experiments a results folder can hold, one per folder; a spec's `kind` selects how its units are evaluated.
GRAMMAR, MEMORIZATION = "grammar", "memorization"


class _Spec:
    """What both experiments' specs share: a JSON form that names the kind, and what makes results incomparable.

    `suite` says what the suite is, however it was typed: "pythia", "hf:<org/repo>", or "local:<resolved folder>"
    (folders written before suites were identified hold the string as typed then). `suite_fingerprint` holds, per
    model of a local suite, a digest of its checkpoints' architecture and tokenizer, so a folder rebuilt with other
    models under the same path is told apart; steps are left out, so a suite whose training goes on stays itself."""

    kind: ClassVar[str]

    def as_dict(self) -> dict:
        return ({"kind": self.kind} | json_ready(asdict(self))
                | {"suite_fingerprint": dict(self.suite_fingerprint)})

    @staticmethod
    def _fields_from_dict(d: dict) -> dict:
        """The constructor's arguments from the JSON form, fingerprint included. Raises KeyError, TypeError,
        ValueError or AttributeError when `d` is not a spec."""
        return ({k: v for k, v in d.items() if k != "kind"}
                | {"suite_fingerprint": tuple(sorted((d.get("suite_fingerprint") or {}).items()))})

    def conflicts(self, other: _Spec, suite_aliases: tuple[str, ...] = ()) -> dict[str, tuple]:
        """{field: (mine, other's)} for what makes `other`'s results incomparable with mine. `suite_aliases`: other
        names my suite had (as typed before suites were identified). Fingerprints are compared for the models both
        have: a suite may gain models and steps."""
        if other.kind != self.kind:
            return {"kind": (self.kind, other.kind)}
        compared = [f.name for f in fields(self) if f.name not in ("suite", "suite_fingerprint")]
        found = {f: (getattr(self, f), getattr(other, f)) for f in compared if getattr(self, f) != getattr(other, f)}
        if other.suite != self.suite and other.suite not in suite_aliases:
            found["suite"] = (self.suite, other.suite)
        mine, theirs = dict(self.suite_fingerprint), dict(other.suite_fingerprint)
        if changed := sorted(m for m in mine.keys() & theirs.keys() if mine[m] != theirs[m]):
            found["suite_fingerprint"] = ({m: mine[m] for m in changed}, {m: theirs[m] for m in changed})
        return found


@dataclass(frozen=True)
class SweepSpec(_Spec):
    """What a grammar results folder measures. A sweep into an OUT made with a different spec is refused."""

    kind: ClassVar[str] = GRAMMAR
    suite: str
    tasks: tuple[str, ...]
    limit: int | None = None
    dtype: str = "auto"
    trust_remote_code: bool = False
    suite_fingerprint: tuple[tuple[str, str], ...] = ()  # sorted (model, digest) pairs

    @classmethod
    def from_dict(cls, d: dict) -> SweepSpec:
        return cls(**(cls._fields_from_dict(d) | {"tasks": tuple(d["tasks"])}))

    def describe(self) -> str:
        return f"suite {self.suite}, {len(self.tasks)} tasks, limit {self.limit}, dtype {self.dtype}"


@dataclass(frozen=True)
class MemorizationSpec(_Spec):
    """What a memorization results folder measures: which training rows are scored (the data files in training
    order, their layout, the sample) and how (EleutherAI's prefix and continuation lengths, generation, EOS rule).
    The rows themselves are recorded in the folder (schema.ROW_COLUMNS)."""

    kind: ClassVar[str] = MEMORIZATION
    suite: str
    data: tuple[tuple[str, str], ...]  # (data variant, training-data .bin) pairs, one per variant (DATA_VARIANTS)
    row_len: int  # tokens per row: seq_len + 1
    rows_per_step: int  # the training batch size in rows
    token_dtype: str | None  # None: the .idx's, else uint16
    sample: int  # rows sampled per data file, stratified over training (before the suite's canaries)
    strata: int
    seed: int
    prefix: int = 32
    continuation: int = 32
    generate: bool = False  # also EleutherAI's match_fraction, by greedy generation
    ban_eos: bool = True  # EleutherAI's rule: the continuation may not contain EOS
    dtype: str = "auto"
    trust_remote_code: bool = False
    suite_fingerprint: tuple[tuple[str, str], ...] = ()  # sorted (model, digest) pairs

    @classmethod
    def from_dict(cls, d: dict) -> MemorizationSpec:
        return cls(**(cls._fields_from_dict(d) | {"data": tuple(map(tuple, d["data"]))}))

    def describe(self) -> str:
        return (f"suite {self.suite}, memorization of {self.prefix}+{self.continuation} tokens, sample "
                f"{self.sample} rows of {', '.join(variant for variant, _ in self.data)} data, dtype {self.dtype}")


def spec_from_dict(d: dict) -> SweepSpec | MemorizationSpec:
    """A spec from its JSON form; folders written before specs named their kind hold grammar sweeps. Raises
    KeyError, TypeError, ValueError or AttributeError when `d` is not a spec."""
    return MemorizationSpec.from_dict(d) if d.get("kind") == MEMORIZATION else SweepSpec.from_dict(d)


def json_ready(value):
    """Tuples as lists, recursively: the JSON form of a spec, and what comparing it with a read-back one needs."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


EVICT_POLICIES = ("auto", "always", "never")
DTYPES = ("auto", "float32", "float16", "bfloat16")
EXECUTORS = ("local", "processes", "slurm")
DUPLICATE_POLICIES = ("reuse", "evaluate")  # byte-identical checkpoints: evaluate one and reuse, or evaluate each
# The order a sweep evaluates its units in: every prefix covering each model's training span evenly (planning.py),
# or step by step, model by model.
ORDERS = ("coarse-to-fine", "sequential")


@dataclass(frozen=True)
class EvalSettings:
    """How to run a checkpoint; does not change results beyond float noise, so it is not part of the spec."""

    device: str = "cpu"
    batch_size: int | str = "auto"
    blimp_dir: str | None = None
    evict: str = "auto"  # delete downloaded hub checkpoints once evaluated: one of EVICT_POLICIES
    tasks_dir: str | None = None  # the user's task folder (tasks.user_tasks_dir), absolute: workers run elsewhere


@dataclass(frozen=True)
class AdaptiveSettings:
    """An adaptive sweep (planning.plan): after a coarse first pass, checkpoints are chosen where some curve moves
    most relative to its CI, up to `budget` per model (planning.parse_budget: "40" or "30%"), or until every curve
    is within `tolerance` CI half-widths of linear between evaluated neighbours. Not part of the spec: a later run
    with a larger budget continues into the same folder."""

    budget: str
    tolerance: float = 1.0
    first_pass: str = "10%"  # the first pass: this share of each model's coarse-to-fine order (at least 2)


# ---------------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class TaskResult:
    """One task's result at one checkpoint: lm-eval's accuracy and its own metric dict, and the items counted."""

    acc: float
    acc_stderr: float
    n: int
    phenomenon: str  # "" for a task that is not a minimal-pair paradigm
    lm_eval: dict = field(default_factory=dict)  # lm-eval's metrics for the task, as it reported them
    field: str = ""  # BLiMP's field (morphology, syntax, semantics, syntax_semantics); "" if unknown

    @property
    def item_rows(self) -> int:
        """Rows the task has in the unit's items file: its n, but none for a task without an accuracy (a
        perplexity task's documents are not minimal pairs)."""
        return 0 if math.isnan(self.acc) else int(self.n)

    @classmethod
    def from_dict(cls, data: dict) -> TaskResult:
        return cls(**{k: v for k, v in data.items() if k in _field_names(cls)})


@dataclass
class UnitResult:
    """What evaluating one checkpoint produced, before it is stored."""

    tasks: dict[str, TaskResult]
    items: Any  # pandas DataFrame with ITEM_COLUMNS
    seconds: dict[str, float]  # per stage
    provenance: dict  # versions, commit, device, dtype, batch size, peak memory


@dataclass(frozen=True)
class UnitRecord:
    """A completed unit as stored in units/<model>/step<N>.json (written last: the unit is done once it is there and
    checks out against the folder, see Store.unit).

    The JSON layout is flat, provenance keys beside the others, as every results folder has it."""

    suite: str
    model: ModelInfo
    step: int
    tokens: int | None
    revision: str | None
    path: str | None
    spec: SweepSpec | MemorizationSpec
    tasks: dict[str, TaskResult]  # empty for a memorization unit: its results are its rows
    seconds: dict[str, float] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    by: dict | None = None  # who evaluated it (sweep, job, host, pid, log), as locks.owner() gives it
    # Not evaluated: its weights are byte-identical to this step's (the audit's duplicate group), whose results it
    # carries. None for a unit evaluated itself.
    same_weights_as: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.model.name, self.step)

    @classmethod
    def of(cls, ckpt: Checkpoint, result: UnitResult, spec: SweepSpec | MemorizationSpec, by: dict | None,
           same_weights_as: int | None = None) -> UnitRecord:
        return cls(ckpt.suite, ckpt.model, ckpt.step, ckpt.tokens, ckpt.revision, ckpt.path, spec, result.tasks,
                   result.seconds, result.provenance, by, same_weights_as)

    def to_json(self) -> dict:
        return {
            "suite": self.suite, "model": asdict(self.model), "step": self.step, "tokens": self.tokens,
            "revision": self.revision, "path": self.path, "spec": self.spec.as_dict(),
            "tasks": {task: asdict(result) for task, result in self.tasks.items()}, "seconds": self.seconds,
            **self.provenance, "by": self.by, "same_weights_as": self.same_weights_as,
        }

    @classmethod
    def from_json(cls, data: dict) -> UnitRecord:
        """Raises KeyError, TypeError or ValueError when `data` is not a unit record."""
        known = _field_names(cls) - {"provenance"}
        return cls(
            suite=data["suite"], model=ModelInfo.from_dict(data["model"]), step=int(data["step"]),
            tokens=data.get("tokens"), revision=data.get("revision"), path=data.get("path"),
            spec=spec_from_dict(data["spec"]),
            tasks={task: TaskResult.from_dict(result) for task, result in data["tasks"].items()},
            seconds=data.get("seconds") or {}, by=data.get("by"), same_weights_as=data.get("same_weights_as"),
            provenance={k: v for k, v in data.items() if k not in known},
        )


@dataclass(frozen=True)
class FailureRecord:
    """Why a unit failed, as stored in units/<model>/step<N>.failed.json (removed when the unit later succeeds)."""

    model: str
    step: int
    source: str
    revision: str | None
    reason: str
    by: dict | None = None
    at: float = 0.0  # when it was written (the file's mtime; not stored in the file)

    @property
    def key(self) -> tuple[str, int]:
        return (self.model, self.step)

    @classmethod
    def of(cls, ckpt: Checkpoint, reason: str, by: dict | None) -> FailureRecord:
        return cls(ckpt.model.name, ckpt.step, ckpt.source, ckpt.revision, reason, by)

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "at"}

    @classmethod
    def from_json(cls, data: dict, at: float = 0.0) -> FailureRecord:
        return cls(data["model"], int(data["step"]), data.get("source", ""), data.get("revision"),
                   str(data["reason"]), data.get("by"), at)


# Why the adaptive planner (planning.plan) chose a checkpoint, or why it stopped choosing.
DECISION_RULES = ("coarse", "change", "stop-budget", "stop-converged", "stop-exhausted")


@dataclass(frozen=True)
class Decision:
    """One choice of the planner, or why it stopped (step None). Enough to explain a run; one JSON line each."""

    model: str
    step: int | None  # the checkpoint chosen; None on a stop record
    left: int | None  # the gap it was chosen in: its evaluated (or already chosen) neighbours
    right: int | None
    score: float | None  # the gap's score (gap_scores): CI half-widths the curve moves across it (None: coarse)
    curve: str | None  # the curve with that score
    uncertainty_left: float | None  # the largest score of any gap once this step is in (None: not scored yet)
    rule: str  # one of DECISION_RULES: why this step, or why the planner stopped
    chosen: int  # checkpoints of the model evaluated or chosen, this one included

    @property
    def stopped(self) -> bool:
        return self.step is None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> Decision:
        return cls(**json.loads(line))

    def describe(self) -> str:
        gap = f"({'-' if self.left is None else self.left}, {'-' if self.right is None else self.right})"
        why = (f"{self.curve} moves {self.score:.2f} CI half-widths across {gap}"
               if self.score is not None else f"coarse first pass, gap {gap}")
        if self.stopped:
            return f"{self.model}: stop ({self.rule.removeprefix('stop-')}) after {self.chosen} checkpoints; " + (
                f"largest remaining: {why}" if self.score is not None else why)
        return f"{self.model}: step {self.step} ({self.rule}): {why}"


class UnitState(str, enum.Enum):
    """Where a unit stands in a results folder (decided in one place: Store.unit)."""

    DONE = "done"  # its record parses and matches the folder's spec; its items file is readable, with every row
    FAILED = "failed"  # its last evaluation failed (the failure record says why)
    DAMAGED = "damaged"  # a file of it is unreadable or belongs to another sweep: a sweep sets it aside and redoes it
    PENDING = "pending"  # nothing of it stored yet

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StoredUnit:
    """What a results folder holds for one unit."""

    key: tuple[str, int]
    state: UnitState
    record: UnitRecord | None = None  # when DONE
    failure: FailureRecord | None = None  # when FAILED
    damage: str = ""  # when DAMAGED: what is wrong, naming the file
    written_at: float = 0.0  # when DONE: when its record was written (the file's mtime)


def _field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


# ---------------------------------------------------------------------------------------------------- tables
class Level(str, enum.Enum):
    """What a row of the curve table measures."""

    PARADIGM = "paradigm"  # a minimal-pair task's accuracy (chance 0.5): a BLiMP paradigm or a user task
    PHENOMENON = "phenomenon"  # the mean over a phenomenon's paradigms; task = phenomenon_key(name)
    FIELD = "field"  # the mean over a field's paradigms; task = field_key(name), phenomenon = the field's name
    METRIC = "metric"  # anything else lm-eval reports (lambada's acc, perplexities, ...)

    def __str__(self) -> str:
        return self.value


PHENOMENON_PREFIX = "phenomenon:"
FIELD_PREFIX = "field:"


def phenomenon_key(phenomenon: str) -> str:
    """The `task` value of a phenomenon's row: "phenomenon:<name>", so it never collides with a task name."""
    return PHENOMENON_PREFIX + phenomenon


def field_key(field_name: str) -> str:
    """The `task` value of a field's row: "field:<name>"."""
    return FIELD_PREFIX + field_name


def display_name(task: str) -> str:
    """A row's task for people: a phenomenon's or field's name without its prefix."""
    return task.removeprefix(PHENOMENON_PREFIX).removeprefix(FIELD_PREFIX)


# Per-item results of one unit: units/<model>/step<N>.items.parquet.
# item is lm-eval's doc_id (the position in the task's document list); logp_* are the summed log-probabilities
# lm-eval computed for each sentence; correct = logp_good > logp_bad as lm-eval's acc scored it.
ITEM_COLUMNS = ("model", "step", "task", "item", "logp_good", "logp_bad", "correct")

# The tidy learning-curve table: curves.parquet / curves.csv, one row per (model, step, level, task).
#   model, size, params, deduped: from ModelInfo; step, tokens: the checkpoint;
#   level: a Level value (then task is the task's name, phenomenon_key(name), field_key(name) or "<task>/<metric>";
#     a perplexity task's rows are metrics: "<task>/word_perplexity", "<task>/byte_perplexity",
#     "<task>/bits_per_byte", as lm-eval reports them);
#   phenomenon: BLiMP linguistics_term or a user task's phenomenon (a field row: the field; "" for metrics);
#   acc, acc_stderr, n: accuracy (or the metric's value), its standard error and the number of items;
#   ci_low, ci_high, ci_method: 95% interval and how it was computed ("bootstrap-items" or "stderr");
#   seed: ModelInfo.seed (Pythia's -seedN, a local suite's "seed"); NA for a suite's main run;
#   grouping: on phenomenon rows, which grouping of paradigms into phenomena made them ("data" or "paper",
#     fields.GROUPINGS); "" on other rows.
# Tables written before `seed` and `grouping` existed read with NA and "" there (CURVE_DEFAULTS).
CURVE_COLUMNS = (
    "model", "size", "params", "deduped", "step", "tokens", "level", "task", "phenomenon",
    "acc", "acc_stderr", "ci_low", "ci_high", "ci_method", "n", "seed", "grouping",
)
#   same_weights_as: the step whose results a unit carries because its weights are byte-identical (UnitRecord).
#   skipped_from: the first of the model's checkpoints right before this step that were not evaluated (skipped by
#   an adaptive or cut-short sweep, or failed): the curve is interpolated from the previous evaluated step up to
#   here, and a change seen at this step is only known to happen at or after skipped_from.
#   A table has one only when some row does, so tables of sweeps without duplicates or gaps are as they always were.
CURVE_OPTIONAL_COLUMNS = ("same_weights_as", "skipped_from")
CURVE_OPTIONAL_DTYPES = {"same_weights_as": "Int64", "skipped_from": "Int64"}
CURVE_KEY = ("model", "step", "level", "task")  # one row per key
CURVE_DTYPES = {"params": "Int64", "tokens": "Int64", "step": "int64", "n": "Int64", "deduped": "bool",
                "seed": "Int64"}
CURVE_DEFAULTS = {"seed": None, "grouping": ""}


def with_curve_defaults(table):
    """A curve table (pandas) with the columns added since it was written, at their defaults."""
    missing = {column: value for column, value in CURVE_DEFAULTS.items() if column not in table.columns}
    if not missing:
        return table
    table = table.assign(**missing)
    return table.astype({c: CURVE_DTYPES[c] for c in missing if c in CURVE_DTYPES})


# ---------------------------------------------------------------------------------------------------- memorization
TOKEN_DTYPES = ("uint16", "uint32", "int32")  # of training-data files (trainingdata.py)

# Standard and deduped models are trained on different data files: a model's variant is DATA_VARIANTS[deduped].
DATA_VARIANTS = ("standard", "deduped")


def data_variant(model: ModelInfo) -> str:
    return DATA_VARIANTS[bool(model.deduped)]


# The rows a memorization run scores, one line per (data variant, row), recorded in OUT/rows.parquet:
#   data: the data variant; row: index of the row in that variant's training-data file; seen_at_step: the step whose
#   batch held it (row // rows_per_step); canary: a row the suite planted (else drawn by the stratified sample);
#   repetitions: how often a canary's tokens occur in the file (NA for sampled rows: unknown).
ROW_COLUMNS = ("data", "row", "seen_at_step", "canary", "repetitions")

# Per-row results of one memorization unit: units/<model>/step<N>.items.parquet, one line per row the checkpoint has
# seen (seen_at_step < step).
#   model, step: the checkpoint; row, seen_at_step, canary, repetitions: as in ROW_COLUMNS;
#   memorized: greedy decoding from tokens [0:prefix] reproduces the next `continuation` tokens exactly (EleutherAI's
#   32-extractable with the defaults); match_fraction: EleutherAI's score, the share of greedily generated tokens equal
#   to the true ones (NaN when generation was not run); logp: summed log-probability of the true continuation given
#   the true tokens before; tf_match_fraction: share of continuation tokens that are the argmax given the true tokens
#   before (teacher forced).
MEMORIZATION_COLUMNS = (
    "model", "step", "row", "seen_at_step", "canary", "repetitions", "memorized", "match_fraction", "logp",
    "tf_match_fraction",
)

# A suite's canaries in one data file: one line per occurrence. canary: its id; row: where it occurs; step: the
# step that trains on that row; region: the part of training it was placed in; repetitions: its occurrences in the
# file. A canary is scored at its last occurrence, so every repetition precedes the checkpoints that score it.
CANARY_COLUMNS = ("canary", "row", "step", "region", "repetitions")


@dataclass(frozen=True)
class RowSample:
    """A stratified sample of the rows trained on before `max_step`, and what it takes to draw it again.

    Steps [0, max_step) are cut into `strata` runs of consecutive batches (stratum k: steps
    [k * max_step // strata, (k + 1) * max_step // strata)), and `per_stratum` rows are drawn from each, uniformly
    without replacement, so every part of training is represented equally however rare memorization is."""

    max_step: int
    strata: int
    per_stratum: int
    seed: int
    rows_per_step: int
    rows: tuple[int, ...]  # sorted

    @property
    def params(self) -> dict:
        """The arguments of `trainingdata.sample_rows` that redraw this sample from the same data."""
        return {"max_step": self.max_step, "strata": self.strata, "per_stratum": self.per_stratum, "seed": self.seed}

    def stratum_edges(self) -> np.ndarray:
        """Step boundaries of the strata: stratum k covers steps [edges[k], edges[k + 1])."""
        return np.arange(self.strata + 1) * self.max_step // self.strata

    def as_dict(self) -> dict:
        return asdict(self) | {"rows": list(self.rows)}

    @classmethod
    def from_dict(cls, d: dict) -> RowSample:
        return cls(**(d | {"rows": tuple(int(r) for r in d["rows"])}))
