"""The lm-eval model class a sweep evaluates with: lm-eval's Hugging Face model, made cheap to reuse.

Across the checkpoints of a sweep only the weights change, so one instance serves them all (the Evaluator puts each
checkpoint's torch module into it), and it
- remembers every tokenization (shared by all models with the same tokenizer),
- scores log-likelihoods without materialising log-softmax over the whole [batch, length, vocab] block: it projects
  only the non-padding positions onto the vocabulary, into a buffer reused from batch to batch, and reduces each
  row to its log-sum-exp, maximum and target logit. The sums stay on the device until the batch is done.
Results equal lm-eval's stock HFLM (tests check per-item log-probs within 1e-4 in float32).
"""

from __future__ import annotations

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

# Architectures whose logits are exactly output_embeddings(base_model(...).last_hidden_state); others (soft-capped
# or scaled logits) take the model's own forward.
PLAIN_HEAD_MODELS = {"gpt_neox", "llama", "mistral", "qwen2", "olmo", "olmo2", "gpt2"}


@register_model("trajectories-hf")
class SweepLM(HFLM):
    def __init__(self, *args, token_cache: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
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
