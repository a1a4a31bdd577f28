"""Suites: where checkpoints come from. One class per family: the Pythia hub suite, any hub repo with step branches,
a local folder of checkpoints.

`resolve_checkpoints(suite, models, steps)` turns a command line into the list of Checkpoints a sweep evaluates.
A suite is identified by what it is (`suite_name`, `Suite.fingerprint`), not by how its --suite value was typed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path

from trajectories import hub
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


# ---------------------------------------------------------------------------------------------------- steps
LOG_STEPS = (0, *(2**i for i in range(10)), 1000)
STEPS_HELP = "all | log | final | every:K | A:B:K | comma list, e.g. 0,512,143000"


def select_steps(spec: str, available: list[int], model: str) -> list[int]:
    """The steps of `available` that `spec` names. Naming a step the model lacks is an error listing what it has; a
    range `A:B:K` takes the steps the model has among A, A+K, ... up to B."""
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
        if a > b:
            raise SuiteError(f"bad --steps {spec!r}: the range starts at {a}, after its end {b}; expected A:B:K with "
                             "A <= B")
        wanted = range(a, b + 1, _positive_int(str(k), spec))  # a range object: membership is arithmetic
        return [s for s in available if s in wanted]
    if not re.fullmatch(r"\d+(,\d+)*", spec.replace(" ", "")):
        raise SuiteError(f"bad --steps {spec!r}; expected {STEPS_HELP}")
    wanted = sorted({int(x) for x in spec.replace(" ", "").split(",")})
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


# ---------------------------------------------------------------------------------------------------- identity
# config.json keys that differ between checkpoints of one model without changing its shape.
VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


def config_shape(folder: Path) -> str:
    """A checkpoint's architecture: its config.json without the keys that differ between checkpoints of a model."""
    config = json.loads((Path(folder) / "config.json").read_text())
    return json.dumps({k: v for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS}, sort_keys=True)


def tokenizer_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (Path(folder) / name).exists():
            digest.update(name.encode() + (Path(folder) / name).read_bytes())
    return digest.hexdigest()


def suite_name(spec: str) -> str:
    """What a --suite value names, however it was typed: `local:suite`, `local:./suite/` and `local:/abs/suite` are
    one suite, named by its resolved folder."""
    if spec.startswith("local:"):
        return f"local:{Path(spec.removeprefix('local:')).expanduser().resolve()}"
    if spec.startswith("hf:"):
        return f"hf:{spec.removeprefix('hf:').strip('/')}"
    return spec


