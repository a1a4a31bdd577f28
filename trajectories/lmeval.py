"""The one module that touches lm-eval's internals. Every other module goes through the functions here, so an
lm-eval upgrade that moves something breaks here, and `check_internals()` (run by a test) names what moved.

What we rely on beyond lm-eval's documented API, and why:
- `SweepLM` subclasses the Hugging Face model `HFLM`: one instance serves every checkpoint of a sweep (only its
  torch module `_model` is swapped), it remembers tokenizations, and it scores log-likelihoods without materialising
  log-softmax over the whole [batch, length, vocab] block (overriding `_loglikelihood_tokens`, calling
  `_model_call`). Results equal stock HFLM's (tests: per-item log-probs within 1e-4 in float32).
- Task objects are built once and reused for every checkpoint: their documents, rendered choices and requests
  (`build_all_requests`, which leaves them in `_instances`) depend only on the task, never on the checkpoint.
  lm-eval's own `cache_requests` does not serve here: it pickles requests to a shared disk cache (dill files that
  would be unpickled on load) keyed by task name only, so editing a task's jsonl would reuse stale requests, and
  it reads them back from disk at every evaluation.
- lm-eval draws a progress bar per task (module-level `tqdm` in `lm_eval.api.task`) and compiles Jinja templates
  again for every document (`lm_eval.utils.env.from_string`); a sweep draws one bar over checkpoints and compiles
  each template once.
- The task index (`TaskManager.task_index` entries and `lm_eval.tasks._index.Kind`) tells tasks, groups and tags
  apart, and where each task's YAML is.
"""

from __future__ import annotations

import functools
import logging
import types
from dataclasses import dataclass
from pathlib import Path

import lm_eval
import lm_eval.api.task
import lm_eval.utils
import torch
from lm_eval.api.registry import register_model
from lm_eval.api.task import ConfigurableTask
from lm_eval.config.task import TaskConfig
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from lm_eval.tasks._index import Kind

VERSION = lm_eval.__version__
TASKS_DIR = Path(lm_eval.__file__).parent / "tasks"  # lm-eval's own task YAMLs
BLIMP_TASKS_DIR = TASKS_DIR / "blimp"

# (object, attribute) pairs this module uses that lm-eval does not document as API; HFLM_STATE: attributes an HFLM
# instance sets in its __init__ (checked on every SweepLM built).
INTERNALS = (
    (HFLM, "_loglikelihood_tokens"), (HFLM, "_model_call"), (HFLM, "tok_encode"), (HFLM, "backend"),
    (HFLM, "prefix_token_id"), (HFLM, "max_length"), (lm_eval.api.task, "tqdm"), (lm_eval.utils, "env"),
    (ConfigurableTask, "build_all_requests"), (ConfigurableTask, "eval_docs"), (ConfigurableTask, "doc_to_choice"),
    (TaskManager, "task_index"), (Kind, "TASK"), (Kind, "GROUP"), (Kind, "TAG"),
)
HFLM_STATE = ("_model", "softmax_dtype", "add_bos_token", "batch_size", "batch_size_per_gpu")


def check_internals(lm: HFLM | None = None) -> list[str]:
    """The internals above that this lm-eval lacks, e.g. "lm_eval.models.huggingface.HFLM._model_call" (with `lm`,
    also the instance state it lacks)."""
    missing = [f"{_where(obj)}.{name}" for obj, name in INTERNALS if not hasattr(obj, name)]
    return missing + [f"{_where(HFLM)}().{name}" for name in HFLM_STATE if lm is not None and not hasattr(lm, name)]


def _where(obj) -> str:
    return obj.__name__ if isinstance(obj, types.ModuleType) else f"{obj.__module__}.{obj.__qualname__}"


# ---------------------------------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class TaskEntry:
    """One name in lm-eval's task index."""

    name: str
    kind: str  # "task", "group" or "tag"
    yaml_path: Path | None
    cfg: dict
    tags: frozenset[str]


_KINDS = {Kind.TASK: "task", Kind.PY_TASK: "task", Kind.GROUP: "group", Kind.TAG: "tag"}


class TaskIndex:
    """lm-eval's task index over some folders (with or without lm-eval's own tasks), and loading tasks from it."""

    def __init__(self, folders: list[Path], with_lm_eval_tasks: bool = False):
        self.manager = TaskManager(include_defaults=with_lm_eval_tasks, include_path=[str(f) for f in folders] or None)

    @functools.cached_property
    def entries(self) -> dict[str, TaskEntry]:
        return {
            name: TaskEntry(name, _KINDS.get(e.kind, "unknown"), Path(e.yaml_path) if e.yaml_path else None,
                            e.cfg or {}, frozenset(e.tags))
            for name, e in self.manager.task_index.items()
        }

    def load(self, configs: list[dict]) -> dict:
        """lm-eval's task dict for task configs (as `entries[...].cfg`, possibly edited)."""
        return self.manager.load(configs)


