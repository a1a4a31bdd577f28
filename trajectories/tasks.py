"""Tasks: what is measured. lm-eval task YAMLs resolved by name: BLiMP's own, the built-in minigrammar family
shipped inside the package, the user's task folder, and anything else lm-eval defines.

A task spec on the command line is a family (`blimp`, `minigrammar`, any group in a task folder), a family restricted
to one phenomenon (`blimp:island_effects`), a single task (`blimp_adjunct_island`) or a bare BLiMP paradigm name.

The user's tasks live in the first of: `--tasks-dir`, `$TRAJECTORIES_TASKS_DIR`, `./tasks` (the repo's `tasks/` in
a checkout). `tasks add` writes there; every command reads it beside the built-in tasks (and `./tasks` too, when it
exists and another folder was named).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

from trajectories.errors import UserError
from trajectories.fields import BLIMP_FIELDS

PACKAGE_DIR = Path(__file__).resolve().parent
BUILTIN_TASKS_DIR = PACKAGE_DIR / "builtin_tasks"
BLIMP_PARADIGMS: dict[str, str] = json.loads((PACKAGE_DIR / "blimp_paradigms.json").read_text())
BLIMP_PHENOMENA = tuple(sorted(set(BLIMP_PARADIGMS.values())))
BLIMP_PAIRS = 1000
MAX_DATA_BYTES = 2**30  # a task data file larger than this is refused: BLiMP's largest paradigm is under 1 MB
BLIMP_DIR_ENV = "TRAJECTORIES_BLIMP_DIR"
TASKS_DIR_ENV = "TRAJECTORIES_TASKS_DIR"
NAMES_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trajectories"
# lm-eval's other minimal-pair families (folders of its tasks); their data is on the hub.
HUB_FAMILIES = ("blimp_nl", "lm_syneval", "multiblimp", "turblimp", "zhoblimp")


class TaskError(UserError):
    """A task spec or task data the user gave is wrong; the message names valid choices or missing files."""


def user_tasks_dir(option: str | Path | None = None) -> Path:
    """Where the user's tasks live, and where `tasks add` writes."""
    return Path(option or os.environ.get(TASKS_DIR_ENV) or "tasks").expanduser().resolve()


def task_dirs(option: str | Path | None = None) -> tuple[Path, ...]:
    """Every folder whose task YAMLs are read: the built-in tasks, the user's folder, and ./tasks."""
    dirs = [BUILTIN_TASKS_DIR, user_tasks_dir(option), Path("tasks").resolve()]
    return tuple(d for i, d in enumerate(dirs) if d.is_dir() and d not in dirs[:i])


@dataclass(frozen=True)
class TaskInfo:
    """A row of `tasks list`."""

    family: str  # what `--tasks` takes to run the whole family
    task: str
    phenomenon: str
    pairs: int | None  # None: the data is on the hub, and is not downloaded just to count it
    source: str
    summarized: bool = False  # listed as one line per family unless the family is asked for


