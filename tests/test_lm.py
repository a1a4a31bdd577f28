"""The sweep's lm-eval model class scores exactly what lm-eval's stock Hugging Face model scores."""

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from tests.helpers import blimp_sentences
from trajectories.lmeval import SweepLM


@pytest.fixture(scope="module")
def padded_vocab_model(tiny_suite, tmp_path_factory):
    """Like Pythia: the output layer is wider than the tokenizer's vocabulary (50304 vs 50277)."""
    folder = tmp_path_factory.mktemp("padded")
    source = tiny_suite / "small" / "step0"
    config = GPTNeoXConfig.from_pretrained(source)
    config.vocab_size += 37
    torch.manual_seed(7)
    GPTNeoXForCausalLM(config).save_pretrained(folder)
    for file in source.glob("tokenizer*"):
        (folder / file.name).write_bytes(file.read_bytes())
    return folder


def requests():
    sentences = blimp_sentences()[:60]
    full = [("", " " + s) for s in sentences]  # BLiMP's full-sentence method
    prefixed = [(s.split()[0], " " + " ".join(s.split()[1:])) for s in sentences[:20]]  # a shared-prefix method
    return [Instance("loglikelihood", {}, args, i) for i, args in enumerate(full + prefixed)]


@pytest.mark.parametrize("batch_size", [1, 7])
def test_loglikelihoods_equal_stock_hflm(padded_vocab_model, batch_size):
    stock = HFLM(pretrained=str(padded_vocab_model), device="cpu", dtype="float32", batch_size=batch_size)
    ours = SweepLM(pretrained=str(padded_vocab_model), device="cpu", dtype="float32", batch_size=batch_size)
    expected, got = stock.loglikelihood(requests()), ours.loglikelihood(requests())
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in expected], abs=1e-4)
    assert [greedy for _, greedy in got] == [greedy for _, greedy in expected]
    again = ours.loglikelihood(requests())  # second pass: tokenizations and logit buffer are reused
    assert again == got