def full_config(cfg: dict) -> dict:
    """A task's config as lm-eval writes it into a results file's "configs" (every field, defaults filled in)."""
    try:
        return TaskConfig(**cfg).to_dict()
    except (TypeError, ValueError):  # a key this lm-eval's TaskConfig lacks: the config as the YAML gives it
        return dict(cfg)


# ---------------------------------------------------------------------------------------------------- running
def quiet() -> None:
    """Quiet lm-eval (a sweep draws one bar over checkpoints) and stop it recompiling the same Jinja templates."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    if not isinstance(lm_eval.api.task.tqdm, functools.partial):
        lm_eval.api.task.tqdm = functools.partial(lm_eval.api.task.tqdm, disable=True)
    for name in ("lm-eval", "lm_eval", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # A compiled template is a pure function of its source: compile each once (most of lm-eval's per-checkpoint
    # overhead on small models).
    env = lm_eval.utils.env
    if not hasattr(env.from_string, "cache_info"):
        env.from_string = functools.lru_cache(maxsize=4096)(env.from_string)


def reuse_task_work(task) -> None:
    """Build a task's documents and requests once and hand the same ones (emptied of responses) to every later
    evaluation: they depend only on the task and the evaluation options, never on the checkpoint."""
    # lm-eval re-reads the documents from the Arrow table, row by row, for every evaluation; a list reads at once.
    docs = list(task.eval_docs)
    if task.has_test_docs():
        task.test_docs = lambda: docs
    else:
        task.validation_docs = lambda: docs
    task.doc_to_choice = _choices_once(task.doc_to_choice)
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


def _choices_once(doc_to_choice):
    """Scoring renders each document's choices again (a Jinja template for BLiMP); the documents are now fixed."""
    rendered = {}

    def choices(doc, *args, **kwargs):
        if args or kwargs:
            return doc_to_choice(doc, *args, **kwargs)
        cached = rendered.get(id(doc))
        if cached is None or cached[0] is not doc:
            cached = rendered[id(doc)] = (doc, doc_to_choice(doc))
        return cached[1]

    return choices


def swap_model(lm: HFLM, model: torch.nn.Module) -> None:
    """Make `lm` score with another checkpoint of the same architecture and tokenizer."""
    lm._model = model


def run(lm: HFLM, task_dict: dict, limit: int | None) -> dict:
    """lm-eval's evaluation of `task_dict` with `lm`, per-sample results included (output["samples"])."""
    from lm_eval.evaluator import evaluate

    return evaluate(lm, task_dict, limit=limit, log_samples=True, bootstrap_iters=100, verbosity="ERROR")


# ---------------------------------------------------------------------------------------------------- the model
# Architectures whose logits are exactly output_embeddings(base_model(...).last_hidden_state); others (soft-capped
# or scaled logits) take the model's own forward.
PLAIN_HEAD_MODELS = {"gpt_neox", "llama", "mistral", "qwen2", "olmo", "olmo2", "gpt2"}