class TaskCatalog:
    """The tasks the harness can run here, indexed from only the folders that matter (indexing all of lm-eval's
    tasks takes seconds); names outside them fall back to lm-eval's full index."""

    def __init__(self, tasks_dir: str | Path | None = None, blimp_dir: str | Path | None = None):
        self.task_dirs = task_dirs(tasks_dir)
        blimp_dir = blimp_dir or os.environ.get(BLIMP_DIR_ENV)
        self.blimp_dir = Path(blimp_dir).expanduser().resolve() if blimp_dir else None

    @functools.cached_property
    def index(self):
        from trajectories import lmeval  # lm-eval loads in seconds: only commands that need tasks pay for it

        return lmeval.TaskIndex([lmeval.BLIMP_TASKS_DIR, *self.task_dirs])

    @functools.cached_property
    def full_index(self):
        from trajectories import lmeval

        return lmeval.TaskIndex(list(self.task_dirs), with_lm_eval_tasks=True)

    def _entry(self, name: str):
        return self.index.entries.get(name) or self.full_index.entries.get(name)

    def local_task_names(self) -> list[str]:
        """Tasks defined by YAMLs in our task folders (built-in and the user's)."""
        return [name for name, entry in self.index.entries.items() if self.home_of(entry)]

    def home_of(self, entry) -> Path | None:
        """The task folder (of self.task_dirs) that defines `entry`, if any."""
        path = entry.yaml_path and entry.yaml_path.resolve()
        return next((d for d in self.task_dirs if path and path.is_relative_to(d)), None)

    def families(self) -> dict[str, Path]:
        """The task folders of our families, by family name (the folder's name; built-in ones first)."""
        found: dict[str, Path] = {}
        for entry in sorted(self.index.entries.values(), key=lambda e: str(e.yaml_path)):
            home = self.home_of(entry)
            if home is not None and (parts := entry.yaml_path.resolve().relative_to(home).parts[:-1]):
                found.setdefault(parts[0], home / parts[0])
        return found

    def phenomenon(self, task: str) -> str:
        paradigm = task.removeprefix("blimp_")
        if task.startswith("blimp_") and paradigm in BLIMP_PARADIGMS:
            return BLIMP_PARADIGMS[paradigm]
        # Tasks outside our folders carry no phenomenon, so lm-eval's full index need not be built here.
        entry = self.index.entries.get(task)
        metadata = entry.cfg.get("metadata") if entry else None
        return str(metadata.get("phenomenon", "")) if isinstance(metadata, dict) else ""

    def field(self, task: str) -> str:
        """BLiMP's field of a task (a BLiMP paradigm's, or a task folder's `field` metadata); "" if none."""
        paradigm = task.removeprefix("blimp_")
        if task.startswith("blimp_") and paradigm in BLIMP_FIELDS:
            return BLIMP_FIELDS[paradigm]
        entry = self.index.entries.get(task)
        metadata = entry.cfg.get("metadata") if entry else None
        return str(metadata.get("field", "")) if isinstance(metadata, dict) else ""

    def _members(self, name: str) -> list[str] | None:
        """Leaf tasks of a group or tag, None if `name` is unknown."""
        entry = self._entry(name)
        if entry is None:
            return None
        if entry.kind == "tag":
            index = self.index if name in self.index.entries else self.full_index
            return sorted(n for n, e in index.entries.items() if name in e.tags)
        if entry.kind != "group":
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
                by_phenomenon: dict[str, list[str]] = {}
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
        known = list(self.index.entries) + list(BLIMP_PARADIGMS)
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
                here = entry.yaml_path.parent
                cfg["dataset_kwargs"]["data_files"] = {split: str(here / f) for split, f in files.items()}
        return cfg

    def data_files(self, name: str) -> list[Path]:
        """The local data files a task reads (none for hub data)."""
        files = (self.config(name).get("dataset_kwargs") or {}).get("data_files") or {}
        return [Path(f) for f in files.values()] if isinstance(files, dict) else []

    def check_data(self, names: list[str]) -> None:
        """Fail before any work starts if local data files are missing or absurdly large, or, offline, if data on
        the hub is not in the local cache."""
        files = [f for name in names for f in self.data_files(name)]
        if missing := [str(f) for f in files if not f.is_file()]:
            where = f" in --blimp-dir {self.blimp_dir}" if self.blimp_dir else ""
            raise TaskError(f"missing task data files{where}: " + ", ".join(missing))
        if huge := [f"{f} ({f.stat().st_size:,} bytes)" for f in files if f.stat().st_size > MAX_DATA_BYTES]:
            raise TaskError(f"task data files over {MAX_DATA_BYTES:,} bytes: {', '.join(huge)}; minimal pairs take "
                            "far less: is it the right file?")
        self._check_hub_data(names)

    def _check_hub_data(self, names: list[str]) -> None:
        hub_data = {}  # (dataset, config) -> a task reading it
        for name in names:
            cfg = self.config(name)
            if not self.data_files(name) and cfg.get("dataset_path"):
                hub_data.setdefault((cfg["dataset_path"], cfg.get("dataset_name")), name)
        if not hub_data:
            return
        import datasets

        if not datasets.config.HF_HUB_OFFLINE:
            return  # online, datasets downloads what is not cached
        for (path, config), task in hub_data.items():
            try:
                datasets.load_dataset_builder(path, config)
            except (OSError, ValueError) as err:
                hint = " or pass --blimp-dir DIR (BLiMP's jsonl files)" if task.startswith("blimp_") else ""
                data = f"{path} ({config})" if config else path
                raise TaskError(f"task {task} reads {data} from the hub, which is offline (HF_HUB_OFFLINE=1), and it "
                                f"is not in the local cache; run online once{hint}") from err

    def load(self, names: list[str]) -> dict:
        """lm-eval's task dict for `names`: build it once and reuse it for every checkpoint."""
        self.check_data(names)
        return self.index.load([self.config(name) for name in names])

    def known_tasks(self) -> list[TaskInfo]:
        """Every task the harness knows: BLiMP, the tasks in our task folders, and lm-eval's other minimal-pair
        families."""
        blimp_source = str(self.blimp_dir) if self.blimp_dir else "hub: nyu-mll/blimp"
        infos = [
            TaskInfo("blimp", f"blimp_{p}", ph, BLIMP_PAIRS, blimp_source)
            for p, ph in sorted(BLIMP_PARADIGMS.items(), key=lambda item: (item[1], item[0]))
        ]
        for task in sorted(self.local_task_names()):
            entry = self.index.entries[task]
            if entry.kind != "task":
                continue
            files = self.data_files(task)
            pairs = sum(count_lines(f) for f in files) if files and all(f.is_file() for f in files) else None
            folder = entry.yaml_path.resolve().parent
            family = (folder.relative_to(self.home_of(entry)).parts or (task,))[0]  # the folder: the group
            source = str((self.config(task).get("metadata") or {}).get("source") or folder)
            infos.append(TaskInfo(family, task, self.phenomenon(task), pairs, source))
        from trajectories import lmeval

        families = lmeval.TaskIndex([lmeval.TASKS_DIR / f for f in HUB_FAMILIES]).entries
        for folder in HUB_FAMILIES:
            members = sorted((n, e) for n, e in families.items()
                             if e.kind == "task" and e.yaml_path.parent == lmeval.TASKS_DIR / folder)
            groups = [n for n, e in families.items()
                      if e.kind == "group" and e.yaml_path.parent == lmeval.TASKS_DIR / folder]
            shared_tags = frozenset.intersection(*(e.tags for _, e in members)) if members else frozenset()
            family = (groups or sorted(shared_tags) or [folder])[0]
            infos += [TaskInfo(family, task, self.phenomenon(task), None, f"hub: {entry.cfg.get('dataset_path')}",
                               summarized=True) for task, entry in members]
        return infos


