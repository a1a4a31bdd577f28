"""The training-order file: round trips, Megatron's index read the way EleutherAI's tools read it, the step maps,
clear errors for malformed files, reproducible stratified samples, and the rows a memorization run scores."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest

from trajectories.errors import UserError
from trajectories.schema import ROW_COLUMNS, RowSample
from trajectories.trainingdata import (
    TrainingData,
    TrainingDataError,
    open_training_data,
    parse_data_option,
    read_canaries,
    resolve_data,
    rows_to_score,
    sample_rows,
    write_training_data,
)

ROW_LEN, BATCH = 9, 4


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 50_000, (10 * BATCH, ROW_LEN)).astype(np.uint16)


@pytest.fixture
def written(tmp_path, rows) -> TrainingData:
    return write_training_data(tmp_path / "document", rows, rows_per_step=BATCH)


def megatron_rows(prefix, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) read the way EleutherAI's MMapIndexedDataset + batch_viewer.py read them: the index header,
    sizes (int32) and pointers (int64), then a slice of the .bin from the first row's pointer reshaped to rows."""
    idx = open(f"{prefix}.idx", "rb").read()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    (version,), (code,) = struct.unpack("<Q", idx[9:17]), struct.unpack("<B", idx[17:18])
    assert version == 1
    dtype = {8: np.uint16, 4: np.int32}[code]
    n, _ = struct.unpack("<QQ", idx[18:34])
    sizes = np.frombuffer(idx, np.int32, count=n, offset=34)
    pointers = np.frombuffer(idx, np.int64, count=n, offset=34 + sizes.nbytes)
    data = open(f"{prefix}.bin", "rb").read()
    tokens = np.frombuffer(data, dtype, count=int(sizes[start:stop].sum()), offset=int(pointers[start]))
    return tokens.reshape(-1, int(sizes[0]))


def test_round_trip_through_prefix_bin_and_idx(tmp_path, rows, written):
    assert written == TrainingData(str(tmp_path / "document.bin"), ROW_LEN, BATCH, "uint16", len(rows))
    for path in ("document", "document.bin", "document.idx"):
        data = open_training_data(tmp_path / path, row_len=ROW_LEN, rows_per_step=BATCH)
        assert data == written
    assert np.array_equal(written.tokens(range(len(rows))), rows)
    assert np.array_equal(written.tokens([7, 2, 7], columns=3), rows[[7, 2, 7], :3])
    assert written.tokens([5]).dtype == np.int64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["document.bin", "document.idx"]  # no temporary files left


def test_index_is_megatrons(tmp_path, rows, written):
    assert np.array_equal(megatron_rows(tmp_path / "document", 0, len(rows)), rows)
    assert np.array_equal(megatron_rows(tmp_path / "document", 2 * BATCH, 3 * BATCH), rows[written.rows_of_step(2)])


def test_step_maps_follow_pythia():
    pythia = TrainingData("document.bin", n_rows=143_000 * 1024)
    assert (pythia.row_len, pythia.rows_per_step, pythia.dtype, pythia.n_steps) == (2049, 1024, "uint16", 143_000)
    assert pythia.step_of(1023) == 0 and pythia.step_of(1024) == 1
    assert list(pythia.step_of(np.array([0, 2048, 146_431_999]))) == [0, 2, 142_999]
    assert pythia.rows_of_step(1) == range(1024, 2048)
    # eval_memorization.py scores the checkpoint at step C on rows 0 .. C * 1024 - 1
    assert pythia.rows_seen_by(143_000) == range(143_000 * 1024)
    assert pythia.rows_seen_by(0) == range(0)
    with pytest.raises(TrainingDataError, match="143000 steps"):
        pythia.rows_seen_by(143_001)
    with pytest.raises(TrainingDataError, match="step 143000"):
        pythia.rows_of_step(143_000)


def test_chunked_writing_and_int32(tmp_path, rows):
    chunked = write_training_data(tmp_path / "a", (rows[i:i + BATCH] for i in range(0, len(rows), BATCH)), BATCH)
    whole = write_training_data(tmp_path / "b", rows, BATCH)
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    assert (tmp_path / "a.idx").read_bytes() == (tmp_path / "b.idx").read_bytes()
    assert chunked.n_rows == whole.n_rows == len(rows)
    big = rows.astype(np.int64) * 4  # ids beyond uint16, as for a vocabulary over 65500 tokens
    data = write_training_data(tmp_path / "big", big, BATCH, dtype="int32")
    assert open_training_data(tmp_path / "big", ROW_LEN, BATCH) == data and data.dtype == "int32"
    assert np.array_equal(data.tokens(range(len(rows))), big)
    assert np.array_equal(megatron_rows(tmp_path / "big", 0, len(rows)), big)


