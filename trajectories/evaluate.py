"""Evaluate one checkpoint on a fixed set of tasks through lm-eval's evaluator and its Hugging Face model class."""

from __future__ import annotations

import functools
import math
import resource
import time
from dataclasses import dataclass

import pandas as pd
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from trajectories.schema import ITEM_COLUMNS, Checkpoint, EvalSettings, SweepSpec
from trajectories.tasks import TaskCatalog


class EvaluationError(RuntimeError):
    """A checkpoint could not be evaluated (load failure, NaN log-probs, ...): the unit is recorded as failed."""


@dataclass
class UnitResult:
    tasks: dict[str, dict]  # task -> {acc, acc_stderr, n, phenomenon, lm_eval: lm-eval's own metric dict}
    items: pd.DataFrame  # ITEM_COLUMNS
    seconds: dict[str, float]  # per phase
    provenance: dict


@register_model("trajectories-hf")
class SweepLM(HFLM):
    """lm-eval's Hugging Face model, quiet: a sweep shows one bar over checkpoints instead of several per unit."""

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return super().loglikelihood(requests, disable_tqdm=True)


def _quiet_lm_eval() -> None:
    import logging

    import datasets
    import lm_eval.api.task
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    # lm-eval builds each task's requests under its own bar, which cannot be switched off by argument.
    lm_eval.api.task.tqdm = functools.partial(lm_eval.api.task.tqdm, disable=True)
    for name in ("lm-eval", "lm_eval", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def versions() -> dict[str, str]:
    import lm_eval
    import torch
    import transformers

    from trajectories import __version__

    return {
        "trajectories": __version__, "lm_eval": lm_eval.__version__, "transformers": transformers.__version__,
        "torch": torch.__version__,
    }


class Evaluator:
    """Holds lm-eval's task objects for a sweep, so they are built once and reused for every checkpoint."""

    def __init__(self, spec: SweepSpec, settings: EvalSettings, catalog: TaskCatalog | None = None):
        _quiet_lm_eval()
        self.spec, self.settings = spec, settings
        self.catalog = catalog or TaskCatalog(blimp_dir=settings.blimp_dir)
        self.task_dict = self.catalog.load(list(spec.tasks))
        self.phenomena = {task: self.catalog.phenomenon(task) for task in spec.tasks}
        self.model_loads = 0  # lets tests prove that a resume evaluates nothing

    def load_model(self, ckpt: Checkpoint):
        self.model_loads += 1
        dtype = self.spec.dtype
        if dtype == "auto" and not self.settings.device.startswith("cuda"):
            dtype = "float32"  # half precision on a CPU is slow and loses the small log-prob differences we measure
        return SweepLM(
            pretrained=ckpt.source, revision=ckpt.revision or "main", device=self.settings.device,
            dtype=dtype, batch_size=self.settings.batch_size,
            trust_remote_code=self.spec.trust_remote_code, **self.settings.extra,
        )

    def evaluate(self, ckpt: Checkpoint) -> UnitResult:
        from lm_eval.evaluator import evaluate

        started = time.perf_counter()
        try:
            lm = self.load_model(ckpt)
        except Exception as err:  # noqa: BLE001 - any load failure (missing revision, corrupt weights) fails the unit
            raise EvaluationError(f"could not load {ckpt.describe()}: {type(err).__name__}: {err}") from err
        loaded = time.perf_counter()
        output = evaluate(
            lm, self.task_dict, limit=self.spec.limit, log_samples=True, bootstrap_iters=100, verbosity="ERROR"
        )
        evaluated = time.perf_counter()
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
            "versions": versions(),
            "commit": getattr(model.config, "_commit_hash", None),
            "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."),
            "batch_size": self.settings.batch_size,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        seconds = {"load": loaded - started, "evaluate": evaluated - loaded}
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
