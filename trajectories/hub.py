"""The Hugging Face Hub: which branches of a repo name training steps, what each revision holds (from metadata, without
downloading weights), downloading one revision, and evicting it from the local cache once evaluated. Every network
call of the package is here.

The endpoint, offline mode and cache follow huggingface_hub's own variables (HF_ENDPOINT, HF_HUB_OFFLINE, HF_HOME,
HF_HUB_CACHE), so a mirror or a cache on shared storage needs no option of ours.

Listings have no offline fallback in huggingface_hub, so the answers a sweep needs again are kept in
`$HF_HOME/trajectories/models--org--name/` (not in the hub cache's repo folder, which eviction deletes with the
repo's last revision): `branches.json` (branch -> commit, from the last online listing) and `commits/<commit>.json`
(a commit's files with their sizes, git blob ids and LFS sha256, and its config.json). A commit never changes, so
its listing is fetched once; with HF_HUB_OFFLINE=1 both are read from there (branches, failing that, from the hub
cache's own `refs/`) and nothing is sent. The hub cache stores non-LFS files as `blobs/<git blob id>`, so a
config.json already downloaded for one commit serves every commit with the same blob.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from trajectories.errors import UserError
from trajectories.files import write_json
from trajectories.integrity import weight_files

EVICT_AUTO_BYTES = 2 * 2**30  # --evict auto: delete evaluated checkpoints bigger than this
SMALL_FILES = ["*.json", "*.txt", "*.model"]  # config, tokenizer, index: downloaded with the weights
METADATA_DIR = "trajectories"  # in HF_HOME


class HubUnavailable(UserError):
    """A repo's branches cannot be listed (no such repo, the hub unreachable, offline without a cached listing)."""


class DownloadError(RuntimeError):
    """A revision could not be downloaded; the message says why and what to do (the unit fails, the sweep goes on)."""


@dataclass(frozen=True)
class BranchStep:
    """A hub branch that names a training step."""

    name: str
    step: int
    stage: int = 1
    tokens: int | None = None


@dataclass(frozen=True)
class HubFile:
    """A file of a revision as the hub lists it."""

    path: str
    size: int
    blob_id: str  # git blob id (of the LFS pointer, for LFS files)
    sha256: str | None  # LFS files only


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


# ---------------------------------------------------------------------------------------------------- the cache
def offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE


def repo_cache(repo: str) -> Path:
    """The repo's folder in the local hub cache."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model")


def metadata_dir(repo: str) -> Path:
    """Where the repo's listings are kept."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / METADATA_DIR / repo_cache(repo).name


def _keep(path: Path, data) -> None:
    try:
        write_json(path, data)
    except OSError:  # a read-only shared cache: the answer is simply asked for again next time
        pass


# ---------------------------------------------------------------------------------------------------- branches
def branches(repo: str) -> dict[str, str]:
    """The repo's branches and the commit each points at (offline: as last listed, or as the cache has them)."""
    from huggingface_hub import constants, list_repo_refs
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    cache = repo_cache(repo)
    kept = metadata_dir(repo) / "branches.json"
    if offline():
        if kept.exists():
            return json.loads(kept.read_text())
        refs = cache / "refs"  # branches downloaded by any tool
        found = {p.name: p.read_text().strip() for p in refs.glob("*") if p.is_file()} if refs.is_dir() else {}
        if not found:
            raise HubUnavailable(f"offline (HF_HUB_OFFLINE=1) and the local hub cache holds no branches of {repo} "
                                 f"({cache}); list them once online with the same HF_HOME (`trajectories audit`)")
        return found
    try:
        found = {b.name: b.target_commit for b in list_repo_refs(repo).branches}
    except RepositoryNotFoundError as err:
        raise HubUnavailable(f"no model repo {repo} at {constants.ENDPOINT} (or it is private and no token was "
                             "given)") from err
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as err:
        raise HubUnavailable(f"could not list the branches of {repo} at {constants.ENDPOINT}: "
                             f"{type(err).__name__}: {str(err).splitlines()[0]}") from err
    _keep(kept, found)
    return found


def step_branches(names) -> list[BranchStep]:
    """The step branches among `names` of the first training stage (later stages of OLMo 2 restart their count)."""
    parsed = parse_branches(list(names))
    return [b for b in parsed if b.stage == parsed[0].stage] if parsed else []


