"""Evaluate one checkpoint on a fixed set of tasks through lm-eval's evaluator and its Hugging Face model class."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import resource
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from trajectories.lm import SweepLM
from trajectories.schema import ITEM_COLUMNS, Checkpoint, EvalSettings, SweepSpec
from trajectories.tasks import TaskCatalog

# config.json keys that differ between checkpoints of one model without changing its shape.
VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


class EvaluationError(RuntimeError):
    """A checkpoint could not be evaluated (load failure, NaN log-probs, ...): the unit is recorded as failed."""


@dataclass
class UnitResult:
    tasks: dict[str, dict]  # task -> {acc, acc_stderr, n, phenomenon, lm_eval: lm-eval's own metric dict}
    items: pd.DataFrame  # ITEM_COLUMNS
    seconds: dict[str, float]  # per phase
    provenance: dict


def _tune_lm_eval() -> None:
    """Quiet lm-eval (a sweep draws one bar over checkpoints) and stop it recompiling the same Jinja templates."""
    import logging

    import datasets
    import lm_eval.api.task
    import lm_eval.utils
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    # lm-eval builds each task's requests under its own bar, which cannot be switched off by argument.
    lm_eval.api.task.tqdm = functools.partial(lm_eval.api.task.tqdm, disable=True)
    for name in ("lm-eval", "lm_eval", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # lm-eval compiles a task's templates afresh for every document (most of its per-checkpoint overhead on small
    # models); a compiled template is a pure function of its source, so compile each once.
    env = lm_eval.utils.env
    if not hasattr(env.from_string, "cache_info"):
        env.from_string = functools.lru_cache(maxsize=4096)(env.from_string)


def _reuse_task_work(task) -> None:
    """Build a task's documents and requests once and hand the same ones (requests emptied of responses) to every
    later evaluation: they depend only on the task and the evaluation options, never on the checkpoint."""
    # lm-eval re-reads the documents from the Arrow table, row by row, for every evaluation; a list reads at once.
    docs = list(task.eval_docs)
    if task.has_test_docs():
        task.test_docs = lambda: docs
    else:
        task.validation_docs = lambda: docs
    # Scoring renders each document's choices again (a Jinja template for BLiMP); those documents are now fixed.
    doc_to_choice, rendered = task.doc_to_choice, {}

    def choices_once(doc, *args, **kwargs):
        if args or kwargs:
            return doc_to_choice(doc, *args, **kwargs)
        cached = rendered.get(id(doc))
        if cached is None or cached[0] is not doc:
            cached = rendered[id(doc)] = (doc, doc_to_choice(doc))
        return cached[1]

    task.doc_to_choice = choices_once
    build = task.build_all_requests
    built: dict[str, list] = {}

    def build_once(**options):
        key = repr(sorted(options.items()))
        if key not in built:
            build(**options)
            built[key] = task._instances
        for instance in built[key]:
            instance.resps.clear()
            instance.filtered_resps.clear()
        task._instances = built[key]

    task.build_all_requests = build_once


def versions() -> dict[str, str]:
    import lm_eval
    import torch
    import transformers

    from trajectories import __version__

    return {
        "trajectories": __version__, "lm_eval": lm_eval.__version__, "transformers": transformers.__version__,
        "torch": torch.__version__,
    }


@dataclass
class FetchedCheckpoint:
    """A checkpoint on local disk with its model built on the CPU, ready to be moved to the device."""

    folder: Path
    shape: str  # config.json without the keys that differ between checkpoints of one model
    tokenizer: str  # fingerprint of the tokenizer files
    model: torch.nn.Module
    commit: str | None
    seconds: float

    @property
    def identity(self) -> tuple[str, str]:
        """Checkpoints with equal identity can be served by one SweepLM."""
        return self.shape, self.tokenizer


def local_folder(ckpt: Checkpoint) -> tuple[Path, str | None]:
    """The checkpoint's files on disk, downloading a hub revision (weights in one format only) into the HF cache."""
    if ckpt.path:
        return Path(ckpt.path), None
    from huggingface_hub import list_repo_files, snapshot_download

    files = list_repo_files(ckpt.model.repo, revision=ckpt.revision)
    weights = "*.safetensors" if any(f.endswith(".safetensors") for f in files) else "*.bin"
    folder = Path(snapshot_download(
        ckpt.model.repo, revision=ckpt.revision, allow_patterns=["*.json", "*.txt", "*.model", weights],
    ))
    return folder, folder.name  # snapshots/<commit>


EVICT_AUTO_BYTES = 2 * 2**30
EVICT_CHOICES = ("auto", "always", "never")


def evict_if_asked(folder: Path, policy: str) -> bool:
    """Delete a downloaded hub revision (`<cache>/models--org--name/snapshots/<commit>`) and the blobs only it used,
    so a sweep over a large model holds at most the current and the prefetched checkpoint on disk."""
    from huggingface_hub import scan_cache_dir

    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())  # follows the snapshot's blob links
    if policy == "never" or (policy == "auto" and size < EVICT_AUTO_BYTES):
        return False
    scan_cache_dir(folder.parents[2]).delete_revisions(folder.name).execute()
    return True


def fetch(ckpt: Checkpoint, dtype: str, trust_remote_code: bool) -> FetchedCheckpoint:
    """Download (hub) and build a checkpoint's model on the CPU; run in the background for the next checkpoint."""
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    folder, commit = local_folder(ckpt)
    config = json.loads((folder / "config.json").read_text())
    shape = json.dumps({k: v for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS}, sort_keys=True)
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (folder / name).exists():
            digest.update(name.encode() + (folder / name).read_bytes())
    # transformers reads safetensors, and .bin files only with torch.load(weights_only=True).
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=trust_remote_code).eval()
    return FetchedCheckpoint(
        folder, shape, digest.hexdigest(), model, commit, time.perf_counter() - started
    )


