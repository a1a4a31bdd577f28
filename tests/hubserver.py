"""A local stand-in for the Hugging Face Hub, at the HTTP level, for tests that cannot reach the real one.

`HubServer` serves model repos made of branches (each branch a folder of files) on 127.0.0.1, speaking the parts of
the hub API that `huggingface_hub` (checked against 2.4.0) uses to list and download revisions:

    GET  /api/{models|datasets|spaces}/{org}/{name}[/revision/{rev}][?blobs=true]   repo_info / model_info
    GET  /api/{type}s/{org}/{name}/refs                                              list_repo_refs
    GET  /api/{type}s/{org}/{name}/tree/{rev}[/{path}]?recursive=&expand=&cursor=   list_repo_tree, list_repo_files
    POST /api/{type}s/{org}/{name}/paths-info/{rev}   (form: paths=...&expand=...)  get_paths_info
    GET  /api/agent-harnesses                          (an empty registry)           user-agent telemetry
    HEAD /[{type}s/]{org}/{name}/resolve/{rev}/{path}                                get_hf_file_metadata
    GET  /[{type}s/]{org}/{name}/resolve/{rev}/{path}   (Range: bytes=a-b → 206)     hf_hub_download, snapshot_download

As on the hub, `*.safetensors`, `*.bin`, `*.pt` (and the other suffixes in `LFS_SUFFIXES`) and any file over 10 MiB
are LFS files: their ETag is the quoted sha256 and the tree lists `lfs: {oid, size, pointerSize}`, `oid` being the git
blob id of the LFS pointer. Other files have their git blob sha1 as ETag and oid. A branch's commit is a sha1 of the
repo, the branch name and the files, so it is the same in every run; byte-identical branches share blobs but not
commits (each hub branch is its own commit). Commits stay resolvable by sha after their branch is gone. No redirects
and no Xet: files are served from /resolve directly. Unknown repo, revision or file get 404 with the hub's
`X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound), so the client raises RepositoryNotFoundError,
RevisionNotFoundError and RemoteEntryNotFoundError. Unknown endpoints get a bare 404 (HfHubHTTPError), and show in
`requests`. Files are read into memory when a branch is added: this is for tiny checkpoints.

    with HubServer() as hub:
        hub.add_branch("org/tiny", "step0", folder)
        hub.add_branch("org/tiny", "main", {"config.json": b"{}"})
        use_hub(monkeypatch, hub.endpoint, tmp_path / "hf_home")
        snapshot_download("org/tiny", revision="step0")
        hub.fetched()            # [("org/tiny", "<commit>", "config.json"), ...]: files sent by GET

Faults (each returns the `Fault`, whose `hits` counts how often it fired; `times=None` fires forever):

    hub.fail(pattern, status=500, method=None, times=None, retry_after=None)  answer matching requests with `status`
    hub.truncate(pattern, keep, times=None, close=False)  GETs send only the first `keep` bytes of the body
    hub.vanish_after_listing(repo, branch)                the branch is deleted once a refs listing has shown it

`pattern` is an fnmatch pattern over the decoded request path, e.g. "*/resolve/*/model.safetensors" or
"/api/models/org/tiny/tree/*". What huggingface_hub 2.4.0 does with each (the tests check those marked *):

- vanish_after_listing*: RevisionNotFoundError from list_repo_files, snapshot_download (and hf_hub_download,
  model_info) on that branch.
- truncate(close=False)*: a well-formed but short response (Content-Length = keep). snapshot_download and
  hf_hub_download raise a plain OSError("Consistency check failed: file should be of size N but has size keep
  (...)"), leaving no blob in the cache; the next try downloads it whole.
- truncate(close=True)*: Content-Length promises the whole body, the connection closes after `keep` bytes. The client
  sleeps 1 s and tries again, resuming with `Range: bytes=<bytes kept>-` (a 206 here); it keeps only whole 10 MiB
  chunks, so a smaller file is asked for again whole. The download succeeds.
- fail(500) on GET /api/.../refs or /api/.../revision/... (list_repo_refs, model_info)*: HfHubHTTPError (status 500)
  at once, no retry. Through snapshot_download (its first call is repo_info)*: LocalEntryNotFoundError("An error
  happened while trying to locate the files on the Hub ...") whose __cause__ is that HfHubHTTPError, unless the
  snapshot is already cached, which it then returns.
- fail(500, method="GET") on /resolve*: HfHubHTTPError (status 500) out of hf_hub_download / snapshot_download at
  once: downloads are not retried on 5xx.
- fail(500, method="HEAD") on /resolve: times=1* is retried at once and invisible. Always failing, hf_hub_download
  retries 5 more times with 1, 2, 4, 8, 8 s waits, then raises LocalEntryNotFoundError (cause HfHubHTTPError): 23 s,
  7 HEADs; with retry_after=0 each wait is 1 s (5 s).
- fail(500) on /api/.../tree/* (list_repo_tree, list_repo_files): times=1* succeeds after 1 s. Always failing*:
  HfHubHTTPError after 6 requests and the same waits (23 s; 5 s with retry_after=0).

How to point the client at the server. huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE into
`huggingface_hub.constants` at import, builds `constants.HUGGINGFACE_CO_URL_TEMPLATE` (used by hf_hub_download) from
the endpoint then, and the module-level `HfApi()` behind `huggingface_hub.list_repo_refs`, `model_info` etc. keeps
the endpoint it was created with; transformers keeps its own lazy `HfApi` (`transformers.utils.hub._hf_api`). Setting
the environment after import is therefore not enough in-process: `use_hub(monkeypatch, endpoint, hf_home)` sets the
environment (for subprocesses) and patches those constants and instances (undone by monkeypatch). tests/conftest.py
sets HF_HUB_OFFLINE=1 before the tests import anything, so `use_hub` also clears offline mode. A subprocess needs only
the environment: `subprocess.run(..., env=client_env(endpoint, hf_home))`.

Offline with a warm cache: `use_offline(monkeypatch)` (HF_HUB_OFFLINE=1 and `constants.HF_HUB_OFFLINE = True`; the
client checks that constant before every request). Then `snapshot_download(repo, revision=branch,
allow_patterns=...)` sends nothing: it reads the commit from `<cache>/models--org--name/refs/<branch>` and returns
`snapshots/<commit>` if the cached tree listing (`trees/<commit>.json`) shows every file the patterns select;
otherwise it raises IncompleteSnapshotError. `list_repo_files` / `list_repo_tree` have no offline fallback: they
raise OfflineModeIsEnabled (`huggingface_hub.get_cached_repo_tree` reads the cached listing instead).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".model", ".npy", ".npz", ".pkl",
    ".pickle", ".parquet", ".arrow", ".gguf", ".zip", ".gz", ".tar",
)
LFS_THRESHOLD = 10 * 2**20  # the hub refuses non-LFS files over 10 MiB
DATE = "2024-01-01T00:00:00.000Z"
TREE_PAGE = 1000  # the hub's page size for /tree without expand


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class HubFile:
    data: bytes
    oid: str  # git blob id: of the file, or of its LFS pointer
    sha256: str | None  # LFS files only
    pointer_size: int | None

    @classmethod
    def of(cls, path: str, data: bytes) -> HubFile:
        if not (path.endswith(LFS_SUFFIXES) or len(data) > LFS_THRESHOLD):
            return cls(data, git_blob_sha1(data), None, None)
        sha256 = hashlib.sha256(data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
        return cls(data, git_blob_sha1(pointer), sha256, len(pointer))

    @property
    def etag(self) -> str:
        return self.sha256 or self.oid


class Request(NamedTuple):
    method: str
    path: str  # decoded, without the query
    status: int
    range: str | None
    query: str


@dataclass
class Fault:
    pattern: str
    method: str | None = None
    status: int = 500
    keep: int | None = None  # truncate: body bytes sent
    retry_after: int | None = None  # fail: a Retry-After header, which sets the client's wait before retrying
    close: bool = False
    times: int | None = None
    hits: int = 0

    def take(self, method: str, path: str) -> bool:
        if (self.method and self.method != method) or not fnmatch.fnmatchcase(path, self.pattern):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit, self.headers = status, code, message, commit, headers


class HubServer:
    def __init__(self, page_size: int = TREE_PAGE):
        self.page_size = page_size
        self.repos: dict[str, dict[str, str]] = {}  # "type:org/name" -> {branch: commit}
        self.commits: dict[str, dict[str, HubFile]] = {}  # commit -> {path: file}
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.vanishing: set[tuple[str, str]] = set()
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()  # quick shutdown
        return self

    def stop(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    # ------------------------------------------------------------------------------------------- content
    def add_branch(self, repo: str, branch: str, source: Path | str | dict[str, bytes], repo_type="model") -> str:
        """Make `branch` of `repo` hold `source` (a folder, or {path: bytes}); returns its commit sha."""
        if not isinstance(source, dict):
            root = Path(source)
            source = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        files = {path: HubFile.of(path, data) for path, data in sorted(source.items())}
        listing = "".join(f"{path}\0{f.oid}\0" for path, f in files.items())
        commit = hashlib.sha1(f"{repo_type}:{repo}\0{branch}\0{listing}".encode()).hexdigest()
        with self.lock:
            self.commits[commit] = files
            self.repos.setdefault(f"{repo_type}:{repo}", {})[branch] = commit
        return commit

    def remove_branch(self, repo: str, branch: str, repo_type="model") -> None:
        with self.lock:
            del self.repos[f"{repo_type}:{repo}"][branch]

    def branches(self, repo: str, repo_type="model") -> dict[str, str]:
        return dict(self.repos[f"{repo_type}:{repo}"])

    # ------------------------------------------------------------------------------------------- faults
    def fail(self, pattern: str, status: int = 500, method: str | None = None, times: int | None = None,
             retry_after: int | None = None) -> Fault:
        return self._fault(Fault(pattern, method, status=status, times=times, retry_after=retry_after))

    def truncate(self, pattern: str, keep: int, times: int | None = None, close: bool = False) -> Fault:
        return self._fault(Fault(pattern, "GET", keep=keep, close=close, times=times))

    def vanish_after_listing(self, repo: str, branch: str, repo_type="model") -> None:
        self.vanishing.add((f"{repo_type}:{repo}", branch))

    def _fault(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def _take_fault(self, method: str, path: str, truncating: bool) -> Fault | None:
        with self.lock:
            return next((f for f in self.faults if (f.keep is not None) == truncating and f.take(method, path)), None)

    # ------------------------------------------------------------------------------------------- log
    def fetched(self, method: str = "GET") -> list[tuple[str, str, str]]:
        """(repo, revision, file) of each successful `method` on /resolve, in order."""
        out = []
        for r in self.requests:
            match = _RESOLVE.match(r.path)
            if r.method == method and match and r.status in (200, 206):
                out.append((f"{match['org']}/{match['name']}", match["rev"], match["file"]))
        return out

    # ------------------------------------------------------------------------------------------- lookups
    def _repo(self, key: str) -> dict[str, str]:
        if key not in self.repos:
            raise HubError(404, "RepoNotFound", "Repository not found")
        return self.repos[key]

    def _resolve(self, key: str, revision: str) -> str:
        branches = self._repo(key)
        if revision in branches:
            return branches[revision]
        if re.fullmatch(r"[0-9a-f]{40}", revision) and revision in self.commits:
            return revision
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")


_API = re.compile(r"/api/(?P<type>models|datasets|spaces)/(?P<org>[^/]+)/(?P<name>[^/]+)(?P<rest>/.*)?")
_RESOLVE = re.compile(r"/(?:(?P<type>datasets|spaces)/)?(?P<org>[^/]+)/(?P<name>[^/]+)/resolve/(?P<rev>[^/]+)/"
                      r"(?P<file>.+)")


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the client pools connections
    timeout = 60  # idle keep-alive connections end their thread eventually

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    # ------------------------------------------------------------------------------------------- dispatch
    def _handle(self) -> None:
        url = urlsplit(self.path)
        # Split before decoding: a revision like refs/pr/1 arrives as one %2F-encoded segment.
        raw = url.path
        self.logged_path = unquote(raw)
        self.query = parse_qs(url.query)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = self.hub._take_fault(self.command, self.logged_path, truncating=False)
        try:
            if fault:
                extra = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                raise HubError(fault.status, None, f"injected HTTP {fault.status}", headers=extra)
            if raw == "/api/agent-harnesses":  # user-agent telemetry, fetched once a day: nothing to detect
                self._json({"standardEnvVars": [], "harnesses": {}})
            elif match := _API.fullmatch(raw):
                self._api(match, body)
            elif (match := _RESOLVE.fullmatch(raw)) and self.command in ("GET", "HEAD"):
                self._resolve_file(match)
            else:
                raise HubError(404, None, f"no such endpoint in HubServer: {self.command} {self.logged_path}")
        except HubError as e:
            headers = {"X-Error-Message": e.message, **(e.headers or {})}
            if e.code:
                headers["X-Error-Code"] = e.code
            if e.commit:
                headers["X-Repo-Commit"] = e.commit
            self._json({"error": e.message}, e.status, headers)

    def _api(self, match: re.Match, body: bytes) -> None:
        hub = self.hub
        key = f"{match['type'][:-1]}:{match['org']}/{match['name']}"
        repo_id = f"{match['org']}/{match['name']}"
        rest = (match["rest"] or "").split("/")[1:]  # still percent-encoded
        action = rest[0] if rest else ""
        if self.command == "GET" and action in ("", "revision") and len(rest) == (2 if action else 0):
            revision = unquote(rest[1]) if action else "main"
            return self._json(self._info(repo_id, hub._resolve(key, revision)))
        if self.command == "GET" and rest == ["refs"]:
            branches = hub._repo(key)
            with hub.lock:
                listed = sorted(branches.items())
                for name, _ in listed:
                    if (key, name) in hub.vanishing:
                        hub.vanishing.discard((key, name))
                        del branches[name]
            refs = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in listed]
            return self._json({"branches": refs, "converts": [], "tags": [], "pullRequests": []})
        if self.command == "GET" and action == "tree" and len(rest) >= 2:
            commit = hub._resolve(key, unquote(rest[1]))
            return self._tree(key, commit, unquote("/".join(rest[2:])))
        if self.command == "POST" and action == "paths-info" and len(rest) == 2:
            commit = hub._resolve(key, unquote(rest[1]))
            form = parse_qs(body.decode())
            expand = form.get("expand", ["false"])[0].lower() in ("true", "1")
            entries = {e["path"]: e for e in _entries(hub.commits[commit], commit, "", True, expand)}
            return self._json([entries[p] for p in form.get("paths", []) if p in entries])
        hub._repo(key)
        raise HubError(404, None, f"no such endpoint in HubServer: {self.command} {self.logged_path}")

    # ------------------------------------------------------------------------------------------- api bodies
    def _info(self, repo_id: str, commit: str) -> dict:
        files = self.hub.commits[commit]
        siblings = []
        for path, f in files.items():
            sibling = {"rfilename": path}
            if self.query.get("blobs", ["false"])[0].lower() in ("true", "1"):
                sibling |= {"blobId": f.oid, "size": len(f.data)}
                if f.sha256:
                    sibling["lfs"] = {"sha256": f.sha256, "size": len(f.data), "pointerSize": f.pointer_size}
            siblings.append(sibling)
        return {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
            "author": repo_id.split("/")[0], "sha": commit, "lastModified": DATE, "createdAt": DATE,
            "private": False, "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
            "library_name": "transformers", "siblings": siblings,
            "usedStorage": sum(len(f.data) for f in files.values()),
        }

    def _tree(self, key: str, commit: str, path: str) -> None:
        files = self.hub.commits[commit]
        if path and not any(p.startswith(path + "/") for p in files):
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {commit}", commit)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        expand = self.query.get("expand", ["false"])[0].lower() in ("true", "1")
        entries = _entries(files, commit, path, recursive, expand)
        start = int(self.query.get("cursor", ["0"])[0])
        page = entries[start:start + self.hub.page_size]
        headers = {}
        if start + self.hub.page_size < len(entries):
            url = urlsplit(self.path)
            query = "&".join(f"{k}={quote(v[0])}" for k, v in self.query.items() if k != "cursor")
            next_url = f"{self.hub.endpoint}{url.path}?{query}&cursor={start + self.hub.page_size}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._json(page, headers=headers)

    # ------------------------------------------------------------------------------------------- files
    def _resolve_file(self, match: re.Match) -> None:
        key = f"{(match['type'] or 'models')[:-1]}:{match['org']}/{match['name']}"
        commit = self.hub._resolve(key, unquote(match["rev"]))
        path = unquote(match["file"])
        f = self.hub.commits[commit].get(path)
        if f is None:
            raise HubError(404, "EntryNotFound", "Entry not found", commit)
        name = path.rsplit("/", 1)[-1]
        headers = {
            "Content-Type": "application/octet-stream", "ETag": f'"{f.etag}"', "X-Repo-Commit": commit,
            "Accept-Ranges": "bytes", "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; "
                                                             f'filename="{name}";',
        }
        if f.sha256:
            headers |= {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.data))}
        status, body = 200, f.data
        wanted = self.headers.get("Range")
        if wanted and self.command == "GET":
            span = _byte_range(wanted, len(f.data))
            if span is None:
                raise HubError(416, None, f"Range {wanted} not satisfiable for {len(f.data)} bytes")
            if span != (0, len(f.data)):
                status, body = 206, f.data[span[0]:span[1]]
                headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{len(f.data)}"
        fault = self.hub._take_fault(self.command, self.logged_path, truncating=True)
        if fault is None:
            return self._send(status, body, headers)
        if fault.close:  # promise the whole body, then hang up: the client sees a dropped connection
            self._send(status, body[:fault.keep], headers, length=len(body))
            self.close_connection = True
        else:  # a well-formed response that is simply too short
            self._send(status, body[:fault.keep], headers)

    # ------------------------------------------------------------------------------------------- output
    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        self._send(status, json.dumps(obj).encode(), headers)

    def _send(self, status: int, body: bytes, headers: dict, length: int | None = None) -> None:
        self.hub.requests.append(
            Request(self.command, self.logged_path, status, self.headers.get("Range"), urlsplit(self.path).query))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self.wfile.flush()


def _entries(files: dict[str, HubFile], commit: str, path: str, recursive: bool, expand: bool) -> list[dict]:
    """Tree entries under `path` (files and folders, as /tree and /paths-info list them), folders first."""
    prefix = path + "/" if path else ""
    folders, out = {}, []
    for name, f in files.items():
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix):].split("/")
        depth = len(parts) - 1 if recursive else min(len(parts) - 1, 1)
        for i in range(depth):
            folders.setdefault(prefix + "/".join(parts[:i + 1]), None)
        if recursive or len(parts) == 1:
            entry = {"type": "file", "oid": f.oid, "size": len(f.data), "path": name}
            if f.sha256:
                entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": f.pointer_size}
            out.append(entry)
    for folder in folders:
        listing = folder + "".join(f"\0{n}\0{f.oid}" for n, f in files.items() if n.startswith(folder + "/"))
        out.append({"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": folder})
    if expand:
        for entry in out:
            entry["lastCommit"] = {"id": commit, "title": "Upload", "date": DATE}
    return sorted(out, key=lambda e: (e["type"] == "file", e["path"]))


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range; None if unsatisfiable."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or match[1] == match[2] == "":
        return (0, size)  # not a single byte range: may be ignored (RFC 9110)
    if match[1] == "":
        start, end = max(size - int(match[2]), 0), size
    else:
        start, end = int(match[1]), min(int(match[2]) + 1, size) if match[2] else size
    return (start, end) if start < end else None


# ---------------------------------------------------------------------------------------------- client side
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def client_env(endpoint: str, hf_home: Path | str, base: dict | None = None) -> dict[str, str]:
    """Environment for a subprocess whose huggingface_hub should talk to `endpoint`, caching under `hf_home`."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in OFFLINE_VARS and not k.startswith(("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN"))}
    return env | {
        "HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_XET": "1",
    }


