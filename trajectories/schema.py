"""Data contracts shared by every stage: a checkpoint (the unit of work), a sweep spec, and the table schemas.

Defined once here and imported everywhere, so suites, the sweep, the store, curves, plots and analysis agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class ModelInfo:
    """One model of a suite: a size, trained on a stated data variant."""

    name: str  # as used on the command line and in results, e.g. "pythia-160m-deduped" or "tiny"
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


@dataclass(frozen=True)
class Checkpoint:
    """One (model, step): the unit of work a sweep evaluates and stores."""

    suite: str
    model: ModelInfo
    step: int
    tokens: int | None = None
    revision: str | None = None  # hub branch, e.g. "step1000"; None for local checkpoints
    path: str | None = None  # local HF model folder; None for hub checkpoints

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
class SweepSpec:
    """What a results folder measures. A sweep into an OUT made with a different spec is refused."""

    suite: str
    tasks: tuple[str, ...]
    limit: int | None = None
    dtype: str = "auto"
    trust_remote_code: bool = False

    def as_dict(self) -> dict:
        return asdict(self) | {"tasks": list(self.tasks)}

    @classmethod
    def from_dict(cls, d: dict) -> SweepSpec:
        return cls(**(d | {"tasks": tuple(d["tasks"])}))


@dataclass(frozen=True)
class EvalSettings:
    """How to run a checkpoint; does not change results beyond float noise, so it is not part of the spec."""

    device: str = "cpu"
    batch_size: int | str = "auto"
    blimp_dir: str | None = None
    evict: str = "auto"  # delete downloaded hub checkpoints once evaluated: "auto" (those over 2 GB), "always", "never"
    extra: dict = field(default_factory=dict)


# Per-item results of one unit: units/<model>/step<N>.items.parquet.
# item is lm-eval's doc_id (the position in the task's document list); logp_* are the summed log-probabilities
# lm-eval computed for each sentence; correct = logp_good > logp_bad as lm-eval's acc scored it.
ITEM_COLUMNS = ("model", "step", "task", "item", "logp_good", "logp_bad", "correct")

# The tidy learning-curve table: curves.parquet / curves.csv, one row per (model, step, task).
#   model, size, params, deduped: from ModelInfo; step, tokens: the checkpoint;
#   level: "paradigm" for a task's own row, "phenomenon" for the mean over a phenomenon's paradigms
#     (then task = the phenomenon name prefixed by "phenomenon:");
#   task: lm-eval task name; phenomenon: BLiMP linguistics_term or a user task's phenomenon ("" if none);
#   acc, acc_stderr, n: accuracy, its standard error and the number of items;
#   ci_low, ci_high, ci_method: 95% interval and how it was computed ("bootstrap-items" or "stderr").
CURVE_COLUMNS = (
    "model", "size", "params", "deduped", "step", "tokens", "level", "task", "phenomenon",
    "acc", "acc_stderr", "ci_low", "ci_high", "ci_method", "n",
)
