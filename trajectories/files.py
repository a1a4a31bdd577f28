"""Atomic writes, the one way every module writes a file or a folder: into a temp name beside the target, renamed
onto it only when complete, so a crash or kill at any moment leaves the old content or the new, never half of one.

Files get the permissions a plain `open` would give under the user's umask (mkstemp's 0600 would hide results from
colleagues on a shared filesystem).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".tmp-"  # in the name of every temp file and folder, so leftovers can be recognised and cleaned up


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temp folder beside `path`; when the block finishes it replaces `path` (an existing folder is
    moved aside first and removed after), so readers see the old folder or the new one, complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent))
    old = tmp.with_name(tmp.name + ".old")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~UMASK)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    except BaseException:
        if old.exists() and not path.exists():
            old.rename(path)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=1, default=str, allow_nan=True) + "\n")


def write_table(table, path: Path) -> None:
    """A pandas DataFrame as CSV or Parquet, by the path's suffix."""
    with atomic_path(path) as tmp:
        if Path(path).suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)


def remove_temp_files(folder: Path, pattern: str = "*", older_than: float = 0) -> None:
    """Delete leftovers of interrupted writes under `folder` (younger ones may be another process's write)."""
    import time

    for tmp in Path(folder).rglob(f".{pattern}{TMP_MARK}*"):
        try:
            if time.time() - tmp.stat().st_mtime >= older_than:
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        except FileNotFoundError:
            pass
