"""Evaluate one checkpoint on a fixed set of tasks through lm-eval, in named stages:

    fetch     download (hub) and build the model on the CPU, in the background for the next checkpoint; the load
              guard fails a checkpoint whose files are not those the audit listed, whose weights do not all load
              (missing, unexpected or misshapen tensors) or hold NaN or infinite values
    load      move it to the device and into the one lm-eval model object (lmeval.SweepLM)
    run       lm-eval's evaluation of every task
    release   evict a downloaded hub revision, if asked
    items     one row per document: the good and bad sentence's log-probs and lm-eval's verdict
    check     NaN or infinite log-probabilities fail the unit
    results   lm-eval's metrics per task, and the provenance of the run
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trajectories import hub, lmeval
from trajectories.integrity import TOKENIZER_FILES, config_shape, weight_files
from trajectories.schema import ITEM_COLUMNS, Checkpoint, EvalSettings, SweepSpec, TaskResult, UnitResult
from trajectories.suites import local_digests, sha256_of
from trajectories.tasks import TaskCatalog

SHOWN_TENSORS = 8  # a message names at most this many tensors


class EvaluationError(RuntimeError):
    """A checkpoint could not be evaluated (load failure, NaN log-probs, ...): the unit is recorded as failed."""


def versions() -> dict[str, str]:
    import transformers

    from trajectories import __version__

    return {"trajectories": __version__, "lm_eval": lmeval.VERSION, "transformers": transformers.__version__,
            "torch": torch.__version__}


@dataclass
class FetchedCheckpoint:
    """A checkpoint on local disk with its model built on the CPU, ready to be moved to the device."""

    folder: Path
    model: torch.nn.Module
    commit: str | None  # the hub revision's commit; None for local checkpoints
    weights: dict[str, str]  # weight file -> sha256
    seconds: float

    @property
    def identity(self) -> tuple[str, str]:
        """Checkpoints with equal identity (architecture shape, tokenizer files) can be served by one SweepLM."""
        return config_shape(json.loads((self.folder / "config.json").read_text())), tokenizer_fingerprint(self.folder)


def tokenizer_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (folder / name).exists():
            digest.update(name.encode() + (folder / name).read_bytes())
    return digest.hexdigest()


def fetch(ckpt: Checkpoint, dtype: str, trust_remote_code: bool) -> FetchedCheckpoint:
    """Download (hub) and build a checkpoint's model on the CPU, through the load guard."""
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    folder, commit = (Path(ckpt.path), None) if ckpt.path else hub.download(ckpt.model.repo, ckpt.revision)
    names = weight_files(p.name for p in folder.iterdir())
    # huggingface_hub checks a download's size, not its content: the weights are hashed here (local files: once).
    weights = local_digests(folder, names) if ckpt.path else {name: sha256_of(folder / name) for name in names}
    check_listed(ckpt, commit, weights)
    # transformers reads safetensors, and .bin files only with torch.load(weights_only=True). Misshapen tensors are
    # reported rather than raised, so that the message can name them.
    model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=trust_remote_code,
                                                       output_loading_info=True, ignore_mismatched_sizes=True)
    check_loaded(ckpt, info)
    check_weights_finite(ckpt, model)
    return FetchedCheckpoint(folder, model.eval(), commit, weights, time.perf_counter() - started)


def _names(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:SHOWN_TENSORS]) + (f" and {len(keys) - SHOWN_TENSORS} more" if len(keys) > SHOWN_TENSORS
                                              else "")


def check_listed(ckpt: Checkpoint, commit: str | None, weights: dict[str, str]) -> None:
    """The files are those the sweep's audit listed: the same commit, the same weight files and sha256."""
    listing = ckpt.listing
    if listing is None:
        return
    if listing.commit and commit != listing.commit:
        raise EvaluationError(f"{ckpt.describe()}: the branch now points at commit {commit}, not {listing.commit} "
                              "as when the sweep audited it (re-uploaded?); run the sweep again to audit it anew")
    listed = {f.path: f.sha256 for f in listing.weights}
    if listed.keys() != weights.keys():
        raise EvaluationError(f"{ckpt.describe()}: weight files {_names(weights)}, where the audit listed "
                              f"{_names(listed)}")
    if wrong := [name for name, sha in listed.items() if sha and weights[name] != sha]:
        raise EvaluationError(f"{ckpt.describe()}: {_names(wrong)}: content differs from the listed sha256 (a "
                              "corrupted download or file); delete it from the cache and run the sweep again")


