"""A small in-memory server speaking the part of the Hugging Face Hub protocol that embodyhub uses.

It serves ``huggingface_hub`` (pointed at it with ``HF_ENDPOINT``, ``HF_HUB_DISABLE_XET=1``) for:
``create_repo`` (``POST /api/repos/create``), README metadata pre-check (``/api/validate-yaml``, accepts
everything), ``preupload`` (regular vs LFS upload mode), the git-LFS batch API with the *basic* transfer
(one ``PUT`` per object, sha256 checked), the NDJSON ``commit`` endpoint (regular, LFS, deletions,
``parentCommit``), repo/revision info (``/api/models/<id>[/revision/<rev>]``), the tree listing, and
``HEAD``/``GET`` on ``/<id>/resolve/<rev>/<path>`` with ``ETag``, ``X-Repo-Commit``, ``X-Linked-Etag``
and ``X-Linked-Size``. Every request is logged (``requests``), and ``drop_next_commit`` makes the next
commit request read its body and close the connection without answering, so a test can check that
an interrupted upload leaves the repo at its previous commit.

What it does not do: authentication and permissions (tokens are ignored, private repos are served to
anyone), Xet storage, multipart LFS, server-side model-card validation, pull requests, redirects to a CDN.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".data", ".engine", ".plan", ".npz", ".npy", ".png", ".gz", ".zip")
LFS_MIN_SIZE = 10 * 1024 * 1024  # larger regular files go through LFS too, like on the Hub
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Entry:
    """One file of a commit: its bytes (regular) or the sha256 of an LFS object."""

    size: int
    content: bytes | None = None
    lfs_sha256: str | None = None

    @property
    def oid(self) -> str:
        return self.lfs_sha256 if self.lfs_sha256 else git_blob_sha1(self.content or b"")


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    files: dict[str, Entry]
    date: float = field(default_factory=time.time)


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)


class LocalHub:
    """The server state plus a background ``ThreadingHTTPServer`` on 127.0.0.1 (port chosen by the OS)."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.drop_next_commit = False
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "LocalHub":
        hub = self

        class Handler(_Handler):
            state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "call start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ------------------------------------------------------------------ helpers for tests
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def head(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> str:
        return self.repo(repo_id, repo_type).branches[branch]

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """The content of every file at ``revision`` (LFS objects resolved)."""
        commit = self.repo(repo_id, repo_type).resolve(revision)
        assert commit is not None
        return {p: e.content if e.lfs_sha256 is None else self.lfs[e.lfs_sha256] for p, e in commit.files.items()}

    def commit(self, repo: Repo, parent: Commit | None, title: str, files: dict[str, Entry], branch: str = "main") -> Commit:
        seed = f"{repo.repo_id}:{parent.oid if parent else ''}:{title}:{time.time_ns()}:{sorted((p, e.oid) for p, e in files.items())}"
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent.oid if parent else None, title, files)
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **body: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


