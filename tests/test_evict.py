"""Disk eviction of downloaded hub checkpoints, on a Hugging Face cache laid out as huggingface_hub lays it out."""

import pytest
from huggingface_hub import scan_cache_dir

from trajectories.hub import evict


def fake_hub_cache(root, revisions: dict[str, bytes]):
    repo = root / "models--EleutherAI--pythia-x"
    (repo / "refs").mkdir(parents=True)
    for i, (commit, weights) in enumerate(revisions.items()):
        blob = repo / "blobs" / f"{i:040x}"
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(weights)
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        (snapshot / "model.safetensors").symlink_to(f"../../blobs/{blob.name}")
        (repo / "refs" / f"step{i}").write_text(commit)
    return repo


@pytest.mark.parametrize("policy, evicted", [("always", True), ("never", False), ("auto", False)])
def test_evict_one_revision(tmp_path, policy, evicted):
    first, second = "a" * 40, "b" * 40
    repo = fake_hub_cache(tmp_path, {first: b"x" * 1000, second: b"y" * 1000})
    assert evict(repo / "snapshots" / first, policy) == evicted
    kept = {rev.commit_hash for r in scan_cache_dir(tmp_path).repos for rev in r.revisions}
    assert kept == ({second} if evicted else {first, second})
    assert (repo / "snapshots" / second / "model.safetensors").read_bytes() == b"y" * 1000


def test_evict_leaves_a_download_in_progress_intact(tmp_path):
    """The prefetch downloads the next revision while this one is evicted: the tokenizer blob both share is on
    disk, but the new snapshot does not link to it yet. Eviction must leave it, and the repo folder, in place."""
    first = "a" * 40
    repo = fake_hub_cache(tmp_path, {first: b"x" * 1000})
    shared = repo / "blobs" / "tokenizer-blob"
    shared.write_text("{}")
    (repo / "snapshots" / first / "tokenizer.json").symlink_to("../../blobs/tokenizer-blob")
    weights = (repo / "snapshots" / first / "model.safetensors").resolve()
    assert evict(repo / "snapshots" / first, "always")
    assert not weights.exists() and shared.read_text() == "{}"
    assert not list((repo / "refs").iterdir())  # no ref left naming a deleted revision
    nxt = repo / "snapshots" / ("b" * 40)
    nxt.mkdir()
    (nxt / "tokenizer.json").symlink_to("../../blobs/tokenizer-blob")
    info = scan_cache_dir(tmp_path)
    assert not info.warnings
    assert [rev.commit_hash for r in info.repos for rev in r.revisions] == ["b" * 40]
