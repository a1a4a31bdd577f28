"""Tasks: what is measured. lm-eval task YAMLs (BLiMP's own, the project's `tasks/` folder) resolved by name.

A task spec on the command line is a family (`blimp`, `minigrammar`, any group in tasks/), a family restricted to
one phenomenon (`blimp:island_effects`), a single task (`blimp_adjunct_island`) or a bare BLiMP paradigm name.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from copy import deepcopy
from pathlib import Path

from trajectories.errors import UserError

BLIMP_PARADIGMS: dict[str, str] = json.loads((Path(__file__).with_name("blimp_paradigms.json")).read_text())
BLIMP_PHENOMENA = tuple(sorted(set(BLIMP_PARADIGMS.values())))
BLIMP_DIR_ENV = "TRAJECTORIES_BLIMP_DIR"
TASKS_DIR_ENV = "TRAJECTORIES_TASKS_DIR"


class TaskError(UserError):
    """A task spec or task data the user gave is wrong; the message names valid choices or missing files."""


def default_tasks_dir() -> Path:
    return Path(os.environ.get(TASKS_DIR_ENV) or Path(__file__).resolve().parent.parent / "tasks")


def _lm_eval_blimp_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks" / "blimp"


class TaskCatalog:
    """The tasks the harness can run here, indexed from only the folders that matter (indexing all of lm-eval's
    tasks takes seconds); names outside them fall back to lm-eval's full registry."""

    def __init__(self, task_dirs: tuple[Path, ...] | None = None, blimp_dir: str | Path | None = None):
        self.task_dirs = tuple(Path(d) for d in (task_dirs or (default_tasks_dir(),)) if Path(d).is_dir())
        blimp_dir = blimp_dir or os.environ.get(BLIMP_DIR_ENV)
        self.blimp_dir = Path(blimp_dir).expanduser().resolve() if blimp_dir else None

    @functools.cached_property
    def manager(self):
        from lm_eval.tasks import TaskManager

        return TaskManager(include_defaults=False, include_path=[_lm_eval_blimp_dir(), *self.task_dirs])

    @functools.cached_property
    def _full_manager(self):
        from lm_eval.tasks import TaskManager

        return TaskManager(include_path=list(self.task_dirs) or None)

    def local_task_names(self) -> list[str]:
        """Tasks defined by YAMLs in the project's task folders."""
        return [
            name for name, entry in self.manager.task_index.items()
            if entry.yaml_path and any(Path(entry.yaml_path).is_relative_to(d.resolve()) for d in self.task_dirs)
        ]

    def _entry(self, name: str):
        entry = self.manager.task_index.get(name)
        if entry is None:
            entry = self._full_manager.task_index.get(name)
        return entry

    def phenomenon(self, task: str) -> str:
        paradigm = task.removeprefix("blimp_")
        if task.startswith("blimp_") and paradigm in BLIMP_PARADIGMS:
            return BLIMP_PARADIGMS[paradigm]
        # Tasks outside our folders carry no phenomenon, so lm-eval's full registry need not be indexed here.
        entry = self.manager.task_index.get(task)
        metadata = (entry.cfg or {}).get("metadata") if entry else None
        return str(metadata.get("phenomenon", "")) if isinstance(metadata, dict) else ""

    def _members(self, name: str) -> list[str] | None:
        """Leaf tasks of a group or tag, None if `name` is a single task, raising if unknown."""
        from lm_eval.tasks._index import Kind

        entry = self._entry(name)
        if entry is None:
            return None
        if entry.kind == Kind.TAG:
            manager = self.manager if name in self.manager.task_index else self._full_manager
            return sorted(n for n, e in manager.task_index.items() if name in e.tags)
        if entry.kind != Kind.GROUP:
            return [name]
        leaves = []
        for child in entry.cfg.get("task", []):
            child_name = child if isinstance(child, str) else child.get("task") or child.get("group")
            leaves += self._members(child_name) or [child_name]
        return leaves

    def expand(self, specs: list[str] | str) -> list[str]:
        """Task names (deduplicated, in order) that the specs name."""
        if isinstance(specs, str):
            specs = [s for s in specs.split(",") if s.strip()]
        names: list[str] = []
        for spec in (s.strip() for s in specs):
            family, _, phenomenon = spec.partition(":")
            if family in BLIMP_PARADIGMS:
                family = "blimp_" + family
            members = self._members(family)
            if members is None:
                raise TaskError(self._unknown(family))
            if phenomenon:
                by_phenomenon = {}
                for member in members:
                    by_phenomenon.setdefault(self.phenomenon(member), []).append(member)
                if phenomenon not in by_phenomenon:
                    valid = ", ".join(sorted(by_phenomenon))
                    raise TaskError(f"{family!r} has no phenomenon {phenomenon!r}; its phenomena: {valid}")
                members = by_phenomenon[phenomenon]
            names += [m for m in members if m not in names]
        if not names:
            raise TaskError("no tasks given; try --tasks blimp or --tasks minigrammar")
        return names

    def _unknown(self, name: str) -> str:
        known = list(self.manager.task_index) + list(BLIMP_PARADIGMS)
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return f"unknown task {name!r}.{hint} (`trajectories tasks list` shows every task)"

    def config(self, name: str) -> dict:
        """lm-eval's config for one task, with its data pointed at local files where they exist."""
        entry = self._entry(name)
        cfg = deepcopy(entry.cfg)
        paradigm = name.removeprefix("blimp_")
        if self.blimp_dir and name.startswith("blimp_") and paradigm in BLIMP_PARADIGMS:
            cfg.update(
                dataset_path="json", dataset_name=None,
                dataset_kwargs={"data_files": {"train": str(self.blimp_dir / f"{paradigm}.jsonl")}},
            )
        elif entry.yaml_path:
            files = (cfg.get("dataset_kwargs") or {}).get("data_files")
            if isinstance(files, dict):
                # Relative data paths in a task YAML mean "beside this YAML", wherever the sweep runs from.
                here = Path(entry.yaml_path).parent
                cfg["dataset_kwargs"]["data_files"] = {split: str(here / f) for split, f in files.items()}
        return cfg

    def check_data(self, names: list[str]) -> None:
        """Fail before any work starts if local data files are missing."""
        missing = []
        for name in names:
            files = (self.config(name).get("dataset_kwargs") or {}).get("data_files") or {}
            missing += [f for f in (files.values() if isinstance(files, dict) else []) if not Path(f).is_file()]
        if missing:
            where = f" in --blimp-dir {self.blimp_dir}" if self.blimp_dir else ""
            raise TaskError(f"missing task data files{where}: " + ", ".join(missing))

    def load(self, names: list[str]) -> dict:
        """lm-eval's task dict for `names`: build it once and reuse it for every checkpoint."""
        self.check_data(names)
        return self.manager.load([self.config(name) for name in names])