class _Handler(BaseHTTPRequestHandler):
    state: LocalHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the log lives in state.requests
        return

    # ------------------------------------------------------------------ plumbing
    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        with self.state.lock:
            self.state.requests.append((method, self.path))
        try:
            for pattern, name in _ROUTES:
                if pattern[0] == method and (m := re.fullmatch(pattern[1], path)):
                    getattr(self, name)(query=query, **m.groupdict())
                    return
            raise _HubError(404, f"no route for {method} {path}")
        except _HubError as exc:
            headers = {"X-Error-Message": exc.message}
            if exc.code:
                headers["X-Error-Code"] = exc.code
            self._send(exc.status, json.dumps({"error": exc.message, **exc.body}).encode(), headers, content_type="application/json")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _body(self) -> bytes:
        """The request body; a body cut short (the client gone before its announced length, or a chunked body
        without its closing zero-size chunk) is a 400, never a partial body to act on."""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self._read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline()
                if not line.strip():
                    raise _HubError(400, "request body truncated: the chunked body ended without its last chunk")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self._read(size))
                self.rfile.readline()
        return b""

    def _read(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) < size:
            raise _HubError(400, f"request body truncated: {len(data)} of {size} bytes arrived")
        return data

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, content_type: str = "application/octet-stream", length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), content_type="application/json")

    def _repo(self, kind: str, repo_id: str) -> Repo:
        repo = self.state.repos.get((_TYPES.get(kind, kind), repo_id))
        if repo is None:
            raise _HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _revision(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(unquote(revision))
        if commit is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _endpoint(self) -> str:
        return f"http://{self.headers.get('Host')}"

    # ------------------------------------------------------------------ API
    def create_repo(self, query: dict) -> None:
        payload = json.loads(self._body() or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        with self.state.lock:
            if (repo_type, repo_id) in self.state.repos:  # the Hub names the existing repo in its 409 body
                raise _HubError(409, "You already created this model repo", url=f"{self._endpoint()}/{prefix}{repo_id}")
            repo = Repo(repo_id, repo_type, payload.get("visibility") == "private" or bool(payload.get("private")))
            self.state.repos[(repo_type, repo_id)] = repo
            self.state.commit(repo, None, "initial commit", {".gitattributes": Entry(len(GITATTRIBUTES), GITATTRIBUTES)})
        self._json({"url": f"{self._endpoint()}/{prefix}{repo_id}", "name": repo_id, "id": repo_id})

    def validate_yaml(self, query: dict) -> None:
        self._body()
        self._json({"errors": [], "warnings": []})

    def preupload(self, query: dict, kind: str, repo_id: str, revision: str) -> None:
        payload = json.loads(self._body())
        commit = self._revision(self._repo(kind, repo_id), revision)
        files = []
        for f in payload["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_SIZE
            existing = commit.files.get(f["path"])
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": existing.oid if existing else None})
        self._json({"files": files, "commitOid": commit.oid})

    def lfs_batch(self, query: dict, prefix: str | None, repo_id: str) -> None:
        payload = json.loads(self._body())
        self._repo((prefix or "models/").rstrip("/"), repo_id)
        objects = []
        for obj in payload["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.lfs:
                entry["actions"] = {"upload": {"href": f"{self._endpoint()}/_lfs/{obj['oid']}", "header": {}}}
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(), content_type="application/vnd.git-lfs+json")

    def lfs_put(self, query: dict, oid: str) -> None:
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise _HubError(400, "sha256 of the uploaded object does not match its oid")
        with self.state.lock:
            self.state.lfs[oid] = data
        self._send(200)

    def create_commit(self, query: dict, kind: str, repo_id: str, revision: str) -> None:
        body = self._body()
        if self.state.drop_next_commit:  # simulate a connection lost mid-commit: no answer, nothing applied
            self.state.drop_next_commit = False
            self.close_connection = True
            self.connection.close()
            return
        repo = self._repo(kind, repo_id)
        branch = unquote(revision)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        with self.state.lock:
            parent = self._revision(repo, branch)
            if header.get("parentCommit") and header["parentCommit"] != parent.oid:
                raise _HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(parent.files)
            for item in lines:
                key, value = item["key"], item["value"]
                if key == "file":
                    data = base64.b64decode(value["content"])
                    files[value["path"]] = Entry(len(data), data)
                elif key == "lfsFile":
                    if value["oid"] not in self.state.lfs:
                        raise _HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                    files[value["path"]] = Entry(value["size"], lfs_sha256=value["oid"])
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise _HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    files = {p: e for p, e in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
                elif key != "header":
                    raise _HubError(400, f"unsupported commit operation {key!r}")
            commit = self.state.commit(repo, parent, header["summary"], files, branch)
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        self._json({"commitUrl": f"{self._endpoint()}/{prefix}{repo_id}/commit/{commit.oid}", "commitOid": commit.oid, "success": True})

    def repo_info(self, query: dict, kind: str, repo_id: str, revision: str | None = None) -> None:
        repo = self._repo(kind, repo_id)
        commit = self._revision(repo, revision or "main")
        self._json(
            {
                "id": repo_id,
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "sha": commit.oid,
                "private": repo.private,
                "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.date)),
                "siblings": [self._sibling(p, e) for p, e in sorted(commit.files.items())],
            }
        )

    @staticmethod
    def _sibling(path: str, e: Entry) -> dict[str, Any]:
        out: dict[str, Any] = {"rfilename": path, "size": e.size, "blobId": e.oid}
        if e.lfs_sha256:
            out["lfs"] = {"sha256": e.lfs_sha256, "size": e.size, "pointerSize": 134}
        return out

    def tree(self, query: dict, kind: str, repo_id: str, revision: str, path: str | None = None) -> None:
        commit = self._revision(self._repo(kind, repo_id), revision)
        root = (path or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries, dirs = [], set()
        for p, e in sorted(commit.files.items()):
            if root and not p.startswith(root + "/"):
                continue
            rest = p[len(root) + 1 :] if root else p
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                d = "/".join(([root] if root else []) + parts[:depth])
                if d not in dirs and (recursive or depth == 1):
                    dirs.add(d)
                    entries.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d})
            if recursive or len(parts) == 1:
                item: dict[str, Any] = {"type": "file", "oid": git_blob_sha1(e.content) if e.content is not None else e.oid, "size": e.size, "path": p}
                if e.lfs_sha256:
                    item["lfs"] = {"oid": e.lfs_sha256, "size": e.size, "pointerSize": 134}
                entries.append(item)
        self._json(entries)

    def resolve(self, query: dict, prefix: str | None, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo((prefix or "models/").rstrip("/"), repo_id)
        commit = self._revision(repo, revision)
        entry = commit.files.get(path)
        if entry is None:
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = entry.content if entry.lfs_sha256 is None else self.state.lfs[entry.lfs_sha256]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.oid}"', "Accept-Ranges": "bytes"}
        if entry.lfs_sha256:
            headers.update({"X-Linked-Etag": f'"{entry.lfs_sha256}"', "X-Linked-Size": str(entry.size)})
        assert data is not None
        rng = self.headers.get("Range")
        if rng and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())) and self.command == "GET":
            start, end = int(m[1]), int(m[2]) if m[2] else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._send(206, data[start : end + 1], headers)
            return
        self._send(200, data, headers)


_REPO = r"(?P<repo_id>[^/]+/[^/]+|[^/]+)"
_ROUTES = [
    (("POST", r"/api/repos/create"), "create_repo"),
    (("POST", r"/api/validate-yaml"), "validate_yaml"),
    (("POST", rf"/api/(?P<kind>models|datasets|spaces)/{_REPO}/preupload/(?P<revision>[^/]+)"), "preupload"),
    (("POST", rf"/api/(?P<kind>models|datasets|spaces)/{_REPO}/commit/(?P<revision>[^/]+)"), "create_commit"),
    (("POST", rf"/(?P<prefix>datasets/|spaces/)?{_REPO}\.git/info/lfs/objects/batch"), "lfs_batch"),
    (("PUT", r"/_lfs/(?P<oid>[0-9a-f]{64})"), "lfs_put"),
    (("GET", rf"/api/(?P<kind>models|datasets|spaces)/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?"), "tree"),
    (("GET", rf"/api/(?P<kind>models|datasets|spaces)/{_REPO}/revision/(?P<revision>[^/]+)"), "repo_info"),
    (("GET", rf"/api/(?P<kind>models|datasets|spaces)/{_REPO}"), "repo_info"),
    (("HEAD", rf"/(?P<prefix>datasets/|spaces/)?{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)"), "resolve"),
    (("GET", rf"/(?P<prefix>datasets/|spaces/)?{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)"), "resolve"),
]


if __name__ == "__main__":  # manual use: python -m embodyhub.hub.local_server, then export HF_ENDPOINT=<printed url>
    server = LocalHub().start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
