"""The package's layout keeps its promises: lm-eval's internals are touched in one module only, and that module
names what a newer lm-eval moved."""

import re
from pathlib import Path

from trajectories import lmeval

PACKAGE = Path(lmeval.__file__).parent


def test_only_the_adapter_imports_lm_eval():
    importers = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if re.search(r"^\s*(import lm_eval|from lm_eval)", p.read_text(), re.M)]
    assert importers == ["lmeval.py"]


def test_the_lm_eval_internals_we_use_are_there():
    missing = lmeval.check_internals()
    assert not missing, f"lm-eval {lmeval.VERSION} lacks what trajectories/lmeval.py uses: {', '.join(missing)}"


def test_the_check_names_what_is_missing(monkeypatch, tiny_suite):
    lm = lmeval.SweepLM(pretrained=str(tiny_suite / "tiny" / "step0"), device="cpu", batch_size=4)
    assert lmeval.check_internals(lm) == []
    del lm.softmax_dtype
    monkeypatch.delattr(lmeval.HFLM, "_model_call")
    assert lmeval.check_internals(lm) == ["lm_eval.models.huggingface.HFLM._model_call",
                                          "lm_eval.models.huggingface.HFLM().softmax_dtype"]