class Evaluator:
    """Evaluates checkpoints one after another, paying the fixed costs once: lm-eval's task objects are built once,
    one lm-eval model object serves every checkpoint of a model (only its torch module changes), tokenizations are
    remembered, and the next checkpoint is downloaded and built in the background while the current one runs."""

    def __init__(self, spec: SweepSpec, settings: EvalSettings, catalog: TaskCatalog | None = None):
        _tune_lm_eval()
        self.spec, self.settings = spec, settings
        self.catalog = catalog or TaskCatalog(blimp_dir=settings.blimp_dir)
        self.task_dict = self.catalog.load(list(spec.tasks))
        for task in self.task_dict["tasks"].values():
            _reuse_task_work(task)
        self.phenomena = {task: self.catalog.phenomenon(task) for task in spec.tasks}
        self.lm: SweepLM | None = None
        self.lm_identity: tuple | None = None
        self.token_caches: dict[str, dict] = {}  # tokenizer fingerprint -> tokenizations, shared across models
        self.model_loads = 0  # lets tests prove that a resume evaluates nothing
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._prefetched: tuple[tuple[str, int], Future] | None = None

    def dtype(self, ckpt: Checkpoint) -> str:
        if self.spec.dtype != "auto":
            return self.spec.dtype
        if not self.settings.device.startswith("cuda"):
            return "float32"  # half precision on a CPU is slow and loses the small log-prob differences we measure
        return ckpt.model.train_dtype or "auto"  # "auto": the dtype in the checkpoint's config

    def prefetch(self, ckpt: Checkpoint) -> None:
        """Start building `ckpt` in the background; at most one checkpoint is held ahead, bounding memory."""
        future = self._prefetcher.submit(fetch, ckpt, self.dtype(ckpt), self.spec.trust_remote_code)
        self._prefetched = (ckpt.key, future)

    def load_model(self, ckpt: Checkpoint) -> tuple[SweepLM, FetchedCheckpoint]:
        if self._prefetched and self._prefetched[0] == ckpt.key:
            fetched = self._prefetched[1].result()
        else:
            fetched = fetch(ckpt, self.dtype(ckpt), self.spec.trust_remote_code)
        self._prefetched = None
        self.model_loads += 1
        model = fetched.model.to(self.settings.device)
        if self.lm is not None and fetched.identity == self.lm_identity:
            self.lm._model = model
        else:
            self.lm = SweepLM(
                pretrained=model, tokenizer=str(fetched.folder), batch_size=self.settings.batch_size,
                trust_remote_code=self.spec.trust_remote_code,
                token_cache=self.token_caches.setdefault(fetched.tokenizer, {}), **self.settings.extra,
            )
            self.lm_identity = fetched.identity
        return self.lm, fetched

    def evaluate(self, ckpt: Checkpoint, next_ckpt: Checkpoint | None = None) -> UnitResult:
        from lm_eval.evaluator import evaluate

        started = time.perf_counter()
        try:
            lm, fetched = self.load_model(ckpt)
        except Exception as err:  # noqa: BLE001 - any load failure (missing revision, corrupt weights) fails the unit
            raise EvaluationError(f"could not load {ckpt.describe()}: {type(err).__name__}: {err}") from err
        finally:
            if next_ckpt is not None:
                self.prefetch(next_ckpt)
        loaded = time.perf_counter()
        if lm.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(lm.device)
        output = evaluate(
            lm, self.task_dict, limit=self.spec.limit, log_samples=True, bootstrap_iters=100, verbosity="ERROR"
        )
        evaluated = time.perf_counter()
        if fetched.commit:
            evict_if_asked(fetched.folder, self.settings.evict)
        items = self._items(ckpt, output["samples"])
        bad = items[items[["logp_good", "logp_bad"]].isna().any(axis=1) | ~items.logp_good.map(math.isfinite)]
        if len(bad):
            raise EvaluationError(f"{ckpt.describe()}: {len(bad)} items have NaN or infinite log-probabilities")
        tasks = {}
        for task in self.spec.tasks:
            metrics = output["results"][task]
            stderr = metrics.get("acc_stderr,none")
            tasks[task] = {
                "acc": metrics["acc,none"], "acc_stderr": stderr if isinstance(stderr, float) else float("nan"),
                "n": int((items.task == task).sum()), "phenomenon": self.phenomena[task], "lm_eval": metrics,
            }
        model = lm.model
        provenance = {
            "versions": versions(), "commit": fetched.commit,
            "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."),
            "batch_size": lm.rows_per_batch,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_gpu_mb": torch.cuda.max_memory_allocated(lm.device) / 2**20 if lm.device.type == "cuda" else None,
        }
        seconds = {"read": fetched.seconds, "load": loaded - started, "evaluate": evaluated - loaded}
        return UnitResult(tasks, items, seconds, provenance)

    @staticmethod
    def _items(ckpt: Checkpoint, samples: dict[str, list[dict]]) -> pd.DataFrame:
        """One row per document: the target choice's log-prob against the best other choice's (for a minimal
        pair, the good and the bad sentence), and lm-eval's own acc for it."""
        rows = []
        for task, task_samples in samples.items():
            for sample in task_samples:
                logps = [resp[0] for resp in sample["filtered_resps"]]
                target = sample["target"]
                others = [lp for i, lp in enumerate(logps) if i != target]
                rows.append((ckpt.model.name, ckpt.step, task, sample["doc_id"], logps[target], max(others),
                             bool(sample["acc"])))
        return pd.DataFrame(rows, columns=list(ITEM_COLUMNS)).sort_values(["task", "item"], ignore_index=True)
