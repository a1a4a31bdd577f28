"""The local hub (tests/hubserver.py) against the real huggingface_hub client: listing, downloading, caching, faults.

A Pythia-like repo of tiny GPT-NeoX checkpoints: step0 and step1 byte-identical with `.bin` weights, step2, step3 and
main byte-identical with safetensors weights.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import (
    HfApi,
    get_hf_file_metadata,
    get_session,
    hf_hub_download,
    hf_hub_url,
    list_repo_files,
    list_repo_refs,
    model_info,
    snapshot_download,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hubserver import HubServer, client_env, use_hub, use_offline

REPO = "org/pythia-tiny"
BRANCHES = {"step0": "bin", "step1": "bin", "step2": "st", "step3": "st", "main": "st"}
PATTERNS = ["*.json", "*.safetensors"]
WORDS = "the a this that these those cat cats dog dogs bird birds sees see likes like ran run is are was were".split()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Two tiny checkpoints: `bin` (pytorch_model.bin) and `st` (model.safetensors), one tokenizer."""
    import torch
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers import models as tok_models
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    word_level = Tokenizer(tok_models.WordLevel(unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<|endoftext|>", "<unk>"])
    word_level.train_from_iterator([" ".join(WORDS)], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, unk_token="<unk>", eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    config = GPTNeoXConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
    )
    root = tmp_path_factory.mktemp("checkpoints")
    folders = {}
    for seed, kind in enumerate(("bin", "st")):
        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(config)
        folders[kind] = root / kind
        model.save_pretrained(folders[kind])  # transformers 5 writes safetensors whatever safe_serialization says
        tokenizer.save_pretrained(folders[kind])
        if kind == "bin":  # as old Pythia branches: pytorch_model.bin
            torch.save(model.state_dict(), folders[kind] / "pytorch_model.bin")
            (folders[kind] / "model.safetensors").unlink()
    return {branch: folders[kind] for branch, kind in BRANCHES.items()}


@pytest.fixture
def hub(checkpoints, monkeypatch, tmp_path):
    with HubServer() as server:
        for branch, folder in checkpoints.items():
            server.add_branch(REPO, branch, folder)
        use_hub(monkeypatch, server.endpoint, tmp_path / "hf_home")
        yield server


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def git_hash_object(path: Path) -> str:
    return subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()


def logits(folder) -> object:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(torch.tensor([[0, 5, 7, 9, 11]])).logits


# ---------------------------------------------------------------------------------------------------- metadata
def test_refs_info_tree_and_paths_info_agree_with_the_files(hub, checkpoints):
    refs = {ref.name: ref.target_commit for ref in list_repo_refs(REPO).branches}
    assert refs == hub.branches(REPO) and set(refs) == set(BRANCHES)
    assert refs["step0"] != refs["step1"]  # identical content, still one commit per branch
    for branch, folder in checkpoints.items():
        info = model_info(REPO, revision=branch, files_metadata=True)
        assert info.sha == refs[branch]
        siblings = {s.rfilename: s for s in info.siblings}
        assert siblings.keys() == files_of(folder).keys()
        for name, data in files_of(folder).items():
            sibling = siblings[name]
            assert sibling.size == len(data)
            if name.endswith((".bin", ".safetensors")):
                assert sibling.lfs.sha256 == hashlib.sha256(data).hexdigest() and sibling.lfs.size == len(data)
            else:
                assert sibling.lfs is None and sibling.blob_id == git_hash_object(folder / name)
        tree = {f.path: f for f in HfApi().list_repo_tree(REPO, revision=branch, recursive=True)}
        paths_info = {f.path: f for f in HfApi().get_paths_info(REPO, [*siblings, "missing.txt"], revision=branch)}
        assert tree.keys() == paths_info.keys() == siblings.keys()
        for name, sibling in siblings.items():
            assert (tree[name].size, tree[name].blob_id) == (sibling.size, sibling.blob_id)
            assert tree[name].lfs == paths_info[name].lfs == sibling.lfs
        assert sorted(list_repo_files(REPO, revision=branch)) == sorted(siblings)
    assert model_info(REPO).sha == refs["main"]
    assert hub.fetched("GET") == hub.fetched("HEAD") == []  # listing metadata downloads no file


def test_tree_pages_follow_the_link_header(monkeypatch, tmp_path):
    files = {f"data/part{i}.txt": b"%d" % i for i in range(5)} | {"config.json": b"{}"}
    with HubServer(page_size=2) as hub:
        hub.add_branch(REPO, "main", files)
        use_hub(monkeypatch, hub.endpoint, tmp_path)
        assert sorted(list_repo_files(REPO)) == sorted(files)
        cursors = [r.query.partition("cursor=")[2] for r in hub.requests]
        assert cursors == ["", "2", "4", "6"] and hub.requests[0].query == "recursive=true&expand=false"
        assert [f.path for f in HfApi().list_repo_tree(REPO, "data")] == [f"data/part{i}.txt" for i in range(5)]


def test_dataset_repos(monkeypatch, tmp_path):
    with HubServer() as hub:
        hub.add_branch("org/pairs", "main", {"data/train.jsonl": b'{"good": "a", "bad": "b"}\n'}, repo_type="dataset")
        use_hub(monkeypatch, hub.endpoint, tmp_path)
        assert list_repo_files("org/pairs", repo_type="dataset") == ["data/train.jsonl"]
        path = hf_hub_download("org/pairs", "data/train.jsonl", repo_type="dataset")
        assert Path(path).read_bytes() == b'{"good": "a", "bad": "b"}\n'
        with pytest.raises(RepositoryNotFoundError):  # a dataset is not a model
            list_repo_files("org/pairs")
        assert hub.fetched() == [("org/pairs", "main", "data/train.jsonl")]  # hf_hub_download keeps the branch name


def test_file_metadata_headers(hub, checkpoints):
    commit = hub.branches(REPO)["step2"]
    weights = (checkpoints["step2"] / "model.safetensors").read_bytes()
    meta = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors", revision="step2"))
    assert (meta.etag, meta.size, meta.commit_hash) == (hashlib.sha256(weights).hexdigest(), len(weights), commit)
    meta = get_hf_file_metadata(hf_hub_url(REPO, "config.json", revision="step2"))
    assert meta.etag == git_hash_object(checkpoints["step2"] / "config.json")
    assert hub.fetched("HEAD") == [(REPO, "step2", "model.safetensors"), (REPO, "step2", "config.json")]


# ---------------------------------------------------------------------------------------------------- downloads
def test_snapshot_download_is_byte_identical_loads_and_is_fetched_once(hub, checkpoints):
    commits = hub.branches(REPO)
    source = checkpoints["step2"]
    folder = Path(snapshot_download(REPO, revision="step2", allow_patterns=PATTERNS))
    assert folder.name == commits["step2"]
    wanted = {name: data for name, data in files_of(source).items() if name.endswith((".json", ".safetensors"))}
    assert files_of(folder) == wanted
    assert sorted(hub.fetched()) == sorted((REPO, commits["step2"], name) for name in wanted)
    assert (logits(folder) == logits(source)).all()

    hub.requests.clear()  # the same revision again: one call to resolve the branch, no file
    assert Path(snapshot_download(REPO, revision="step2", allow_patterns=PATTERNS)) == folder
    assert [(r.method, r.path) for r in hub.requests] == [("GET", f"/api/models/{REPO}/revision/step2")]

    hub.requests.clear()  # a byte-identical branch: a new commit, its files checked by HEAD, their blobs reused
    assert files_of(Path(snapshot_download(REPO, revision="step3", allow_patterns=PATTERNS))) == wanted
    assert hub.fetched("GET") == []
    assert sorted(hub.fetched("HEAD")) == sorted((REPO, commits["step3"], name) for name in wanted)


def test_bin_branch_downloads_and_loads(hub, checkpoints):
    folder = Path(snapshot_download(REPO, revision="step0", allow_patterns=["*.json", "*.bin"]))
    assert "pytorch_model.bin" in files_of(folder)
    assert files_of(folder) == files_of(checkpoints["step0"])
    assert (logits(folder) == logits(checkpoints["step0"])).all()
    assert not (logits(folder) == logits(checkpoints["step2"])).all()


def test_offline_with_a_warm_cache_sends_nothing(hub, monkeypatch):
    folder = snapshot_download(REPO, revision="step1", allow_patterns="*.json")
    hub.requests.clear()
    use_offline(monkeypatch)
    assert snapshot_download(REPO, revision="step1", allow_patterns="*.json") == folder
    assert snapshot_download(REPO, revision="step1", allow_patterns="config.json") == folder
    assert hf_hub_download(REPO, "config.json", revision="step1") == os.path.join(folder, "config.json")
    with pytest.raises(IncompleteSnapshotError):  # the cached tree lists a file this snapshot lacks
        snapshot_download(REPO, revision="step1", allow_patterns=["*.json", "*.bin"])
    with pytest.raises(LocalEntryNotFoundError):
        snapshot_download(REPO, revision="step2", allow_patterns=PATTERNS)
    with pytest.raises(OfflineModeIsEnabled):  # no cached fallback for listings
        list_repo_files(REPO, revision="step1")
    assert hub.requests == []


def test_client_in_a_subprocess_needs_only_the_environment(hub, checkpoints, tmp_path):
    script = (
        "import sys; from huggingface_hub import list_repo_refs, snapshot_download\n"
        "if sys.argv[1] == 'online': print(sorted(b.name for b in list_repo_refs(sys.argv[2]).branches))\n"
        "print(snapshot_download(sys.argv[2], revision='step2', allow_patterns=['*.json', '*.safetensors']))\n"
    )
    env = client_env(hub.endpoint, tmp_path / "sub_home")
    online = subprocess.run([sys.executable, "-c", script, "online", REPO], env=env, capture_output=True, text=True)
    assert online.returncode == 0, online.stderr
    branches, folder = online.stdout.splitlines()
    assert branches == str(sorted(BRANCHES)) and Path(folder).name == hub.branches(REPO)["step2"]
    assert folder.startswith(str(tmp_path / "sub_home"))
    assert sorted(name for _, _, name in hub.fetched()) == sorted(files_of(checkpoints["step2"]))
    hub.requests.clear()
    offline = subprocess.run([sys.executable, "-c", script, "offline", REPO], env=env | {"HF_HUB_OFFLINE": "1"},
                             capture_output=True, text=True)
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == folder and hub.requests == []


def test_range_requests(hub, checkpoints):
    data = (checkpoints["step2"] / "model.safetensors").read_bytes()
    url = hf_hub_url(REPO, "model.safetensors", revision="step2")
    part = get_session().get(url, headers={"Range": "bytes=10-19"})
    assert (part.status_code, part.content) == (206, data[10:20])
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    tail = get_session().get(url, headers={"Range": "bytes=-7"})
    assert (tail.status_code, tail.content) == (206, data[-7:])
    assert get_session().get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    assert get_session().get(url).content == data


# ---------------------------------------------------------------------------------------------------- errors
def test_unknown_repo_revision_and_file(hub):
    for call in (lambda: model_info("org/nope"), lambda: list_repo_refs("org/nope"),
                 lambda: snapshot_download("org/nope"), lambda: hf_hub_download("org/nope", "config.json")):
        with pytest.raises(RepositoryNotFoundError):
            call()
    for call in (lambda: model_info(REPO, revision="step9"), lambda: list_repo_files(REPO, revision="step9"),
                 lambda: snapshot_download(REPO, revision="step9"),
                 lambda: hf_hub_download(REPO, "config.json", revision="step9")):
        with pytest.raises(RevisionNotFoundError):
            call()
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "missing.json", revision="step1")
    with pytest.raises(RemoteEntryNotFoundError):
        get_hf_file_metadata(hf_hub_url(REPO, "missing.json"))
    api = HfApi()
    assert api.file_exists(REPO, "config.json") and not api.file_exists(REPO, "missing.json")
    assert api.revision_exists(REPO, "step0") and not api.revision_exists(REPO, "step9")


def test_vanished_branch_raises_revision_not_found(hub):
    hub.vanish_after_listing(REPO, "step1")
    assert "step1" in {b.name for b in list_repo_refs(REPO).branches}
    with pytest.raises(RevisionNotFoundError):
        list_repo_files(REPO, revision="step1")
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="step1", allow_patterns=["*.json", "*.bin"])
    assert "step1" not in {b.name for b in list_repo_refs(REPO).branches}


