"""Suites: where checkpoints come from (the Pythia hub suite, any hub repo with step branches, a local folder).

`resolve_checkpoints(suite, models, steps)` turns a command line into the list of Checkpoints a sweep evaluates.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from trajectories.errors import UserError
from trajectories.schema import Checkpoint, ModelInfo


class SuiteError(UserError):
    """A suite, model or step the user asked for does not exist; the message lists what does."""


# ---------------------------------------------------------------------------------------------------- Pythia
PYTHIA_TOKENS_PER_STEP = 2_097_152  # 1024 sequences x 2048 tokens
PYTHIA_STEPS = (0, *(2**i for i in range(10)), *range(1000, 143_001, 1000))
# size: (layers, d_model, heads, d_head, learning rate, parameters), from the Pythia paper and model cards.
PYTHIA_SIZES = {
    "14m": (6, 128, 4, 32, 1.0e-3, 14_067_712),
    "31m": (6, 256, 8, 32, 1.0e-3, 30_494_720),
    "70m": (6, 512, 8, 64, 1.0e-3, 70_426_624),
    "160m": (12, 768, 12, 64, 6.0e-4, 162_322_944),
    "410m": (24, 1024, 16, 64, 3.0e-4, 405_334_016),
    "1b": (16, 2048, 8, 256, 3.0e-4, 1_011_781_632),
    "1.4b": (24, 2048, 16, 128, 2.0e-4, 1_414_647_808),
    "2.8b": (32, 2560, 32, 80, 1.6e-4, 2_775_208_960),
    "6.9b": (32, 4096, 32, 128, 1.2e-4, 6_857_302_016),
    "12b": (36, 5120, 40, 128, 1.2e-4, 11_846_072_320),
}
PYTHIA_DEDUPED_SIZES = ("70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
PYTHIA_SEEDED_SIZES = ("14m", "31m", "70m", "160m", "410m")
# Names used in the suite's first release (its original README), still found in papers.
PYTHIA_OLD_NAMES = {
    "19m": "70m", "125m": "160m", "350m": "410m", "800m": "1b",
    "1.3b": "1.4b", "2.7b": "2.8b", "6.7b": "6.9b", "13b": "12b",
}


def _pythia_models() -> dict[str, ModelInfo]:
    models = {}
    for size, (layers, d_model, heads, d_head, lr, params) in PYTHIA_SIZES.items():
        variants = [("", False, None)]
        if size in PYTHIA_DEDUPED_SIZES:
            variants.append(("-deduped", True, None))
        if size in PYTHIA_SEEDED_SIZES:
            variants += [(f"-seed{seed}", False, seed) for seed in range(1, 10)]
        for suffix, deduped, seed in variants:
            name = size + suffix
            models[name] = ModelInfo(
                name=name, size=size, params=params, deduped=deduped, seed=seed, layers=layers, d_model=d_model,
                heads=heads, d_head=d_head, learning_rate=lr, tokens_per_step=PYTHIA_TOKENS_PER_STEP,
                train_dtype="bfloat16" if size == "1b" else "float16",
                repo=f"EleutherAI/pythia-{name}",
            )
    return models


def canonical_pythia_name(name: str) -> str:
    """Accept "160m", "pythia-160m", "EleutherAI/pythia-160m-deduped", "19M", "19M Dedup" and similar."""
    key = name.strip().lower().removeprefix("eleutherai/").removeprefix("pythia-")
    key = re.sub(r"[\s_]+", "-", key)
    key = re.sub(r"-dedup(ed)?$", "-deduped", key)
    size, sep, rest = key.partition("-")
    return PYTHIA_OLD_NAMES.get(size, size) + sep + rest


# ---------------------------------------------------------------------------------------------------- hub repos
@dataclass(frozen=True)
class BranchStep:
    """A hub branch that names a training step."""

    name: str
    step: int
    stage: int = 1
    tokens: int | None = None


_BRANCH = re.compile(
    r"^(?:stage(?P<stage>\d+)-)?step(?P<step>\d+)(?:-tokens(?P<tokens>\d+(?:\.\d+)?)(?P<unit>[BMK])?)?$"
)
_TOKEN_UNITS = {"B": 10**9, "M": 10**6, "K": 10**3, None: 1}


def parse_branches(names: list[str]) -> list[BranchStep]:
    """Branches of a hub repo that name training steps, ordered by (stage, step); other branches are ignored.

    Understands Pythia's `step1000`, OLMo's `step1000-tokens4B` and OLMo 2's `stage1-step1000-tokens5B`.
    """
    parsed = []
    for name in names:
        match = _BRANCH.match(name)
        if not match:
            continue
        tokens = match["tokens"] and round(float(match["tokens"]) * _TOKEN_UNITS[match["unit"]])
        parsed.append(BranchStep(name, int(match["step"]), int(match["stage"] or 1), tokens))
    return sorted(parsed, key=lambda b: (b.stage, b.step))


@functools.cache
def _hub_branches(repo: str) -> list[str]:
    from huggingface_hub import list_repo_refs

    return [branch.name for branch in list_repo_refs(repo).branches]


# ---------------------------------------------------------------------------------------------------- steps
LOG_STEPS = (0, *(2**i for i in range(10)), 1000)
STEPS_HELP = "all | log | final | every:K | A:B:K | comma list, e.g. 0,512,143000"


def select_steps(spec: str, available: list[int], model: str) -> list[int]:
    """The steps of `available` that `spec` names. Naming a step the model lacks is an error listing what it has."""
    available = sorted(available)
    spec = spec.strip()
    if not available:
        raise SuiteError(f"model {model!r} has no checkpoints")
    if spec == "all":
        return available
    if spec == "final":
        return available[-1:]
    if spec == "log":
        return [s for s in available if s in LOG_STEPS]
    if spec.startswith("every:"):
        k = _positive_int(spec.removeprefix("every:"), spec)
        return [s for s in available if s % k == 0]
    if re.fullmatch(r"\d+:\d+:\d+", spec):
        a, b, k = (int(x) for x in spec.split(":"))
        wanted = list(range(a, b + 1, _positive_int(str(k), spec)))
    elif re.fullmatch(r"\d+(,\d+)*", spec.replace(" ", "")):
        wanted = sorted({int(x) for x in spec.replace(" ", "").split(",")})
    else:
        raise SuiteError(f"bad --steps {spec!r}; expected {STEPS_HELP}")
    missing = [s for s in wanted if s not in set(available)]
    if missing:
        raise SuiteError(f"model {model!r} has no step {_short(missing)}; it has steps {_short(available)}")
    return wanted


def _positive_int(text: str, spec: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise SuiteError(f"bad --steps {spec!r}: the interval must be a positive integer")
    return int(text)


def _short(steps: list[int], head: int = 12) -> str:
    if len(steps) <= head:
        return ", ".join(map(str, steps))
    return ", ".join(map(str, steps[: head // 2])) + f", … ({len(steps)} in all) …, " + ", ".join(
        map(str, steps[-head // 2 :])
    )


# ---------------------------------------------------------------------------------------------------- suites
@dataclass(frozen=True)
class Suite:
    """A named set of models, each with the steps it has checkpoints for."""

    name: str
    models: dict[str, ModelInfo]
    description: str = ""

    def steps(self, model: ModelInfo) -> list[int]:
        if self.name == "pythia":
            return list(PYTHIA_STEPS)
        if model.path:
            return sorted(int(p.name[4:]) for p in Path(model.path).glob("step*") if p.name[4:].isdigit())
        return [b.step for b in self._branches(model)]

    def _branches(self, model: ModelInfo) -> list[BranchStep]:
        branches = parse_branches(_hub_branches(model.repo))
        first_stage = [b for b in branches if b.stage == branches[0].stage] if branches else []
        return first_stage

    def checkpoint(self, model: ModelInfo, step: int) -> Checkpoint:
        tokens = step * model.tokens_per_step if model.tokens_per_step else None
        if model.path:
            return Checkpoint(self.name, model, step, tokens, path=str(Path(model.path) / f"step{step}"))
        if self.name == "pythia":
            return Checkpoint(self.name, model, step, tokens, revision=f"step{step}")
        branch = next(b for b in self._branches(model) if b.step == step)
        return Checkpoint(self.name, model, step, branch.tokens or tokens, revision=branch.name)

    def model(self, name: str) -> ModelInfo:
        key = canonical_pythia_name(name) if self.name == "pythia" else name
        if key in self.models:
            return self.models[key]
        close = difflib.get_close_matches(key, list(self.models), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SuiteError(f"suite {self.name!r} has no model {name!r}{hint} Models: {', '.join(self.models)}")


def local_suite(folder: str | Path) -> Suite:
    """`<dir>/<model>/step<N>/` HF model folders; optional `<dir>/suite.json` gives tokens per step and metadata."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise SuiteError(f"local suite folder {root} does not exist")
    meta = {}
    if (root / "suite.json").exists():
        try:
            meta = json.loads((root / "suite.json").read_text())
        except json.JSONDecodeError as err:
            raise SuiteError(f"{root / 'suite.json'}: not valid JSON ({err})") from err
    tokens_per_step = meta.get("tokens_per_step")
    models = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("step*"))):
        info = meta.get("models", {}).get(model_dir.name, {})
        allowed = {f for f in ModelInfo.__dataclass_fields__ if f not in ("name", "path", "repo")}
        fields = {k: v for k, v in info.items() if k in allowed}
        fields.setdefault("size", model_dir.name.removesuffix("-deduped"))
        fields.setdefault("deduped", model_dir.name.endswith("-deduped"))
        fields.setdefault("tokens_per_step", tokens_per_step)
        models[model_dir.name] = ModelInfo(name=model_dir.name, path=str(model_dir), **fields)
    if not models:
        raise SuiteError(f"local suite folder {root} holds no <model>/step<N>/ checkpoint folders")
    return Suite(f"local:{folder}", models, meta.get("description", ""))


