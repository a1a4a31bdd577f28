"""Suites: where checkpoints come from. One class per family: the Pythia hub suite, any hub repo with step branches,
a local folder of checkpoints.

`resolve_checkpoints(suite, models, steps)` turns a command line into the list of Checkpoints a sweep evaluates;
`audit_checkpoints(suite, checkpoints)` lists what each holds (hub metadata, or hashes of local files) and audits them.
A suite is identified by what it is (`suite_name`, `Suite.fingerprint`), not by how its --suite value was typed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path

from tqdm.auto import tqdm

from trajectories import hub
from trajectories.errors import UserError
from trajectories.files import write_json
from trajectories.integrity import TOKENIZER_FILES, Audit, audit, config_shape, weight_files
from trajectories.schema import Checkpoint, Listing, ModelInfo, WeightFile


class SuiteError(UserError):
    """A suite, model or step the user asked for does not exist; the message lists what does."""


class Absent(Exception):
    """A checkpoint its suite does not have (a step with no branch); the message says so."""


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

    def __init__(self, name: str, models: dict[str, ModelInfo], description: str = "",
                 training_data: dict | None = None):
        self.name, self.models, self.description = name, models, description
        # What the suite says about its training data, for memorization runs: "files" and "canaries" by data variant
        # (absolute paths), "row_len", "rows_per_step", "dtype". None: say it with --data (Pythia's layout by default).
        self.training_data = training_data
        self._branches: dict[str, dict[str, str]] = {}

    def branches(self, repo: str) -> dict[str, str]:
        """A hub repo's branches and their commits, listed once per suite object (get_suite makes a new one)."""
        if repo not in self._branches:
            self._branches[repo] = hub.branches(repo)
        return self._branches[repo]

    def hub_listing(self, ckpt: Checkpoint) -> Listing | None:
        """A hub checkpoint's files from the hub's metadata (LFS sha256 and sizes): no weight file is downloaded."""
        repo = ckpt.model.repo
        commit = self.branches(repo).get(ckpt.revision)
        if commit is None:
            raise Absent(f"step {ckpt.step}: {repo} has no branch {ckpt.revision}")
        listed = hub.commit_files(repo, commit)
        if listed is None:
            return None
        files, config = listed
        by_path = {f.path: f for f in files}
        weights = tuple(WeightFile(p, by_path[p].size, by_path[p].sha256) for p in weight_files(by_path))
        tokenizer = _digest((name, by_path[name].blob_id) for name in TOKENIZER_FILES if name in by_path)
        return Listing(ckpt.model.name, ckpt.step, weights, config_shape(config) if config else None, tokenizer,
                       ckpt.revision, commit)

    def steps(self, model: ModelInfo) -> list[int]:
        raise NotImplementedError

    def checkpoint(self, model: ModelInfo, step: int) -> Checkpoint:
        raise NotImplementedError

    def listing(self, ckpt: Checkpoint) -> Listing | None:
        """What the checkpoint holds, without loading its weights; None when there is no metadata to be had (offline
        and not cached). Raises Absent for a checkpoint the suite does not have."""
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

    def listing(self, ckpt: Checkpoint) -> Listing | None:
        return self.hub_listing(ckpt)

    def canonical_name(self, name: str) -> str:
        return canonical_pythia_name(name)


class HubSuite(Suite):
    """Any hub model repo whose branches name training steps (listing them needs the network)."""

    def __init__(self, repo: str):
        repo = repo.strip("/")
        name = repo.split("/")[-1]
        super().__init__(f"hf:{repo}", {name: ModelInfo(name=name, size=name, repo=repo)})

    def steps(self, model: ModelInfo) -> list[int]:
        return [b.step for b in hub.step_branches(self.branches(model.repo))]

    def checkpoint(self, model: ModelInfo, step: int) -> Checkpoint:
        branch = next(b for b in hub.step_branches(self.branches(model.repo)) if b.step == step)
        return Checkpoint(self.name, model, step, branch.tokens or self.tokens(model, step), revision=branch.name)

    def listing(self, ckpt: Checkpoint) -> Listing | None:
        return self.hub_listing(ckpt)


def _digest(pairs) -> str:
    digest = hashlib.sha256()
    for name, value in pairs:
        digest.update(f"{name}\0{value}\0".encode())
    return digest.hexdigest()


