"""The Hugging Face Hub: which branches of a repo name training steps, downloading one revision, and evicting it
from the local cache once evaluated. Every network call of the package is here.

The endpoint, offline mode and cache follow huggingface_hub's own variables (HF_ENDPOINT, HF_HUB_OFFLINE, HF_HOME,
HF_HUB_CACHE), so a mirror or a cache on shared storage needs no option of ours.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from trajectories.errors import UserError
from trajectories.schema import Checkpoint

EVICT_AUTO_BYTES = 2 * 2**30  # --evict auto: delete evaluated checkpoints bigger than this


@dataclass(frozen=True)
class BranchStep:
    """A hub branch that names a training step."""

    name: str
    step: int
    stage: int = 1
    tokens: int | None = None


_BRANCH = re.compile(
    r"^(?:stage(?P<stage>\d+)-)?step(?P<step>\d+)(?:-tokens(?P<tokens>\d+(?:\.\d+)?)(?P<unit>[BMK])?)?$"
)
_TOKEN_UNITS = {"B": 10**9, "M": 10**6, "K": 10**3, None: 1}


def parse_branches(names: list[str]) -> list[BranchStep]:
    """Branches of a hub repo that name training steps, ordered by (stage, step); other branches are ignored.

    Understands Pythia's `step1000`, OLMo's `step1000-tokens4B` and OLMo 2's `stage1-step1000-tokens5B`.
    """
    parsed = []
    for name in names:
        match = _BRANCH.match(name)
        if not match:
            continue
        tokens = match["tokens"] and round(float(match["tokens"]) * _TOKEN_UNITS[match["unit"]])
        parsed.append(BranchStep(name, int(match["step"]), int(match["stage"] or 1), tokens))
    return sorted(parsed, key=lambda b: (b.stage, b.step))


class HubError(UserError):
    """The hub cannot give what a sweep needs (offline, unreachable, no such repo): said before any work starts."""


def offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE


@functools.cache
def branch_names(repo: str) -> list[str]:
    import httpx
    from huggingface_hub import list_repo_refs

    try:
        return [branch.name for branch in list_repo_refs(repo).branches]
    except (OSError, httpx.HTTPError) as err:  # offline mode, no network, no such repo
        why = "the hub is offline (HF_HUB_OFFLINE=1)" if offline() else f"{type(err).__name__}: {err}"
        raise HubError(f"hf:{repo}: cannot list its branches: {why}; its steps are hub branches, so listing them "
                       "needs the hub (or a mirror: HF_ENDPOINT)") from err


def check_cached_when_offline(checkpoints: list[Checkpoint]) -> None:
    """Offline (HF_HUB_OFFLINE=1), every hub checkpoint must be in the local cache: say which are not before any
    work starts."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not offline():
        return
    missing = [c for c in checkpoints if c.path is None and not isinstance(
        try_to_load_from_cache(c.model.repo, "config.json", revision=c.revision), str)]
    if missing:
        raise HubError(f"the hub is offline (HF_HUB_OFFLINE=1) and {len(missing)} of {len(checkpoints)} checkpoints "
                       f"are not in the local cache ({constants.HF_HUB_CACHE}), e.g. {missing[0].describe()}; run "
                       "online, or choose cached models and steps")


def step_branches(repo: str) -> list[BranchStep]:
    """The repo's step branches of its first training stage (later stages of OLMo 2 restart their step count)."""
    branches = parse_branches(branch_names(repo))
    return [b for b in branches if b.stage == branches[0].stage] if branches else []


def download(repo: str, revision: str) -> tuple[Path, str]:
    """A revision's model files in the HF cache (weights in one format only: safetensors where the revision has
    them, else .bin) and its commit."""
    from huggingface_hub import list_repo_files, snapshot_download

    files = list_repo_files(repo, revision=revision)
    weights = "*.safetensors" if any(f.endswith(".safetensors") for f in files) else "*.bin"
    folder = Path(snapshot_download(repo, revision=revision, allow_patterns=["*.json", "*.txt", "*.model", weights]))
    return folder, folder.name  # <cache>/models--org--name/snapshots/<commit>


def evict(folder: Path, policy: str) -> bool:
    """Delete a downloaded revision (`<cache>/models--org--name/snapshots/<commit>`) and the blobs only it used, so
    a sweep over a large model holds at most the current and the prefetched checkpoint on disk. Policy: "always",
    "never", or "auto" (checkpoints over EVICT_AUTO_BYTES)."""
    from huggingface_hub import scan_cache_dir

    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())  # follows the snapshot's blob links
    if policy == "never" or (policy == "auto" and size < EVICT_AUTO_BYTES):
        return False
    scan_cache_dir(folder.parents[2]).delete_revisions(folder.name).execute()
    return True