def test_truncated_download_raises_the_consistency_error_and_leaves_no_blob(hub, checkpoints):
    fault = hub.truncate("*/resolve/*/model.safetensors", keep=100, times=1)
    with pytest.raises(OSError, match="Consistency check failed") as error:
        snapshot_download(REPO, revision="step2", allow_patterns=PATTERNS)
    assert type(error.value) is OSError and fault.hits == 1
    sha256 = hashlib.sha256((checkpoints["step2"] / "model.safetensors").read_bytes()).hexdigest()
    blobs = Path(os.environ["HF_HOME"]) / "hub" / "models--org--pythia-tiny" / "blobs"
    assert not [p for p in blobs.iterdir() if p.name.startswith(sha256)]
    folder = snapshot_download(REPO, revision="step2", allow_patterns=PATTERNS)  # the next try completes it
    assert files_of(Path(folder))["model.safetensors"] == (checkpoints["step2"] / "model.safetensors").read_bytes()


def test_dropped_connection_is_retried_and_resumed_with_a_range_request(hub, checkpoints):
    hub.truncate("*/resolve/*/model.safetensors", keep=100, times=1, close=True)
    path = hf_hub_download(REPO, "model.safetensors", revision="step2")
    assert Path(path).read_bytes() == (checkpoints["step2"] / "model.safetensors").read_bytes()
    # The client writes in 10 MiB chunks, so it kept nothing of a small file and asks for all of it again.
    assert [(r.status, r.range) for r in hub.requests if r.method == "GET"] == [(200, None), (200, None)]

    big = bytes(range(256)) * (12 * 2**20 // 256)  # over 10 MiB: LFS whatever its name
    hub.add_branch(REPO, "big", {"big.txt": big})
    assert HfApi().get_paths_info(REPO, "big.txt", revision="big")[0].lfs.sha256 == hashlib.sha256(big).hexdigest()
    hub.requests.clear()
    hub.truncate("*/resolve/*/big.txt", keep=11 * 2**20, times=1, close=True)
    assert Path(hf_hub_download(REPO, "big.txt", revision="big")).read_bytes() == big
    assert [(r.status, r.range) for r in hub.requests if r.method == "GET"] == [(200, None), (206, "bytes=10485760-")]


def test_http_500(hub):
    hub.fail(f"/api/models/{REPO}/refs", times=1)
    with pytest.raises(HfHubHTTPError) as error:  # no retry
        list_repo_refs(REPO)
    assert type(error.value) is HfHubHTTPError and error.value.response.status_code == 500
    assert list_repo_refs(REPO).branches

    cached = snapshot_download(REPO, revision="step1", allow_patterns=["*.json", "*.bin"])
    hub.fail(f"/api/models/{REPO}/revision/*")  # resolving a branch fails: only a cached snapshot is returned
    with pytest.raises(LocalEntryNotFoundError, match="trying to locate the files on the Hub") as error:
        snapshot_download(REPO, revision="step3", allow_patterns=PATTERNS)
    assert type(error.value.__cause__) is HfHubHTTPError
    assert snapshot_download(REPO, revision="step1", allow_patterns=["*.json", "*.bin"]) == cached

    hub.faults.clear()
    hub.fail("*/resolve/*/model.safetensors", method="GET")  # HEAD answers, the download fails: no retry
    with pytest.raises(HfHubHTTPError) as error:
        snapshot_download(REPO, revision="step2", allow_patterns=PATTERNS)
    assert type(error.value) is HfHubHTTPError and error.value.response.status_code == 500


def test_http_500_retries(hub):
    hub.fail("*/resolve/*/config.json", method="HEAD", times=1)  # the client retries a failed HEAD at once
    hf_hub_download(REPO, "config.json", revision="step2")
    assert [r.status for r in hub.requests if r.method == "HEAD"] == [500, 200]

    hub.requests.clear()
    hub.fail(f"/api/models/{REPO}/tree/step2", times=1)  # listings retry after 1 s
    started = time.perf_counter()
    assert "config.json" in list_repo_files(REPO, revision="step2")
    assert [r.status for r in hub.requests] == [500, 200] and time.perf_counter() - started >= 1

    hub.requests.clear()
    hub.fail(f"/api/models/{REPO}/tree/step3", retry_after=0)  # 5 retries, 1 s apart instead of 1, 2, 4, 8, 8 s
    with pytest.raises(HfHubHTTPError) as error:
        list_repo_files(REPO, revision="step3")
    assert type(error.value) is HfHubHTTPError and [r.status for r in hub.requests] == [500] * 6