# ---------------------------------------------------------------------------------------------------- metadata
def commit_files(repo: str, commit: str) -> tuple[list[HubFile], dict | None] | None:
    """A commit's files (sizes, blob ids, LFS sha256) and its parsed config.json, from metadata: no weight file is
    downloaded. None when offline and not cached."""
    kept = metadata_dir(repo) / "commits" / f"{commit}.json"
    if kept.exists():
        data = json.loads(kept.read_text())
        return [HubFile(**f) for f in data["files"]], data["config"]
    if offline():
        return None
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    files = [HubFile(f.path, f.size, f.blob_id, f.lfs.sha256 if f.lfs else None)
             for f in HfApi().list_repo_tree(repo, revision=commit, recursive=True) if isinstance(f, RepoFile)]
    config = next((_config(repo, commit, f.blob_id) for f in files if f.path == "config.json"), None)
    _keep(kept, {"files": [vars(f) for f in files], "config": config})
    return files, config


def _config(repo: str, commit: str, blob_id: str) -> dict:
    from huggingface_hub import hf_hub_download

    blob = repo_cache(repo) / "blobs" / blob_id  # the same config.json, downloaded for another commit
    path = blob if blob.exists() else Path(hf_hub_download(repo, "config.json", revision=commit))
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------------- download
def download(repo: str, branch: str) -> tuple[Path, str]:
    """A branch's model files in the HF cache (weights in one format only, as integrity.weight_files chooses) and its
    commit. Failures raise DownloadError saying why."""
    from huggingface_hub import get_cached_repo_tree, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RevisionNotFoundError

    where = f"{repo}@{branch}"
    try:
        # The small files first: this also caches the revision's file listing, from which the weights are chosen.
        commit = Path(snapshot_download(repo, revision=branch, allow_patterns=SMALL_FILES)).name
        weights = weight_files(f.path for f in get_cached_repo_tree(repo, revision=commit))
        if not weights:
            raise DownloadError(f"{where} has no weight files (model*.safetensors or pytorch_model*.bin)")
        folder = Path(snapshot_download(repo, revision=commit, allow_patterns=SMALL_FILES + weights))
    except RevisionNotFoundError as err:
        raise DownloadError(f"branch {branch} is gone from {repo}: it was listed when the sweep started and is no "
                            "longer on the hub") from err
    except HfHubHTTPError as err:
        raise DownloadError(f"the hub answered HTTP {err.response.status_code} while {where} was downloading; run "
                            "the sweep again to retry") from err
    except LocalEntryNotFoundError as err:
        if offline():
            raise DownloadError(f"offline (HF_HUB_OFFLINE=1) and {where} is not complete in the local hub cache "
                                f"{repo_cache(repo)}") from err
        raise DownloadError(f"could not download {where}: {str(err.__cause__ or err).splitlines()[0]}; run the sweep "
                            "again to retry") from err
    except OSError as err:  # huggingface_hub's size check of a finished download ("Consistency check failed")
        raise DownloadError(f"the download of {where} was cut short ({str(err).splitlines()[0]}); run the sweep "
                            "again to retry") from err
    return folder, commit


def evict(folder: Path, policy: str) -> bool:
    """Delete a downloaded revision (`<cache>/models--org--name/snapshots/<commit>`), the refs naming it and the
    weight blobs no other revision links to, so a sweep over a large model holds at most the current and the
    prefetched checkpoint on disk. Policy: "always", "never", or "auto" (checkpoints over EVICT_AUTO_BYTES).

    Not huggingface_hub's `delete_revisions`: a download running beside this (the prefetch, another worker) may not
    have linked its files yet, and that strategy would then delete the small blobs every revision shares, or the
    whole repo folder with the download in it. Small files stay; they are shared and tiny."""
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())  # follows the snapshot's blob links
    if policy == "never" or (policy == "auto" and size < EVICT_AUTO_BYTES):
        return False
    repo_dir = folder.parents[1]
    weights = {(folder / name).resolve() for name in weight_files(p.name for p in folder.iterdir())}
    for ref in (repo_dir / "refs").rglob("*"):
        if ref.is_file() and ref.read_text().strip() == folder.name:
            ref.unlink()
    shutil.rmtree(folder)
    linked = {p.resolve() for snapshot in (repo_dir / "snapshots").iterdir() for p in snapshot.rglob("*")}
    for blob in weights - linked:
        blob.unlink(missing_ok=True)
    return True