def check_loaded(ckpt: Checkpoint, info: dict) -> None:
    """Every tensor of the model came from the checkpoint, and every tensor of the checkpoint went into the model:
    transformers would otherwise initialise what is missing at random and the unit would score near chance."""
    problems = []
    if info["missing_keys"]:
        problems.append(f"missing tensors {_names(info['missing_keys'])}")
    if info["mismatched_keys"]:
        problems.append("tensors of the wrong shape " + _names(
            f"{key} {tuple(got)} (the model's {tuple(want)})" for key, got, want in info["mismatched_keys"]))
    if info["unexpected_keys"]:
        problems.append(f"tensors the model does not have {_names(info['unexpected_keys'])}")
    problems += list(info.get("error_msgs") or [])
    if problems:
        raise EvaluationError(f"{ckpt.describe()}: the weights do not load fully: {'; '.join(problems)}")


def check_weights_finite(ckpt: Checkpoint, model: torch.nn.Module) -> None:
    tensors = [*model.named_parameters(), *model.named_buffers()]
    # A NaN or inf makes the sum non-finite; the sum is many times faster than isfinite over every element, which
    # decides only when the sum overflowed.
    bad = [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t.sum()))
           and not bool(torch.isfinite(t).all())]
    if bad:
        raise EvaluationError(f"{ckpt.describe()}: weights hold NaN or infinite values in {_names(bad)}")


def checkpoint_dtype(dtype: str, device: str, ckpt: Checkpoint) -> str:
    """The dtype to build a checkpoint in: the one asked for, else float32 on a CPU (half precision there is slow and
    loses the small log-prob differences we measure), else the precision it was trained in (or its config's)."""
    if dtype != "auto":
        return dtype
    if not device.startswith("cuda"):
        return "float32"
    return ckpt.model.train_dtype or "auto"


class Prefetcher:
    """Builds checkpoints' models on the CPU, the next one in the background while the current one runs; at most one
    checkpoint is held ahead, bounding memory."""

    def __init__(self, dtype: Callable[[Checkpoint], str], trust_remote_code: bool):
        self.dtype, self.trust_remote_code = dtype, trust_remote_code
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._ahead: tuple[tuple[str, int], Future] | None = None

    def prefetch(self, ckpt: Checkpoint) -> None:
        self._ahead = (ckpt.key, self._pool.submit(fetch, ckpt, self.dtype(ckpt), self.trust_remote_code))

    def get(self, ckpt: Checkpoint) -> FetchedCheckpoint:
        ahead, self._ahead = self._ahead, None
        if ahead and ahead[0] == ckpt.key:
            return ahead[1].result()
        return fetch(ckpt, self.dtype(ckpt), self.trust_remote_code)


def provenance(fetched: FetchedCheckpoint, model: torch.nn.Module, batch_size: int) -> dict:
    """How a unit was evaluated: versions, the checkpoint's commit and weight files, device, dtype, batch size and
    peak memory."""
    param = next(model.parameters())
    return {
        "versions": versions(), "commit": fetched.commit, "weights": fetched.weights,
        "device": str(param.device), "dtype": str(param.dtype).removeprefix("torch."), "batch_size": batch_size,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(param.device) / 2**20 if param.device.type == "cuda" else None,
    }