def use_hub(monkeypatch, endpoint: str, hf_home: Path | str) -> None:
    """Point huggingface_hub (and transformers) in this process, and any subprocess it starts, at `endpoint`."""
    import sys

    from huggingface_hub import constants, hf_api

    for name in OFFLINE_VARS + ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in client_env(endpoint, hf_home, base={}).items():
        monkeypatch.setenv(name, value)
    hf_home = str(hf_home)
    for name, value in {
        "ENDPOINT": endpoint, "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False, "HF_HOME": hf_home, "HF_HUB_CACHE": os.path.join(hf_home, "hub"),
        "HUGGINGFACE_HUB_CACHE": os.path.join(hf_home, "hub"), "HF_ASSETS_CACHE": os.path.join(hf_home, "assets"),
        "HF_XET_CACHE": os.path.join(hf_home, "xet"), "HF_TOKEN_PATH": os.path.join(hf_home, "token"),
        "HF_STORED_TOKENS_PATH": os.path.join(hf_home, "stored_tokens"), "HF_HUB_DISABLE_IMPLICIT_TOKEN": True,
        "HF_HUB_DISABLE_XET": True, "HF_HUB_DISABLE_TELEMETRY": True,
        "AGENT_HARNESSES_PATH": os.path.join(hf_home, ".agent_harnesses.json"),
    }.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    if "transformers.utils.hub" in sys.modules:
        monkeypatch.setattr(sys.modules["transformers.utils.hub"], "_hf_api", None)


def use_offline(monkeypatch, offline: bool = True) -> None:
    """Offline mode on (or off) for this process and its subprocesses, whenever huggingface_hub was imported."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