@register_model("trajectories-hf")
class SweepLM(HFLM):
    """lm-eval's Hugging Face model, made cheap to reuse: across the checkpoints of a sweep only the weights change,
    so one instance serves them all (`swap_model`), and it
    - remembers every tokenization (shared by all models with the same tokenizer),
    - scores log-likelihoods without materialising log-softmax over the whole [batch, length, vocab] block: it
      projects only the non-padding positions onto the vocabulary, into a buffer reused from batch to batch, and
      reduces each row to its log-sum-exp, maximum and target logit. The sums stay on the device until the batch
      is done."""

    def __init__(self, *args, token_cache: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if missing := check_internals(self):
            raise RuntimeError(f"lm-eval {VERSION} changed what trajectories relies on: {', '.join(missing)}; "
                               "trajectories/lmeval.py must be adapted")
        # Keyed by everything tok_encode depends on; the Evaluator shares one cache between models whose
        # tokenizers are identical.
        self.token_cache = {} if token_cache is None else token_cache
        self._logit_buffer: torch.Tensor | None = None
        self.auto_batch = not isinstance(self.batch_size, int)
        self.rows_per_batch = self.batch_size if not self.auto_batch else self._first_batch_size()
        # lm-eval reads these properties once per request, each a walk through the tokenizer or config.
        self._prefix_token_id, self._max_length = super().prefix_token_id, super().max_length

    @property
    def prefix_token_id(self):
        return self._prefix_token_id

    @property
    def max_length(self):
        return self._max_length

    def _first_batch_size(self) -> int:
        """GPU: start large and halve on out-of-memory. CPU: big batches amortise Python overhead per batch, but the
        [rows x length x vocabulary] logits must stay modest (64 rows for Pythia's 50k vocabulary, 512 for small)."""
        if self.device.type == "cuda":
            return 1024
        rows = 2 ** 22 // self.model.get_output_embeddings().weight.shape[0]
        return max(32, min(512, 1 << max(rows, 1).bit_length() - 1))

    def tok_encode(self, string, add_special_tokens=None, left_truncate_len=None, **kwargs):
        key = (string, add_special_tokens, left_truncate_len, self.add_bos_token)
        if key not in self.token_cache:
            self.token_cache[key] = super().tok_encode(string, add_special_tokens, left_truncate_len, **kwargs)
        return self.token_cache[key]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return super().loglikelihood(requests, disable_tqdm=True)  # a sweep draws one bar over checkpoints

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        # With batch_size "auto", lm-eval sizes the batches of rolling windows by trial forward passes at full
        # length on every call (and prints); this model already knows its batch size.
        requested, self.batch_size_per_gpu = self.batch_size_per_gpu, self.rows_per_batch
        try:
            return super().loglikelihood_rolling(requests, disable_tqdm=True)
        finally:
            self.batch_size_per_gpu = requested

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        window = self.max_length + 1
        sequences = [(ctx + cont)[-window:] for _, ctx, cont in requests]
        cont_lens = [len(cont) for _, _, cont in requests]
        # Longest first, as lm-eval orders them, so batches group similar lengths and padding stays small.
        order = sorted(range(len(requests)), key=lambda i: -len(sequences[i]))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        start = 0
        while start < len(order):
            batch = order[start : start + self.rows_per_batch]
            try:
                logprobs, greedy = self._score_batch([sequences[i] for i in batch], [cont_lens[i] for i in batch])
            except torch.cuda.OutOfMemoryError:
                if not self.auto_batch or self.rows_per_batch == 1:
                    raise
                self.rows_per_batch //= 2  # "auto": start large, halve until a batch fits, keep what fits
                self._logit_buffer = None
                torch.cuda.empty_cache()
                continue
            for i, lp, g in zip(batch, logprobs.tolist(), greedy.tolist()):
                results[i] = (lp, g)
            start += len(batch)
        return results

    @torch.no_grad()
    def _score_batch(self, sequences: list[list[int]], cont_lens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probability of each sequence's last cont_len tokens, and whether each is the greedy choice."""
        width = max(len(s) for s in sequences)
        padded = torch.tensor([s + [0] * (width - len(s)) for s in sequences], device=self.device)
        inputs, targets = padded[:, :-1], padded[:, 1:]  # right padding never reaches a scored position
        ends = torch.tensor([len(s) - 1 for s in sequences], device=self.device).unsqueeze(1)
        starts = ends - torch.tensor(cont_lens, device=self.device).unsqueeze(1)
        positions = torch.arange(width - 1, device=self.device)
        scored = (positions >= starts) & (positions < ends)
        logits = self._scored_logits(inputs, scored)  # [n scored positions, vocab]
        # lm-eval takes log_softmax in softmax_dtype (default: the logits' own; half precision is upcast here, as
        # PyTorch's log_softmax accumulates in float32 anyway). Reduce in place: the buffer is ours to overwrite.
        full_precision = logits.dtype in (torch.float32, torch.float64)
        logits = logits.to(self.softmax_dtype or (logits.dtype if full_precision else torch.float32))
        target_logits = logits.gather(1, targets[scored].unsqueeze(1)).squeeze(1)
        maxes = logits.max(dim=-1).values
        is_max = target_logits >= maxes
        token_logprobs = target_logits - logits.sub_(maxes.unsqueeze(1)).exp_().sum(dim=-1).log_().add_(maxes)
        row_of = scored.nonzero()[:, 0]
        sums = torch.zeros(len(sequences), dtype=torch.float64, device=self.device).index_add_(
            0, row_of, token_logprobs.double()
        )
        misses = torch.zeros(len(sequences), dtype=torch.long, device=self.device).index_add_(
            0, row_of, (~is_max).long()
        )
        return sums.cpu(), (misses == 0).cpu()

    def _scored_logits(self, inputs: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
        model = self.model
        if model.config.model_type not in PLAIN_HEAD_MODELS:
            return self._model_call(inputs)[scored]
        hidden = model.base_model(input_ids=inputs).last_hidden_state[scored]
        head = model.get_output_embeddings()
        rows, vocab = hidden.shape[0], head.weight.shape[0]
        if (
            self._logit_buffer is None
            or self._logit_buffer.numel() < rows * vocab
            or self._logit_buffer.dtype != hidden.dtype
            or self._logit_buffer.device != hidden.device
        ):
            self._logit_buffer = torch.empty(rows * vocab, dtype=hidden.dtype, device=hidden.device)
        logits = self._logit_buffer[: rows * vocab].view(rows, vocab)
        torch.matmul(hidden, head.weight.t(), out=logits)
        if head.bias is not None:
            logits += head.bias
        return logits
