"""The training order as data: a pre-shuffled, pre-tokenized token file in which row i is the i-th sequence trained on.

The layout is Pythia's (EleutherAI's `pile-{standard,deduped}-pythia-preshuffled`, read by `utils/batch_viewer.py`):
a flat `.bin` of rows of `row_len` = seq_len + 1 tokens (2049 for Pythia), `rows_per_step` rows per optimizer step
(the training batch size, 1024), so step s trains on rows [s * rows_per_step, (s + 1) * rows_per_step) and the
checkpoint at step C has seen exactly the rows below C * rows_per_step. Beside the `.bin` there may be Megatron's
`.idx` (MMapIndexedDataset), in which every document is one row; it is validated when present, and always written,
so GPT-NeoX's tools read our files too.

`resolve_data` and `rows_to_score` turn a memorization run's `--data` and the suite's declarations into the files
and the rows to score.

    data = open_training_data("pile/document")              # document.bin (+ document.idx)
    sample = sample_rows(data, max_step=143000, strata=100, per_stratum=100, seed=0)
    tokens = data.tokens(sample.rows, columns=64)            # the first 64 tokens of each sampled row
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trajectories.errors import UserError
from trajectories.files import atomic_path
from trajectories.schema import CANARY_COLUMNS, DATA_VARIANTS, ROW_COLUMNS, TOKEN_DTYPES, RowSample

# gpt-neox's indexed_dataset dtype codes (utils/mmap_dataset.py in EleutherAI/pythia). Megatron has no unsigned
# 32-bit code and stores vocabularies of 65500 tokens or more as int32, so a uint32 file can only be a flat .bin.
MEGATRON_DTYPE_CODES = {"uint16": 8, "int32": 4}
MEGATRON_CODE_NAMES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float", 7: "double", 8: "uint16"}
IDX_MAGIC = b"MMIDIDX\x00\x00"
IDX_HEADER = struct.Struct("<9sQBQQ")  # magic, version (1), dtype code, number of documents, doc_idx length
PYTHIA_ROW_LEN, PYTHIA_ROWS_PER_STEP, PYTHIA_DTYPE = 2049, 1024, "uint16"


class TrainingDataError(UserError):
    """A training-data file that is missing, malformed or inconsistent with the layout asked for."""


@dataclass(frozen=True)
class TrainingData:
    """A token file in training order: n_rows rows of row_len tokens, rows_per_step rows per step."""

    path: str  # the .bin
    row_len: int = PYTHIA_ROW_LEN
    rows_per_step: int = PYTHIA_ROWS_PER_STEP
    dtype: str = PYTHIA_DTYPE
    n_rows: int = 0

    @property
    def n_steps(self) -> int:
        """Complete batches in the file: the longest training run it can describe."""
        return self.n_rows // self.rows_per_step

    def step_of(self, rows):
        """The step whose batch holds each row: the `seen_at_step` of a row (an int or an array, as given)."""
        return np.floor_divide(rows, self.rows_per_step)

    def rows_of_step(self, step: int) -> range:
        """The batch of step `step` (0-based: the first update trains on step 0's batch)."""
        if not 0 <= step < self.n_steps:
            raise self._beyond(f"step {step}")
        return range(step * self.rows_per_step, (step + 1) * self.rows_per_step)

    def rows_seen_by(self, checkpoint: int) -> range:
        """Rows the checkpoint at step `checkpoint` has been trained on: the batches of steps 0 .. checkpoint - 1."""
        if not 0 <= checkpoint <= self.n_steps:
            raise self._beyond(f"the checkpoint at step {checkpoint}")
        return range(checkpoint * self.rows_per_step)

    def tokens(self, rows, columns: int | None = None) -> np.ndarray:
        """The rows' tokens (the first `columns` of each), as int64 in the order asked for."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_rows):
            bad = rows[(rows < 0) | (rows >= self.n_rows)][0]
            raise TrainingDataError(f"{self.path}: row {bad} is out of range; the file holds rows 0..{self.n_rows - 1}")
        table = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.n_rows, self.row_len))
        return np.asarray(table[rows, :columns], dtype=np.int64)

    def _beyond(self, what: str) -> TrainingDataError:
        return TrainingDataError(f"{self.path} holds {self.n_rows} rows = {self.n_steps} steps of "
                                 f"{self.rows_per_step} rows; {what} is outside that (another data file, or another "
                                 "batch size?)")


def data_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(.bin, .idx) for a Megatron prefix ("…/document") or either file's path."""
    path = Path(path)
    prefix = path.with_suffix("") if path.suffix in (".bin", ".idx") else path
    return prefix.with_name(prefix.name + ".bin"), prefix.with_name(prefix.name + ".idx")


def _check_layout(row_len: int, rows_per_step: int, dtype: str | None) -> None:
    if not (isinstance(row_len, int) and row_len > 0):
        raise TrainingDataError(f"row_len must be a positive number of tokens (seq_len + 1), not {row_len!r}")
    if not (isinstance(rows_per_step, int) and rows_per_step > 0):
        raise TrainingDataError(f"rows_per_step must be a positive number of rows per step, not {rows_per_step!r}")
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


def open_training_data(path: str | os.PathLike, row_len: int = PYTHIA_ROW_LEN,
                       rows_per_step: int = PYTHIA_ROWS_PER_STEP, dtype: str | None = None) -> TrainingData:
    """Open `<prefix>.bin` (path may be the prefix, the .bin or the .idx), validated against its .idx if present.

    dtype defaults to the .idx's, else to uint16 (Pythia's); a dtype that contradicts the .idx is an error."""
    _check_layout(row_len, rows_per_step, dtype)
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
    return TrainingData(str(bin_path), row_len, rows_per_step, dtype, n_rows)


def write_training_data(path: str | os.PathLike, rows: np.ndarray | Iterable[np.ndarray],
                        rows_per_step: int = PYTHIA_ROWS_PER_STEP, dtype: str = PYTHIA_DTYPE) -> TrainingData:
    """Write rows in training order as `<prefix>.bin` + a matching Megatron `<prefix>.idx`; returns the file opened.

    rows: an (n, row_len) array, or an iterable of such arrays (e.g. one batch at a time) all of one row_len.
    Both files are written beside their destinations and renamed into place (files.py) once both are complete, so a
    crash leaves no half-written file."""
    _check_layout(1, rows_per_step, dtype)
    if dtype not in MEGATRON_DTYPE_CODES:
        raise TrainingDataError(f"cannot write dtype {dtype}: Megatron's .idx has codes only for "
                                f"{', '.join(MEGATRON_DTYPE_CODES)} (it stores large vocabularies as int32)")
    bin_path, idx = data_paths(path)
    chunks = [rows] if isinstance(rows, np.ndarray) else rows
    limits, row_len, n_rows = np.iinfo(dtype), None, 0
    with ExitStack() as files:  # both files are renamed into place only once both are complete
        tmp_bin, tmp_idx = files.enter_context(atomic_path(bin_path)), files.enter_context(atomic_path(idx))
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
    return TrainingData(str(bin_path), row_len, rows_per_step, dtype, n_rows)


# ---------------------------------------------------------------------------------------------------- sampling
def sample_rows(data: TrainingData, max_step: int, strata: int = 100, per_stratum: int = 100,
                seed: int = 0) -> RowSample:
    """Draw `per_stratum` rows from each of `strata` equal runs of consecutive batches before `max_step`."""
    if not 0 < strata <= max_step:
        raise TrainingDataError(f"strata must be between 1 and max_step = {max_step}, not {strata}")
    if max_step > data.n_steps:
        raise TrainingDataError(f"max_step {max_step} is beyond the {data.n_steps} steps {data.path} holds")
    edges = np.arange(strata + 1) * max_step // strata
    smallest = int(np.diff(edges).min()) * data.rows_per_step
    if not 0 < per_stratum <= smallest:
        raise TrainingDataError(f"per_stratum must be between 1 and {smallest} (the rows of the smallest stratum), "
                                f"not {per_stratum}")
    rng = np.random.default_rng(seed)
    rows = [edges[k] * data.rows_per_step
            + rng.choice((edges[k + 1] - edges[k]) * data.rows_per_step, per_stratum, replace=False)
            for k in range(strata)]
    return RowSample(max_step, strata, per_stratum, seed, data.rows_per_step,
                     tuple(int(r) for r in np.sort(np.concatenate(rows))))


# ---------------------------------------------------------------------------------------------------- rows to score
def read_canaries(path: str | os.PathLike) -> pd.DataFrame:
    """A suite's canary table (schema.CANARY_COLUMNS, one line per occurrence), columns checked."""
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise TrainingDataError(f"canary table {path} does not exist") from None
    missing = [c for c in CANARY_COLUMNS if c not in table.columns]
    if missing:
        raise TrainingDataError(f"{path}: canary table lacks columns {', '.join(missing)} "
                                f"(expected {', '.join(CANARY_COLUMNS)})")
    return table[list(CANARY_COLUMNS)]


def parse_data_option(option: str | dict | None) -> dict[str, str]:
    """`--data`: "PATH" (one file for every model chosen) -> {"": PATH}; "standard=PATH,deduped=PATH" -> by variant."""
    if option is None or isinstance(option, dict):
        files = dict(option or {})
    elif "=" not in option:
        return {"": option}
    else:
        files = {}
        for part in filter(None, (p.strip() for p in option.split(","))):
            variant, _, path = part.partition("=")
            files[variant.strip()] = path.strip()
    unknown = [v for v in files if v not in DATA_VARIANTS]
    if unknown:
        raise TrainingDataError(f"--data names data variant {unknown[0]!r}; the variants are "
                                f"{', '.join(DATA_VARIANTS)} (e.g. --data standard=PATH,deduped=PATH)")
    return files


def resolve_data(option: str | dict | None, variants: list[str], declared: dict | None = None,
                 row_len: int | None = None, rows_per_step: int | None = None,
                 dtype: str | None = None) -> dict[str, TrainingData]:
    """The training-data file of each data variant the chosen models were trained on, opened and checked.

    option: `--data` (see parse_data_option); declared: what the suite says about its data (suites.Suite.training_data:
    files by variant, row_len, rows_per_step, dtype), the default for every field. Without either, the layout is
    Pythia's."""
    declared = declared or {}
    given = parse_data_option(option)
    files = dict(declared.get("files", {}))
    if "" in given:
        if len(variants) > 1:
            raise TrainingDataError(
                "the models chosen were trained on standard and deduped data, which are different files: give "
                "--data standard=PATH,deduped=PATH, or choose models of one variant")
        files = {variants[0]: given[""]}
    else:
        files |= given
    missing = [v for v in variants if v not in files]
    if missing:
        raise TrainingDataError(f"no training data for the {missing[0]} models: give --data "
                                f"{missing[0]}=PATH (a .bin, its .idx, or their prefix)")
    row_len = row_len or declared.get("row_len") or PYTHIA_ROW_LEN
    rows_per_step = rows_per_step or declared.get("rows_per_step") or PYTHIA_ROWS_PER_STEP
    dtype = dtype or declared.get("dtype")
    return {v: open_training_data(files[v], row_len, rows_per_step, dtype) for v in variants}


def rows_to_score(data: dict[str, TrainingData], max_steps: dict[str, int], sample: int, strata: int = 100,
                  seed: int = 0, canaries: dict[str, str] | None = None) -> pd.DataFrame:
    """The rows a memorization run scores (schema.ROW_COLUMNS): per data variant, a stratified sample of `sample`
    rows (rounded down to a multiple of the strata) trained on before max_steps[variant] (the suite's last
    checkpoint, or the end of the file), and each canary of the suite at its last occurrence. Sampled rows that hold
    a canary are left out of the sample."""
    if sample < 0 or strata < 1:
        raise TrainingDataError(f"the sample must be at least 0 rows in at least 1 stratum, not {sample} in {strata}")
    frames = []
    for variant, file in data.items():
        max_step = min(max_steps[variant], file.n_steps)
        drawn = np.zeros(0, np.int64)
        if sample:
            k = min(strata, max_step, sample)
            if not k or sample // k > (max_step // k) * file.rows_per_step:
                raise TrainingDataError(f"--sample {sample} is more rows than {file.path} holds before step {max_step}")
            drawn = np.array(sample_rows(file, max_step, k, sample // k, seed).rows, np.int64)
        planted = read_canaries(canaries[variant]) if variant in (canaries or {}) else pd.DataFrame(
            columns=list(CANARY_COLUMNS))
        if len(planted) and planted.row.max() >= file.n_rows:
            raise TrainingDataError(f"{canaries[variant]}: canary row {planted.row.max()} is beyond the "
                                    f"{file.n_rows} rows of {file.path}")
        last = planted.sort_values("row").groupby("canary").tail(1)
        drawn = drawn[~np.isin(drawn, planted.row.to_numpy(np.int64))]
        rows = np.concatenate([drawn, last.row.to_numpy(np.int64)])
        frames.append(pd.DataFrame({
            "data": variant, "row": rows, "seen_at_step": file.step_of(rows),
            "canary": np.arange(len(rows)) >= len(drawn),
            "repetitions": pd.array([pd.NA] * len(drawn) + last.repetitions.tolist(), dtype="Int64"),
        }))
    return pd.concat(frames, ignore_index=True)[list(ROW_COLUMNS)].sort_values(["data", "row"], ignore_index=True)