def _lm_eval_tasks_stamp() -> str:
    """Changes when lm-eval's own task files do (an upgrade, an edited editable install)."""
    from trajectories import lmeval

    count = newest = 0
    for root, _, names in os.walk(lmeval.TASKS_DIR):
        for name in names:
            if name.endswith(("yaml", ".py")):
                count, newest = count + 1, max(newest, os.stat(os.path.join(root, name)).st_mtime_ns)
    digest = hashlib.sha256(f"{lmeval.VERSION} {lmeval.TASKS_DIR} {count} {newest}".encode()).hexdigest()
    return f"{lmeval.VERSION}-{digest[:12]}"


@functools.cache
def lm_eval_names() -> frozenset[str]:
    """Every task, group and tag name lm-eval itself defines. Indexing all of lm-eval's tasks takes half a minute,
    so the names are kept in ~/.cache/trajectories/ (or $XDG_CACHE_HOME's), per state of lm-eval's task files."""
    from trajectories import lmeval
    from trajectories.errors import WriteError
    from trajectories.files import write_json

    cache = NAMES_CACHE_DIR / f"lm_eval_names-{_lm_eval_tasks_stamp()}.json"
    try:
        return frozenset(json.loads(cache.read_text()))
    except (OSError, ValueError, TypeError):
        pass
    names = frozenset(lmeval.TaskIndex([], with_lm_eval_tasks=True).entries)
    try:
        write_json(cache, sorted(names))
    except WriteError:
        pass  # no writable cache folder: the next command indexes again
    return names


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def format_task_list(infos: list[TaskInfo], family: str | None = None) -> str:
    """A table of tasks; hub families are one line each unless `family` names one."""
    if family:
        infos = [i for i in infos if i.family == family]
        if not infos:
            raise TaskError(f"no family {family!r}; `trajectories tasks list` shows them")
    lines = [f"{'family':<16} {'phenomenon':<34} {'task':<56} {'pairs':>6}  source"]
    by_family: dict[str, list[TaskInfo]] = {}
    for info in infos:
        by_family.setdefault(info.family, []).append(info)
    for name, members in by_family.items():
        if family or not members[0].summarized:
            lines += [
                f"{i.family:<16} {i.phenomenon or '-':<34} {i.task:<56} {i.pairs if i.pairs is not None else '?':>6}"
                f"  {i.source}" for i in members
            ]
        else:
            sources = ", ".join(sorted({i.source for i in members}))
            lines.append(f"{name:<16} {'-':<34} {f'{len(members)} tasks (tasks list {name})':<56} {'?':>6}  {sources}")
    return "\n".join(lines)