# ---------------------------------------------------------------------------------------------------- suites
class Suite:
    """A named set of models, each with the steps it has checkpoints for. A family of suites is one subclass: it
    says which steps a model has and where each checkpoint is."""

    def __init__(self, name: str, models: dict[str, ModelInfo], description: str = ""):
        self.name, self.models, self.description = name, models, description

    def steps(self, model: ModelInfo) -> list[int]:
        raise NotImplementedError

    def checkpoint(self, model: ModelInfo, step: int) -> Checkpoint:
        raise NotImplementedError

    def canonical_name(self, name: str) -> str:
        """The model name `name` stands for (a family with aliases maps them here)."""
        return name

    def model(self, name: str) -> ModelInfo:
        key = self.canonical_name(name)
        if key in self.models:
            return self.models[key]
        close = difflib.get_close_matches(key, list(self.models), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SuiteError(f"suite {self.name!r} has no model {name!r}{hint} Models: {', '.join(self.models)}")

    @staticmethod
    def tokens(model: ModelInfo, step: int) -> int | None:
        return step * model.tokens_per_step if model.tokens_per_step else None

    def fingerprint(self, models: list[ModelInfo]) -> tuple[tuple[str, str], ...]:
        """(model, digest of what its checkpoints are) for SweepSpec.suite_fingerprint; a hub repo is named by its
        id alone (each unit records the commit it evaluated)."""
        return ()


class PythiaSuite(Suite):
    """EleutherAI's Pythia on the hub: a fixed schedule of 154 `step<N>` branches per model."""

    def __init__(self):
        super().__init__("pythia", _pythia_models(),
                         "EleutherAI Pythia on the Hugging Face Hub (154 checkpoints per model)")

    def steps(self, model: ModelInfo) -> list[int]:
        return list(PYTHIA_STEPS)

    def checkpoint(self, model: ModelInfo, step: int) -> Checkpoint:
        return Checkpoint(self.name, model, step, self.tokens(model, step), revision=f"step{step}")

    def canonical_name(self, name: str) -> str:
        return canonical_pythia_name(name)


class HubSuite(Suite):
    """Any hub model repo whose branches name training steps (listing them needs the network)."""

    def __init__(self, repo: str):
        repo = repo.strip("/")
        name = repo.split("/")[-1]
        super().__init__(f"hf:{repo}", {name: ModelInfo(name=name, size=name, repo=repo)})

    def steps(self, model: ModelInfo) -> list[int]:
        return [b.step for b in hub.step_branches(model.repo)]

    def checkpoint(self, model: ModelInfo, step: int) -> Checkpoint:
        branch = next(b for b in hub.step_branches(model.repo) if b.step == step)
        return Checkpoint(self.name, model, step, branch.tokens or self.tokens(model, step), revision=branch.name)


class LocalSuite(Suite):
    """`<dir>/<model>/step<N>/` Hugging Face model folders; optional `<dir>/suite.json` gives tokens per step and
    per-model metadata."""

    def __init__(self, folder: str | Path):
        root = Path(folder).expanduser().resolve()
        if not root.is_dir():
            raise SuiteError(f"local suite folder {root} does not exist")
        meta = {}
        if (root / "suite.json").exists():
            try:
                meta = json.loads((root / "suite.json").read_text())
            except json.JSONDecodeError as err:
                raise SuiteError(f"{root / 'suite.json'}: not valid JSON ({err})") from err
        models = {}
        allowed = {f for f in ModelInfo.__dataclass_fields__ if f not in ("name", "path", "repo")}
        for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("step*"))):
            info = meta.get("models", {}).get(model_dir.name, {})
            fields = {k: v for k, v in info.items() if k in allowed}
            fields.setdefault("size", model_dir.name.removesuffix("-deduped"))
            fields.setdefault("deduped", model_dir.name.endswith("-deduped"))
            fields.setdefault("tokens_per_step", meta.get("tokens_per_step"))
            models[model_dir.name] = ModelInfo(name=model_dir.name, path=str(model_dir), **fields)
        if not models:
            raise SuiteError(f"local suite folder {root} holds no <model>/step<N>/ checkpoint folders")
        super().__init__(f"local:{root}", models, meta.get("description", ""))

    def steps(self, model: ModelInfo) -> list[int]:
        return sorted(int(p.name[4:]) for p in Path(model.path).glob("step*") if p.name[4:].isdigit())

    def fingerprint(self, models: list[ModelInfo]) -> tuple[tuple[str, str], ...]:
        """Per model, a digest of its first checkpoint's architecture and tokenizer (a model without a readable
        config.json has none: its units fail to load anyway)."""
        digests = []
        for model in models:
            folder = next((Path(model.path) / f"step{s}" for s in self.steps(model)
                           if (Path(model.path) / f"step{s}" / "config.json").is_file()), None)
            try:
                identity = config_shape(folder) + tokenizer_fingerprint(folder) if folder else None
            except (OSError, ValueError):
                identity = None
            if identity:
                digests.append((model.name, hashlib.sha256(identity.encode()).hexdigest()[:16]))
        return tuple(sorted(digests))

    def checkpoint(self, model: ModelInfo, step: int) -> Checkpoint:
        return Checkpoint(self.name, model, step, self.tokens(model, step), path=str(Path(model.path) / f"step{step}"))


PYTHIA = PythiaSuite()
SUITE_KINDS = ("pythia", "hf:<org/repo>", "local:<dir>")


def get_suite(spec: str) -> Suite:
    if spec == "pythia":
        return PYTHIA
    if spec.startswith("local:"):
        return LocalSuite(spec.removeprefix("local:"))
    if spec.startswith("hf:") and "/" in spec:
        return HubSuite(spec.removeprefix("hf:"))
    raise SuiteError(f"unknown suite {spec!r}; valid suites: {', '.join(SUITE_KINDS)}")


def model_names(models: str | list[str] | None) -> list[str] | None:
    """The model names of a --models value (comma-separated), each once; None: every model of the suite."""
    if models is None:
        return None
    names = [m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip()]
    if not names:
        raise SuiteError(f"--models {models!r} names no model; give comma-separated names, or leave it out for "
                         "every model of the suite")
    return list(dict.fromkeys(names))


def resolve_checkpoints(suite: Suite, models: list[str] | None, steps: str = "all") -> list[Checkpoint]:
    """Every (model, step) the command line names, in model order then step order, each once."""
    chosen = list({m.name: m for m in map(suite.model, models)}.values()) if models else list(suite.models.values())
    if not chosen:
        raise SuiteError(f"suite {suite.name!r}: choose models with --models; it has {', '.join(suite.models)}")
    steps_of = {m.name: suite.steps(m) for m in chosen}
    checkpoints = [suite.checkpoint(m, s) for m in chosen for s in select_steps(steps, steps_of[m.name], m.name)]
    if not checkpoints:
        have = "; ".join(f"{name}: {_short(sorted(s))}" for name, s in steps_of.items())
        raise SuiteError(f"--steps {steps!r} selects no checkpoint; the models have steps {have}")
    return checkpoints