def hub_suite(repo: str) -> Suite:
    """Any hub model repo whose branches name training steps (needs the network)."""
    name = repo.rstrip("/").split("/")[-1]
    return Suite(f"hf:{repo}", {name: ModelInfo(name=name, size=name, repo=repo)})


PYTHIA = Suite("pythia", _pythia_models(), "EleutherAI Pythia on the Hugging Face Hub (154 checkpoints per model)")
SUITE_KINDS = ("pythia", "hf:<org/repo>", "local:<dir>")


def get_suite(spec: str) -> Suite:
    if spec == "pythia":
        return PYTHIA
    if spec.startswith("local:"):
        return local_suite(spec.removeprefix("local:"))
    if spec.startswith("hf:") and "/" in spec:
        return hub_suite(spec.removeprefix("hf:"))
    raise SuiteError(f"unknown suite {spec!r}; valid suites: {', '.join(SUITE_KINDS)}")


def resolve_checkpoints(suite: Suite, models: list[str] | None, steps: str = "all") -> list[Checkpoint]:
    """Every (model, step) the command line names, in model order then step order."""
    chosen = [suite.model(m) for m in models] if models else list(suite.models.values())
    if not chosen:
        raise SuiteError(f"suite {suite.name!r}: choose models with --models; it has {', '.join(suite.models)}")
    return [suite.checkpoint(m, s) for m in chosen for s in select_steps(steps, suite.steps(m), m.name)]
