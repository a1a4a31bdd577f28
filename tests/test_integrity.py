"""The audit's comparisons, on listings written out by hand (the hub and local listings are tested in test_hubpath)."""

from __future__ import annotations

import json

from trajectories.integrity import audit, config_shape, weight_files
from trajectories.schema import FindingKind, Listing, WeightFile

CONFIG = {"hidden_size": 16, "num_hidden_layers": 1, "transformers_version": "5.0", "_name_or_path": "x"}


def listing(step, files=(("model.safetensors", 1000, None),), config=CONFIG, model="m", tokenizer="t") -> Listing:
    weights = tuple(WeightFile(path, size, sha or f"sha-{step}-{path}") for path, size, sha in files)
    return Listing(model, step, weights, config_shape(config), tokenizer, f"step{step}")


def kinds(report) -> list[tuple[str, str, tuple]]:
    return [(str(f.kind), f.model, f.steps) for f in report.findings]


def test_weight_files_are_the_ones_transformers_loads():
    assert weight_files(["model.safetensors", "pytorch_model.bin", "config.json"]) == ["model.safetensors"]
    shards = ["pytorch_model-00002-of-00002.bin", "pytorch_model-00001-of-00002.bin", "training_args.bin"]
    assert weight_files(iter(shards)) == sorted(shards[:2])
    assert weight_files(["optimizer.pt", "adapter_model.bin"]) == []


def test_config_shape_ignores_what_varies_between_checkpoints():
    assert config_shape(CONFIG) == config_shape(CONFIG | {"transformers_version": "4.1", "torch_dtype": "float16"})
    assert config_shape(CONFIG) != config_shape(CONFIG | {"hidden_size": 32})


def test_identical_steps_form_one_group_per_model():
    same = (("model.safetensors", 1000, "aaa"),)
    listings = {("m", s): listing(s, same) if s in (0, 1, 4) else listing(s) for s in range(5)}
    listings[("n", 0)] = listing(0, same, model="n")  # another model's identical checkpoint is no duplicate
    listings[("m", 9)] = listing(9, same, tokenizer="other")  # the same weights with another tokenizer are not
    report = audit(listings)
    assert kinds(report) == [("duplicate", "m", (0, 1, 4))]
    assert report.findings[0].detail == "steps 0, 1, 4 have identical weights"
    assert report.groups() == {("m", 0): (0, 1, 4), ("m", 1): (0, 1, 4), ("m", 4): (0, 1, 4)}
    assert report.failing() == {}


def test_unknown_digests_are_never_duplicates():
    unknown = (("model.safetensors", 1000, None),)
    report = audit({("m", s): Listing("m", s, (WeightFile(*unknown[0]),), "{}", "t") for s in range(3)})
    assert report.findings == []


def test_shards_sizes_and_configs_out_of_line():
    listings = {("m", s): listing(s) for s in range(5)}
    listings[("m", 1)] = listing(1, (("model-00001-of-00002.safetensors", 500, None),
                                     ("model-00002-of-00002.safetensors", 500, None)))
    listings[("m", 2)] = listing(2, (("model.safetensors", 2000, None),))  # a float32 upload among float16 ones
    listings[("m", 3)] = listing(3, (("model.safetensors", 1005, None),))  # within tolerance
    listings[("m", 4)] = listing(4, config=CONFIG | {"hidden_size": 32})
    listings[("m", 5)] = listing(5, (("pytorch_model.bin", 4000, None),))  # the only .bin: nothing to compare with
    report = audit(listings, absent={("m", 6): "step 6: org/m has no branch step6"})
    assert kinds(report) == [("config", "m", (4,)), ("shards", "m", (1,)), ("size", "m", (2,)),
                             ("no-branch", "m", (6,))]
    details = {f.steps[0]: f.detail for f in report.findings}
    assert details[4] == ("step 4: config.json differs in shape from the model's other checkpoints: hidden_size 32 "
                          "(others 16)")
    assert "weight files model-00001-of-00002.safetensors, model-00002-of-00002.safetensors; the model's other " \
           ".safetensors checkpoints have model.safetensors" in details[1]
    assert "weights total 2.0 KiB; the model's other .safetensors checkpoints 1000 B (median)" in details[2]
    assert report.failing() == {("m", 4): f"audit: {details[4]}", ("m", 6): "audit: step 6: org/m has no branch step6"}
    assert "(no branch)" in report.table() and "model-00002-of-00002.safetensors" in report.table()
    assert json.loads(json.dumps(report.to_json()))["absent"] == [{"model": "m", "step": 6,
                                                                   "reason": "step 6: org/m has no branch step6"}]


def test_a_tie_between_configs_goes_to_the_latest_step():
    report = audit({("m", 0): listing(0, config=CONFIG | {"hidden_size": 8}), ("m", 1): listing(1)})
    assert kinds(report) == [("config", "m", (0,))]


def test_checkpoints_without_metadata_are_reported_not_compared():
    report = audit({("m", 0): listing(0), ("m", 1): None})
    assert kinds(report) == [("unlisted", "m", (1,))] and report.failing() == {}
    assert report.findings[0].kind == FindingKind.UNLISTED