def items_of(ckpt: Checkpoint, samples: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per document of a multiple-choice task: the target choice's log-prob against the best other
    choice's (for a minimal pair, the good and the bad sentence), and lm-eval's own acc for it. Perplexity tasks
    (loglikelihood_rolling) have no choices to compare: their documents give no rows, only lm-eval's metrics."""
    rows = []
    for task, task_samples in samples.items():
        for sample in task_samples:
            if "acc" not in sample:
                continue
            logps = [resp[0] for resp in sample["filtered_resps"]]
            target = sample["target"]
            others = [lp for i, lp in enumerate(logps) if i != target]
            rows.append((ckpt.model.name, ckpt.step, task, sample["doc_id"], logps[target], max(others),
                         bool(sample["acc"])))
    return pd.DataFrame(rows, columns=list(ITEM_COLUMNS)).sort_values(["task", "item"], ignore_index=True)


def check_finite(ckpt: Checkpoint, items: pd.DataFrame) -> None:
    bad = int((~np.isfinite(items[["logp_good", "logp_bad"]].to_numpy(float))).any(axis=1).sum())
    if bad:
        raise EvaluationError(f"{ckpt.describe()}: {bad} items have NaN or infinite log-probabilities")


@contextmanager
def loading(ckpt: Checkpoint, fetcher: Prefetcher, next_ckpt: Checkpoint | None):
    """Around a unit's load stage: any failure (missing revision, corrupt weights) fails the unit as an
    EvaluationError naming the checkpoint (the load guard's own errors pass through as they are), and the next
    checkpoint starts fetching either way."""
    try:
        yield
    except EvaluationError:
        raise
    except Exception as err:  # noqa: BLE001 - any load failure fails the unit, not the sweep
        raise EvaluationError(f"could not load {ckpt.describe()}: {type(err).__name__}: {err}") from err
    finally:
        if next_ckpt is not None:
            fetcher.prefetch(next_ckpt)


class Evaluator:
    """Evaluates checkpoints one after another, paying the fixed costs once: lm-eval's task objects are built once,
    one lm-eval model object serves every checkpoint of a model (only its torch module changes), tokenizations are
    remembered, and the next checkpoint is downloaded and built in the background while the current one runs."""

    def __init__(self, spec: SweepSpec, settings: EvalSettings, catalog: TaskCatalog | None = None):
        lmeval.quiet()
        self.spec, self.settings = spec, settings
        self.catalog = catalog or TaskCatalog(settings.tasks_dir, settings.blimp_dir)
        self.task_dict = self.catalog.load(list(spec.tasks))
        for task in self.task_dict["tasks"].values():
            lmeval.reuse_task_work(task)
        self.phenomena = {task: self.catalog.phenomenon(task) for task in spec.tasks}
        self.fields = {task: self.catalog.field(task) for task in spec.tasks}
        self.lm: lmeval.SweepLM | None = None
        self.lm_identity: tuple | None = None
        self.token_caches: dict[str, dict] = {}  # tokenizer fingerprint -> tokenizations, shared across models
        self.model_loads = 0  # lets tests prove that a resume evaluates nothing
        self.fetcher = Prefetcher(lambda ckpt: checkpoint_dtype(spec.dtype, settings.device, ckpt),
                                  spec.trust_remote_code)

    def load(self, ckpt: Checkpoint, next_ckpt: Checkpoint | None = None) -> FetchedCheckpoint:
        """Stage fetch + load: the checkpoint's model in the lm-eval model object; the next one starts fetching."""
        with loading(ckpt, self.fetcher, next_ckpt):
            fetched = self.fetcher.get(ckpt)
            self.model_loads += 1
            model = fetched.model.to(self.settings.device)
            identity = fetched.identity
            if self.lm is not None and identity == self.lm_identity:
                lmeval.swap_model(self.lm, model)
            else:
                self.lm = lmeval.SweepLM(
                    pretrained=model, tokenizer=str(fetched.folder), batch_size=self.settings.batch_size,
                    trust_remote_code=self.spec.trust_remote_code,
                    token_cache=self.token_caches.setdefault(identity[1], {}),
                )
                self.lm_identity = identity
        return fetched

    def run(self) -> dict:
        """Stage run: lm-eval's evaluation of every task with the loaded checkpoint."""
        if self.lm.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.lm.device)
        return lmeval.run(self.lm, self.task_dict, self.spec.limit)

    def results(self, output: dict) -> dict[str, TaskResult]:
        """Stage results: lm-eval's accuracy per task (NaN for a task without one, e.g. a perplexity task, whose
        metrics are in the metric dict) and its whole metric dict; n counts the task's documents."""
        tasks = {}
        for task in self.spec.tasks:
            metrics = output["results"][task]
            stderr = metrics.get("acc_stderr,none")
            tasks[task] = TaskResult(metrics.get("acc,none", float("nan")),
                                     stderr if isinstance(stderr, float) else float("nan"),
                                     len(output["samples"][task]), self.phenomena[task], metrics, self.fields[task])
        return tasks

    def provenance(self, fetched: FetchedCheckpoint) -> dict:
        return provenance(fetched, self.lm.model, self.lm.rows_per_batch)

    def evaluate(self, ckpt: Checkpoint, next_ckpt: Checkpoint | None = None) -> UnitResult:
        started = time.perf_counter()
        fetched = self.load(ckpt, next_ckpt)
        loaded = time.perf_counter()
        output = self.run()
        evaluated = time.perf_counter()
        if fetched.commit:
            hub.evict(fetched.folder, self.settings.evict)
        items = items_of(ckpt, output["samples"])
        check_finite(ckpt, items)
        seconds = {"read": fetched.seconds, "load": loaded - started, "evaluate": evaluated - loaded}
        return UnitResult(self.results(output), items, seconds, self.provenance(fetched))