def test_flat_bin_without_index(tmp_path, rows):
    rows.astype(np.uint32).tofile(tmp_path / "flat.bin")
    data = open_training_data(tmp_path / "flat.bin", row_len=ROW_LEN, rows_per_step=BATCH, dtype="uint32")
    assert data.n_rows == len(rows) and np.array_equal(data.tokens([3, 1]), rows[[3, 1]])
    # Read with the wrong row length, the size gives it away.
    with pytest.raises(TrainingDataError, match=r"flat.bin is 1440 bytes, not a multiple of the row length \(7 "):
        open_training_data(tmp_path / "flat.bin", row_len=7, dtype="uint32")


def patched(path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, message", [
    (lambda d: patched(d / "document.idx", 0, b"NOTANIDX!"), "document.idx is not a Megatron"),
    (lambda d: patched(d / "document.idx", 9, struct.pack("<Q", 2)), "index version 2"),
    (lambda d: patched(d / "document.idx", 17, b"\x06"), r"dtype code 6 \(float\).*8 \(uint16\)"),
    (lambda d: patched(d / "document.idx", 34 + 4 * 5, struct.pack("<i", 8)), "document 5 is 8 tokens long"),
    (lambda d: patched(d / "document.idx", 34 + 4 * 40 + 8 * 3, struct.pack("<q", 0)), "document 3 starts at byte 0"),
    (lambda d: (d / "document.idx").write_bytes((d / "document.idx").read_bytes()[:-8]), "truncated"),
    (lambda d: (d / "document.bin").write_bytes((d / "document.bin").read_bytes()[: 2 * ROW_LEN * 39]),
     "lists 40 documents but .*document.bin holds 39 rows"),
    (lambda d: (d / "document.bin").unlink(), "document.bin does not exist"),
])
def test_malformed_files_are_refused_by_name(tmp_path, written, damage, message):
    damage(tmp_path)
    with pytest.raises(TrainingDataError, match=message):
        open_training_data(tmp_path / "document", row_len=ROW_LEN, rows_per_step=BATCH)


def test_bad_requests_are_user_errors(tmp_path, rows, written):
    assert issubclass(TrainingDataError, UserError)
    with pytest.raises(TrainingDataError, match="says the tokens are uint16, but dtype int32"):
        open_training_data(tmp_path / "document", ROW_LEN, BATCH, dtype="int32")
    with pytest.raises(TrainingDataError, match="is 18 tokens long, not row_len = 9"):
        write_training_data(tmp_path / "x", np.zeros((4, 18), np.uint16), BATCH)
        open_training_data(tmp_path / "x", ROW_LEN, BATCH)
    with pytest.raises(TrainingDataError, match="choose one of uint16, uint32, int32"):
        open_training_data(tmp_path / "document", ROW_LEN, BATCH, dtype="float16")
    with pytest.raises(TrainingDataError, match="token id 70000 does not fit uint16"):
        write_training_data(tmp_path / "y", np.full((2, 3), 70_000), BATCH)
    with pytest.raises(TrainingDataError, match="cannot write dtype uint32"):
        write_training_data(tmp_path / "z", rows, BATCH, dtype="uint32")
    with pytest.raises(TrainingDataError, match="every row must have the same length"):
        write_training_data(tmp_path / "w", [rows[:2], rows[:2, :4]], BATCH)
    with pytest.raises(TrainingDataError, match="row 40 is out of range; the file holds rows 0..39"):
        written.tokens([0, 40])
    with pytest.raises(TrainingDataError, match="row_len must be a positive"):
        open_training_data(tmp_path / "document", row_len=0)
    assert not (tmp_path / "y.bin").exists() and not list(tmp_path.glob(".*"))


