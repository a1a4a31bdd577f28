"""Atomic writes, the one way every module writes a file or a folder: into a temp name beside the target, renamed
onto it only when complete, so a crash or kill at any moment leaves the old content or the new, never half of one.

Files get the permissions a plain `open` would give under the user's umask (mkstemp's 0600 would hide results from
colleagues on a shared filesystem).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trajectories.errors import WriteError

TMP_MARK = ".tmp-"  # in the name of every temp file and folder, so leftovers can be recognised and cleaned up


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block finishes. Any OSError on the way is
    raised as a WriteError naming `path` (a full disk, a read-only folder)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}")
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except OSError as err:
        if isinstance(err, WriteError):
            raise
        # Writers often name no file (a full disk's write()), or the temp file: name the one being written, and
        # another only when it is the cause (a folder that cannot be made). pyarrow gives its errno only in words.
        said = re.search(r"\[errno (\d+)\]", str(err))
        code = err.errno or (int(said[1]) if said else None)
        cause = os.strerror(code) if code else str(err)
        other = err.filename and TMP_MARK not in str(err.filename)
        raise WriteError(code, f"{cause}: {err.filename}" if other else cause, str(path)) from err
    finally:
        if tmp and os.path.exists(tmp):
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


def move_aside(path: Path, folder: Path) -> Path:
    """Move `path` into `folder` under its own name (numbered `.1`, `.2`, ... when the name is taken there), never
    overwriting or deleting anything; returns where it went."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in itertools.count():
        target = folder / (path.name if n == 0 else f"{path.name}.{n}")
        try:
            os.link(path, target)  # fails rather than replace a file set aside before
        except FileExistsError:
            continue
        except OSError:  # a filesystem without hard links: the check and the move are two steps
            if target.exists():
                continue
            os.rename(path, target)
            return target
        os.unlink(path)
        return target


def remove_temp_files(folder: Path, pattern: str = "*", older_than: float = 0) -> None:
    """Delete leftovers of interrupted writes under `folder` (younger ones may be another process's write)."""
    import time

    for tmp in Path(folder).rglob(f".{pattern}{TMP_MARK}*"):
        try:
            if time.time() - tmp.stat().st_mtime >= older_than:
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        except FileNotFoundError:
            pass