class LocalSuite(Suite):
    """`<dir>/<model>/step<N>/` Hugging Face model folders; optional `<dir>/suite.json` gives tokens per step,
    per-model metadata and the training data (file per data variant, relative to `<dir>`, its layout and canaries)."""

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
        super().__init__(f"local:{root}", models, meta.get("description", ""),
                         _training_data(root, meta.get("training_data")))

    def steps(self, model: ModelInfo) -> list[int]:
        return sorted(int(p.name[4:]) for p in Path(model.path).glob("step*") if p.name[4:].isdigit())

    def fingerprint(self, models: list[ModelInfo]) -> tuple[tuple[str, str], ...]:
        """Per model, a digest of its first checkpoint's architecture and tokenizer, from its listing (a model whose
        first checkpoint has no readable config.json has none: its units fail to load anyway)."""
        digests = []
        for model in models:
            try:
                first = self.listing(self.checkpoint(model, self.steps(model)[0]))
            except (OSError, ValueError):
                continue
            if first.config_shape:
                identity = _digest([("config", first.config_shape), ("tokenizer", first.tokenizer)])
                digests.append((model.name, identity[:16]))
        return tuple(sorted(digests))

    def checkpoint(self, model: ModelInfo, step: int) -> Checkpoint:
        return Checkpoint(self.name, model, step, self.tokens(model, step), path=str(Path(model.path) / f"step{step}"))

    def listing(self, ckpt: Checkpoint) -> Listing:
        folder = Path(ckpt.path)
        names = [p.name for p in folder.iterdir() if p.is_file()]
        weights = weight_files(names)
        digests = local_digests(folder, weights + [n for n in TOKENIZER_FILES if n in names])
        config = folder / "config.json"
        return Listing(ckpt.model.name, ckpt.step, tuple(WeightFile(n, (folder / n).stat().st_size, digests[n])
                                                         for n in weights),
                       config_shape(json.loads(config.read_text())) if config.exists() else None,
                       _digest((n, digests[n]) for n in TOKENIZER_FILES if n in digests))


DIGESTS_FILE = ".trajectories-sha256.json"  # in a local checkpoint folder: its files' sha256, by size and mtime


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(2**24):
            digest.update(chunk)
    return digest.hexdigest()


def local_digests(folder: Path, names: list[str]) -> dict[str, str]:
    """sha256 of files of a local checkpoint folder, each hashed once: the hashes are kept beside them (DIGESTS_FILE),
    valid while a file's size and modification time stay the same."""
    kept_path = folder / DIGESTS_FILE
    try:
        kept = json.loads(kept_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        kept = {}
    digests, changed = {}, False
    for name in names:
        stat = (folder / name).stat()
        entry = kept.get(name)
        if not entry or (entry["size"], entry["mtime_ns"]) != (stat.st_size, stat.st_mtime_ns):
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_of(folder / name)}
            kept[name] = entry
            changed = True
        digests[name] = entry["sha256"]
    if changed:
        try:
            write_json(kept_path, kept)
        except OSError:  # a read-only folder: hash again next time
            pass
    return digests


def _training_data(root: Path, declared) -> dict | None:
    if declared is None:
        return None
    if not isinstance(declared, dict) or not isinstance(declared.get("files", {}), dict):
        raise SuiteError(f"{root / 'suite.json'}: training_data must be an object like {{\"files\": "
                         f"{{\"standard\": \"data/standard\"}}, \"row_len\": 2049, \"rows_per_step\": 1024}}")
    resolved = dict(declared)
    for key in ("files", "canaries"):
        resolved[key] = {variant: str(root / path) for variant, path in declared.get(key, {}).items()}
    return resolved


PYTHIA = PythiaSuite()
SUITE_KINDS = ("pythia", "hf:<org/repo>", "local:<dir>")


def get_suite(spec: str) -> Suite:
    if spec == "pythia":
        return PythiaSuite()  # a new one lists the hub's branches anew
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


def audit_checkpoints(suite: Suite, checkpoints: list[Checkpoint], progress: bool = False) -> Audit:
    """List what each checkpoint holds (no weights downloaded) and audit the listings (integrity.py)."""
    listings, absent = {}, {}
    for ckpt in tqdm(checkpoints, desc="audit", unit="ckpt", disable=not progress, dynamic_ncols=True):
        try:
            listings[ckpt.key] = suite.listing(ckpt)
        except Absent as err:
            absent[ckpt.key] = str(err)
    return audit(listings, absent)


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