def test_stratified_sample_is_balanced_and_reproducible(tmp_path):
    data = TrainingData(str(tmp_path / "none.bin"), row_len=2049, rows_per_step=1024, n_rows=2000 * 1024)
    sample = sample_rows(data, max_step=1000, strata=10, per_stratum=25, seed=3)
    rows = np.array(sample.rows)
    assert len(rows) == 250 and len(set(rows)) == 250 and (np.diff(rows) > 0).all()
    assert rows.max() < 1000 * 1024  # only rows the checkpoint at max_step has seen
    per_stratum = np.bincount(np.searchsorted(sample.stratum_edges(), data.step_of(rows), side="right") - 1)
    assert list(per_stratum) == [25] * 10
    assert sample_rows(data, **sample.params) == sample
    assert RowSample.from_dict(sample.as_dict()) == sample
    assert sample_rows(data, **(sample.params | {"seed": 4})).rows != sample.rows
    # Uneven strata: 7 steps in 3 strata of 2, 2 and 3 steps.
    uneven = sample_rows(TrainingData("x.bin", rows_per_step=2, n_rows=14), max_step=7, strata=3, per_stratum=4)
    assert list(uneven.stratum_edges()) == [0, 2, 4, 7]
    with pytest.raises(TrainingDataError, match="per_stratum must be between 1 and 4"):
        sample_rows(TrainingData("x.bin", rows_per_step=2, n_rows=14), max_step=7, strata=3, per_stratum=5)
    with pytest.raises(TrainingDataError, match="max_step 2001 is beyond the 2000 steps"):
        sample_rows(data, max_step=2001, strata=10, per_stratum=1)
    with pytest.raises(TrainingDataError, match="strata must be between 1 and max_step"):
        sample_rows(data, max_step=5, strata=6, per_stratum=1)


def test_rows_to_score_sample_each_file_and_take_canaries_at_their_last_occurrence(tmp_path, rows):
    standard = write_training_data(tmp_path / "standard", rows, rows_per_step=BATCH)  # 10 steps of 4 rows
    deduped = write_training_data(tmp_path / "deduped", rows[:8 * BATCH], rows_per_step=BATCH)
    canaries = pd.DataFrame({"canary": [7, 7, 7, 9], "row": [2, 13, 30, 5], "step": [0, 3, 7, 1],
                             "region": ["x"] * 4, "repetitions": [3, 3, 3, 1]})
    canaries.to_csv(tmp_path / "canaries.csv", index=False)
    table = rows_to_score({"standard": standard, "deduped": deduped}, {"standard": 10, "deduped": 10}, sample=10,
                          strata=5, seed=1, canaries={"standard": tmp_path / "canaries.csv"})
    assert list(table.columns) == list(ROW_COLUMNS)
    std, ded = table[table.data == "standard"], table[table.data == "deduped"]
    assert list(std[std.canary].row) == [5, 30] and list(std[std.canary].repetitions) == [1, 3]
    assert list(std[std.canary].seen_at_step) == [1, 7]
    sample = sample_rows(standard, 10, 5, 2, seed=1).rows
    assert list(std[~std.canary].row) == [r for r in sample if r not in (2, 13, 30, 5)]
    assert std[~std.canary].repetitions.isna().all() and (std.seen_at_step == std.row // BATCH).all()
    # The deduped file holds 8 steps: its sample spans those, and it has no canaries.
    assert not ded.canary.any() and list(ded.row) == list(sample_rows(deduped, 8, 5, 2, seed=1).rows)
    with pytest.raises(TrainingDataError, match="--sample 1000 is more rows than"):
        rows_to_score({"standard": standard}, {"standard": 10}, sample=1000, strata=5)
    canaries.assign(row=[2, 13, 30, 40]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(TrainingDataError, match="canary row 40 is beyond the 40 rows"):
        rows_to_score({"standard": standard}, {"standard": 10}, 4, canaries={"standard": tmp_path / "bad.csv"})
    canaries.drop(columns="region").to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(TrainingDataError, match="short.csv: canary table lacks columns region"):
        read_canaries(tmp_path / "short.csv")


def test_data_option_and_suite_declarations(tmp_path, rows, written):
    other = write_training_data(tmp_path / "other", rows[:BATCH], rows_per_step=BATCH)
    assert parse_data_option(str(tmp_path / "x.bin")) == {"": str(tmp_path / "x.bin")}
    assert parse_data_option("standard=a.bin, deduped=b") == {"standard": "a.bin", "deduped": "b"}
    declared = {"files": {"standard": str(tmp_path / "document"), "deduped": other.path}, "row_len": ROW_LEN,
                "rows_per_step": BATCH}
    opened = resolve_data(None, ["standard", "deduped"], declared)
    assert opened == {"standard": written, "deduped": other}
    assert resolve_data(other.path, ["standard"], declared) == {"standard": other}
    with pytest.raises(TrainingDataError, match="trained on standard and deduped data, which are different files"):
        resolve_data(other.path, ["standard", "deduped"], declared)
    with pytest.raises(TrainingDataError, match="no training data for the deduped models: give --data deduped=PATH"):
        resolve_data(f"standard={other.path}", ["standard", "deduped"], {"row_len": ROW_LEN})
    # Without declarations the layout is Pythia's, and these rows are not 2049 tokens long.
    with pytest.raises(TrainingDataError, match="is 9 tokens long, not row_len = 2049"):
        resolve_data(other.path, ["standard"])
