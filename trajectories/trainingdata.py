"""The training order as data: a pre-shuffled, pre-tokenized token file in which row i is the i-th sequence trained on.

The layout is Pythia's (EleutherAI's `pile-{standard,deduped}-pythia-preshuffled`, read by `utils/batch_viewer.py`):
a flat `.bin` of rows of `row_len` = seq_len + 1 tokens (2049 for Pythia), `batch_size` rows per optimizer step
(1024), so step s trains on rows [s * batch_size, (s + 1) * batch_size) and the checkpoint at step C has seen exactly
the rows below C * batch_size. Beside the `.bin` there may be Megatron's `.idx` (MMapIndexedDataset), in which every
document is one row; it is validated when present, and always written, so GPT-NeoX's tools read our files too.

    data = open_training_data("pile/document")              # document.bin (+ document.idx)
    sample = sample_rows(data, max_step=143000, strata=100, per_stratum=100, seed=0)
    tokens = data.tokens(sample.rows, columns=64)            # the first 64 tokens of each sampled row
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trajectories.errors import UserError

TOKEN_DTYPES = ("uint16", "uint32", "int32")
# gpt-neox's indexed_dataset dtype codes (utils/mmap_dataset.py in EleutherAI/pythia). Megatron has no unsigned
# 32-bit code and stores vocabularies of 65500 tokens or more as int32, so a uint32 file can only be a flat .bin.
MEGATRON_DTYPE_CODES = {"uint16": 8, "int32": 4}
MEGATRON_CODE_NAMES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float", 7: "double", 8: "uint16"}
IDX_MAGIC = b"MMIDIDX\x00\x00"
IDX_HEADER = struct.Struct("<9sQBQQ")  # magic, version (1), dtype code, number of documents, doc_idx length
PYTHIA_ROW_LEN, PYTHIA_BATCH_SIZE, PYTHIA_DTYPE = 2049, 1024, "uint16"


class TrainingDataError(UserError):
    """A training-data file that is missing, malformed or inconsistent with the layout asked for."""


@dataclass(frozen=True)
class TrainingData:
    """A token file in training order: n_rows rows of row_len tokens, batch_size rows per step."""

    path: str  # the .bin
    row_len: int = PYTHIA_ROW_LEN
    batch_size: int = PYTHIA_BATCH_SIZE
    dtype: str = PYTHIA_DTYPE
    n_rows: int = 0

    @property
    def n_steps(self) -> int:
        """Complete batches in the file: the longest training run it can describe."""
        return self.n_rows // self.batch_size

    def step_of(self, rows):
        """The step whose batch holds each row: the `seen_at_step` of a row (an int or an array, as given)."""
        return np.floor_divide(rows, self.batch_size)

    def rows_of_step(self, step: int) -> range:
        """The batch of step `step` (0-based: the first update trains on step 0's batch)."""
        if not 0 <= step < self.n_steps:
            raise self._beyond(f"step {step}")
        return range(step * self.batch_size, (step + 1) * self.batch_size)

    def rows_seen_by(self, checkpoint: int) -> range:
        """Rows the checkpoint at step `checkpoint` has been trained on: the batches of steps 0 .. checkpoint - 1."""
        if not 0 <= checkpoint <= self.n_steps:
            raise self._beyond(f"the checkpoint at step {checkpoint}")
        return range(checkpoint * self.batch_size)

    def tokens(self, rows, columns: int | None = None) -> np.ndarray:
        """The rows' tokens (the first `columns` of each), as int64 in the order asked for."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_rows):
            bad = rows[(rows < 0) | (rows >= self.n_rows)][0]
            raise TrainingDataError(f"{self.path}: row {bad} is out of range; the file holds rows 0..{self.n_rows - 1}")
        table = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.n_rows, self.row_len))
        return np.asarray(table[rows, :columns], dtype=np.int64)

    def _beyond(self, what: str) -> TrainingDataError:
        return TrainingDataError(f"{self.path} holds {self.n_rows} rows = {self.n_steps} steps of {self.batch_size} "
                                 f"rows; {what} is outside that (another data file, or another batch size?)")


def data_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(.bin, .idx) for a Megatron prefix ("…/document") or either file's path."""
    path = Path(path)
    prefix = path.with_suffix("") if path.suffix in (".bin", ".idx") else path
    return prefix.with_name(prefix.name + ".bin"), prefix.with_name(prefix.name + ".idx")


def _check_layout(row_len: int, batch_size: int, dtype: str | None) -> None:
    if not (isinstance(row_len, int) and row_len > 0):
        raise TrainingDataError(f"row_len must be a positive number of tokens (seq_len + 1), not {row_len!r}")
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise TrainingDataError(f"batch_size must be a positive number of rows per step, not {batch_size!r}")
    if dtype is not None and dtype not in TOKEN_DTYPES:
        raise TrainingDataError(f"token dtype {dtype!r} is not supported; choose one of {', '.join(TOKEN_DTYPES)}")


def read_idx(idx: Path) -> tuple[str, np.ndarray, np.ndarray]:
    """Megatron's index: (token dtype, document sizes, byte pointers), header and length checked."""
    size = idx.stat().st_size
    with open(idx, "rb") as f:
        head = f.read(IDX_HEADER.size)
    if len(head) < IDX_HEADER.size or head[:9] != IDX_MAGIC:
        raise TrainingDataError(f"{idx} is not a Megatron MMapIndexedDataset index (its header is not {IDX_MAGIC!r})")
    _, version, code, n_docs, n_doc_idx = IDX_HEADER.unpack(head)
    if version != 1:
        raise TrainingDataError(f"{idx}: index version {version} is not supported (only version 1)")
    dtype = next((name for name, c in MEGATRON_DTYPE_CODES.items() if c == code), None)
    if dtype is None:
        known = MEGATRON_CODE_NAMES.get(code, "unknown")
        raise TrainingDataError(
            f"{idx}: token dtype code {code} ({known}) is not a token dtype this reader supports; "
            f"supported: {', '.join(f'{c} ({name})' for name, c in MEGATRON_DTYPE_CODES.items())}")
    expected = IDX_HEADER.size + n_docs * (4 + 8) + n_doc_idx * 8
    if size != expected:
        raise TrainingDataError(f"{idx} is {size} bytes, but its header ({n_docs} documents) implies {expected}: "
                                "truncated or not an index file")
    sizes = np.memmap(idx, dtype=np.int32, mode="r", offset=IDX_HEADER.size, shape=(n_docs,))
    pointers = np.memmap(idx, dtype=np.int64, mode="r", offset=IDX_HEADER.size + 4 * n_docs, shape=(n_docs,))
    return dtype, sizes, pointers


def _check_rows_in_idx(idx: Path, sizes: np.ndarray, pointers: np.ndarray, row_len: int, itemsize: int) -> None:
    # Chunked: Pythia's index has 146M documents, and the temporaries of one vectorised pass would take gigabytes.
    chunk = 1 << 22
    for start in range(0, len(sizes), chunk):
        s = np.asarray(sizes[start:start + chunk])
        if (s != row_len).any():
            i = start + int(np.argmax(s != row_len))
            raise TrainingDataError(f"{idx}: document {i} is {sizes[i]} tokens long, not row_len = {row_len}; every "
                                    "document must be one training row (wrong --row-len, or not a pre-shuffled file?)")
        expected = (np.arange(start, start + len(s), dtype=np.int64)) * (row_len * itemsize)
        p = np.asarray(pointers[start:start + chunk])
        if (p != expected).any():
            i = start + int(np.argmax(p != expected))
            raise TrainingDataError(f"{idx}: document {i} starts at byte {pointers[i]}, not {expected[i - start]}: "
                                    "the rows are not stored contiguously in order")


def open_training_data(path: str | os.PathLike, row_len: int = PYTHIA_ROW_LEN, batch_size: int = PYTHIA_BATCH_SIZE,
                       dtype: str | None = None) -> TrainingData:
    """Open `<prefix>.bin` (path may be the prefix, the .bin or the .idx), validated against its .idx if present.

    dtype defaults to the .idx's, else to uint16 (Pythia's); a dtype that contradicts the .idx is an error."""
    _check_layout(row_len, batch_size, dtype)
    bin_path, idx = data_paths(path)
    if not bin_path.is_file():
        raise TrainingDataError(f"training data file {bin_path} does not exist (give the .bin, .idx or their prefix)")
    n_docs = None
    if idx.is_file():
        idx_dtype, sizes, pointers = read_idx(idx)
        if dtype is not None and dtype != idx_dtype:
            raise TrainingDataError(f"{idx} says the tokens are {idx_dtype}, but dtype {dtype} was asked for")
        dtype, n_docs = idx_dtype, len(sizes)
        _check_rows_in_idx(idx, sizes, pointers, row_len, np.dtype(dtype).itemsize)
    dtype = dtype or PYTHIA_DTYPE
    n_bytes, row_bytes = bin_path.stat().st_size, row_len * np.dtype(dtype).itemsize
    if n_bytes % row_bytes:
        raise TrainingDataError(
            f"{bin_path} is {n_bytes} bytes, not a multiple of the row length ({row_len} {dtype} tokens = "
            f"{row_bytes} bytes); wrong row_len or dtype?")
    n_rows = n_bytes // row_bytes
    if n_docs is not None and n_docs != n_rows:
        raise TrainingDataError(f"{idx} lists {n_docs} documents but {bin_path} holds {n_rows} rows of "
                                f"{row_len} tokens: the two files do not belong together")
    return TrainingData(str(bin_path), row_len, batch_size, dtype, n_rows)


def write_training_data(path: str | os.PathLike, rows: np.ndarray | Iterable[np.ndarray],
                        batch_size: int = PYTHIA_BATCH_SIZE, dtype: str = PYTHIA_DTYPE) -> TrainingData:
    """Write rows in training order as `<prefix>.bin` + a matching Megatron `<prefix>.idx`; returns the file opened.

    rows: an (n, row_len) array, or an iterable of such arrays (e.g. one batch at a time) all of one row_len.
    Each file is written beside its destination and renamed into place, so a crash leaves no half-written file."""
    _check_layout(1, batch_size, dtype)
    if dtype not in MEGATRON_DTYPE_CODES:
        raise TrainingDataError(f"cannot write dtype {dtype}: Megatron's .idx has codes only for "
                                f"{', '.join(MEGATRON_DTYPE_CODES)} (it stores large vocabularies as int32)")
    bin_path, idx = data_paths(path)
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    chunks = [rows] if isinstance(rows, np.ndarray) else rows
    limits, row_len, n_rows = np.iinfo(dtype), None, 0
    tmp_bin, tmp_idx = bin_path.with_name(f".{bin_path.name}.tmp"), idx.with_name(f".{idx.name}.tmp")
    try:
        with open(tmp_bin, "wb") as f:
            for chunk in chunks:
                chunk = np.asarray(chunk)
                if chunk.ndim != 2 or chunk.shape[1] == 0:
                    raise TrainingDataError(f"rows for {bin_path} must be 2-D (rows x tokens), got shape {chunk.shape}")
                row_len = row_len or chunk.shape[1]
                if chunk.shape[1] != row_len:
                    raise TrainingDataError(f"rows for {bin_path} have {chunk.shape[1]} tokens after {row_len}: "
                                            "every row must have the same length")
                if chunk.size and (chunk.min() < limits.min or chunk.max() > limits.max):
                    bad = chunk.max() if chunk.max() > limits.max else chunk.min()
                    raise TrainingDataError(f"token id {bad} does not fit {dtype}; write int32 instead")
                f.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
                n_rows += len(chunk)
        if not n_rows:
            raise TrainingDataError(f"no rows to write to {bin_path}")
        with open(tmp_idx, "wb") as f:
            f.write(IDX_HEADER.pack(IDX_MAGIC, 1, MEGATRON_DTYPE_CODES[dtype], n_rows, n_rows + 1))
            f.write(np.full(n_rows, row_len, dtype=np.int32).tobytes())
            f.write((np.arange(n_rows, dtype=np.int64) * (row_len * np.dtype(dtype).itemsize)).tobytes())
            f.write(np.arange(n_rows + 1, dtype=np.int64).tobytes())  # document i is row i, as in Megatron's builder
        os.replace(tmp_bin, bin_path)
        os.replace(tmp_idx, idx)
    finally:
        tmp_bin.unlink(missing_ok=True)
        tmp_idx.unlink(missing_ok=True)
    return TrainingData(str(bin_path), row_len, batch_size, dtype, n_rows)


# ---------------------------------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class RowSample:
    """A stratified sample of the rows trained on before `max_step`, and what it takes to draw it again.

    Steps [0, max_step) are cut into `strata` runs of consecutive batches (stratum k: steps
    [k * max_step // strata, (k + 1) * max_step // strata)), and `per_stratum` rows are drawn from each, uniformly
    without replacement, so every part of training is represented equally however rare memorization is."""

    max_step: int
    strata: int
    per_stratum: int
    seed: int
    batch_size: int
    rows: tuple[int, ...]  # sorted

    @property
    def params(self) -> dict:
        """The arguments of `sample_rows` that redraw this sample from the same data."""
        return {"max_step": self.max_step, "strata": self.strata, "per_stratum": self.per_stratum, "seed": self.seed}

    def stratum_edges(self) -> np.ndarray:
        """Step boundaries of the strata: stratum k covers steps [edges[k], edges[k + 1])."""
        return np.arange(self.strata + 1) * self.max_step // self.strata

    def as_dict(self) -> dict:
        return asdict(self) | {"rows": list(self.rows)}

    @classmethod
    def from_dict(cls, d: dict) -> RowSample:
        return cls(**(d | {"rows": tuple(int(r) for r in d["rows"])}))


def sample_rows(data: TrainingData, max_step: int, strata: int = 100, per_stratum: int = 100,
                seed: int = 0) -> RowSample:
    """Draw `per_stratum` rows from each of `strata` equal runs of consecutive batches before `max_step`."""
    if not 0 < strata <= max_step:
        raise TrainingDataError(f"strata must be between 1 and max_step = {max_step}, not {strata}")
    if max_step > data.n_steps:
        raise TrainingDataError(f"max_step {max_step} is beyond the {data.n_steps} steps {data.path} holds")
    edges = np.arange(strata + 1) * max_step // strata
    smallest = int(np.diff(edges).min()) * data.batch_size
    if not 0 < per_stratum <= smallest:
        raise TrainingDataError(f"per_stratum must be between 1 and {smallest} (the rows of the smallest stratum), "
                                f"not {per_stratum}")
    rng = np.random.default_rng(seed)
    rows = [edges[k] * data.batch_size + rng.choice((edges[k + 1] - edges[k]) * data.batch_size, per_stratum,
                                                    replace=False)
            for k in range(strata)]
    return RowSample(max_step, strata, per_stratum, seed, data.batch_size,
                     tuple(int(r) for r in np.sort(np.concatenate(rows))))
