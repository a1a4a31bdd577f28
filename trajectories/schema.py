"""Data contracts shared by every stage, defined once here: the unit of work (a checkpoint), what a results folder
measures (the sweep spec), how units are run (settings), the records a unit leaves in the store, and the columns of
every table.

Records round-trip through JSON in the layout the store has always written, so older results folders still read.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


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


@dataclass(frozen=True)
class SweepSpec:
    """What a results folder measures. A sweep into an OUT made with a different spec is refused.

    `suite` says what the suite is, however it was typed: "pythia", "hf:<org/repo>", or "local:<resolved folder>"
    (folders written before suites were identified hold the string as typed then). `suite_fingerprint` holds, per
    model of a local suite, a digest of its checkpoints' architecture and tokenizer, so a folder rebuilt with other
    models under the same path is told apart; steps are left out, so a suite whose training goes on stays itself."""

    suite: str
    tasks: tuple[str, ...]
    limit: int | None = None
    dtype: str = "auto"
    trust_remote_code: bool = False
    suite_fingerprint: tuple[tuple[str, str], ...] = ()  # sorted (model, digest) pairs

    def as_dict(self) -> dict:
        return asdict(self) | {"tasks": list(self.tasks), "suite_fingerprint": dict(self.suite_fingerprint)}

    @classmethod
    def from_dict(cls, d: dict) -> SweepSpec:
        """Raises KeyError, TypeError, ValueError or AttributeError when `d` is not a spec."""
        return cls(**(d | {"tasks": tuple(d["tasks"]),
                           "suite_fingerprint": tuple(sorted((d.get("suite_fingerprint") or {}).items()))}))

    def conflicts(self, other: SweepSpec, suite_aliases: tuple[str, ...] = ()) -> dict[str, tuple]:
        """{field: (mine, other's)} for what makes `other`'s results incomparable with mine. `suite_aliases`: other
        names my suite had (as typed before suites were identified). Fingerprints are compared for the models both
        have: a suite may gain models and steps."""
        found = {f: (getattr(self, f), getattr(other, f)) for f in ("tasks", "limit", "dtype", "trust_remote_code")
                 if getattr(self, f) != getattr(other, f)}
        if other.suite != self.suite and other.suite not in suite_aliases:
            found["suite"] = (self.suite, other.suite)
        mine, theirs = dict(self.suite_fingerprint), dict(other.suite_fingerprint)
        if changed := sorted(m for m in mine.keys() & theirs.keys() if mine[m] != theirs[m]):
            found["suite_fingerprint"] = ({m: mine[m] for m in changed}, {m: theirs[m] for m in changed})
        return found


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
    spec: SweepSpec
    tasks: dict[str, TaskResult]
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
    def of(cls, ckpt: Checkpoint, result: UnitResult, spec: SweepSpec, by: dict | None,
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
            spec=SweepSpec.from_dict(data["spec"]),
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
    METRIC = "metric"  # anything else lm-eval reports (lambada's acc, perplexities, ...)

    def __str__(self) -> str:
        return self.value


PHENOMENON_PREFIX = "phenomenon:"


def phenomenon_key(phenomenon: str) -> str:
    """The `task` value of a phenomenon's row: "phenomenon:<name>", so it never collides with a task name."""
    return PHENOMENON_PREFIX + phenomenon


def display_name(task: str) -> str:
    """A row's task for people: a phenomenon's name without its prefix."""
    return task.removeprefix(PHENOMENON_PREFIX)


# Per-item results of one unit: units/<model>/step<N>.items.parquet.
# item is lm-eval's doc_id (the position in the task's document list); logp_* are the summed log-probabilities
# lm-eval computed for each sentence; correct = logp_good > logp_bad as lm-eval's acc scored it.
ITEM_COLUMNS = ("model", "step", "task", "item", "logp_good", "logp_bad", "correct")

# The tidy learning-curve table: curves.parquet / curves.csv, one row per (model, step, level, task).
#   model, size, params, deduped: from ModelInfo; step, tokens: the checkpoint;
#   level: a Level value (then task is the task's name, phenomenon_key(name), or "<task>/<metric>");
#   phenomenon: BLiMP linguistics_term or a user task's phenomenon ("" for metrics);
#   acc, acc_stderr, n: accuracy (or the metric's value), its standard error and the number of items;
#   ci_low, ci_high, ci_method: 95% interval and how it was computed ("bootstrap-items" or "stderr").
CURVE_COLUMNS = (
    "model", "size", "params", "deduped", "step", "tokens", "level", "task", "phenomenon",
    "acc", "acc_stderr", "ci_low", "ci_high", "ci_method", "n",
)
#   same_weights_as: the step whose results a unit carries because its weights are byte-identical (UnitRecord).
#   skipped_from: the first of the model's checkpoints right before this step that were not evaluated (skipped by
#   an adaptive or cut-short sweep, or failed): the curve is interpolated from the previous evaluated step up to
#   here, and a change seen at this step is only known to happen at or after skipped_from.
#   A table has one only when some row does, so tables of sweeps without duplicates or gaps are as they always were.
CURVE_OPTIONAL_COLUMNS = ("same_weights_as", "skipped_from")
CURVE_OPTIONAL_DTYPES = {"same_weights_as": "Int64", "skipped_from": "Int64"}
CURVE_KEY = ("model", "step", "level", "task")  # one row per key
CURVE_DTYPES = {"params": "Int64", "tokens": "Int64", "step": "int64", "n": "Int64", "deduped": "bool"}
