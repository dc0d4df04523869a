"""A loopback stand-in for the Hugging Face Hub, for tests only.

It speaks the part of the Hub HTTP API that the real ``huggingface_hub`` (2.4) and ``datasets``
(5.2) clients use to create a dataset repo, commit to it (regular and LFS files, deletions,
branches, pull requests) and read it back (repo info, tree, paths-info, resolve with ranges),
so the product code runs unchanged against it (docs/ARCHITECTURE.md, "Models without the Hub, and tests").

State lives in memory. Every commit keeps the NDJSON operations it was sent, so tests can
assert exactly what an upload changed. One fixed token is valid; any other is refused with 401
like the real Hub does. Not product code: no persistence, no concurrency guarantees beyond one
lock around the state.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

VALID_TOKEN = "hf_fakeTokenForLoopbackHub0123456789"
USER = "tester"
ORGS = ("sc-org",)
MAX_BODY = 256 << 20  # refuse request bodies above 256 MiB: the tests upload kilobytes
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"
LFS_SUFFIXES = (".parquet", ".png", ".arrow", ".bin", ".safetensors")


def git_blob_oid(data: bytes) -> str:
    """Git's object id of a blob: sha1 of ``blob <size>\\0<data>``."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The git-lfs pointer file that git stores in place of an LFS file."""
    oid = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


@dataclass
class StoredFile:
    """One file of one revision; ``lfs`` files are served by their sha256."""

    data: bytes
    lfs: bool

    def tree_entry(self, path: str) -> dict[str, Any]:
        if not self.lfs:
            return {"type": "file", "path": path, "size": len(self.data), "oid": git_blob_oid(self.data)}
        pointer = lfs_pointer(self.data)
        return {
            "type": "file",
            "path": path,
            "size": len(self.data),
            "oid": git_blob_oid(pointer),
            "lfs": {"oid": hashlib.sha256(self.data).hexdigest(), "size": len(self.data), "pointerSize": len(pointer)},
        }

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.data).hexdigest() if self.lfs else git_blob_oid(self.data)


@dataclass
class Commit:
    """A commit: the full file snapshot after it, and the operations the client sent."""

    oid: str
    message: str
    files: dict[str, StoredFile]
    operations: list[dict[str, Any]]


@dataclass
class Repo:
    """A dataset (or model) repo with its refs (branches and PR refs) and commits."""

    repo_type: str
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    pr_count: int = 0

    def commit_at(self, rev: str) -> Commit | None:
        rev = unquote(rev)
        if rev in self.refs:
            return self.commits[self.refs[rev]]
        return self.commits.get(rev)


class HubError(Exception):
    """An HTTP error answer: status, Hub error code and message."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FakeHub:
    """The in-memory Hub state and the server thread that serves it on 127.0.0.1."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, had an Authorization header)
        self.lock = threading.Lock()
        self._failures: list[tuple[str, int]] = []
        self._oids = itertools.count(1)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def fail_next(self, path_prefix: str, status: int, times: int) -> None:
        """Answer the next ``times`` requests whose path starts with ``path_prefix`` with ``status``."""
        with self.lock:
            self._failures.extend([(path_prefix, status)] * times)

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    # ---- state changes (called with the lock held) -------------------------------------------

    def _new_oid(self) -> str:
        return hashlib.sha1(f"commit-{next(self._oids)}".encode()).hexdigest()

    def _add_commit(self, repo: Repo, ref: str, message: str, files: dict[str, StoredFile], ops: list[dict[str, Any]]) -> Commit:
        commit = Commit(self._new_oid(), message, files, ops)
        repo.commits[commit.oid] = commit
        repo.refs[ref] = commit.oid
        repo.history.append(commit.oid)
        return commit

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_type, repo_id, private)
        self.repos[(repo_type, repo_id)] = repo
        self._add_commit(repo, "main", "initial commit", {".gitattributes": StoredFile(GITATTRIBUTES, False)}, [])
        return repo

    def apply_commit(self, repo: Repo, rev: str, lines: list[dict[str, Any]], create_pr: bool) -> tuple[Commit, str | None]:
        base = repo.commit_at(rev)
        if base is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        header = next((line["value"] for line in lines if line["key"] == "header"), None)
        if header is None or not header.get("summary"):
            raise HubError(400, None, "commit header with a summary is required")
        files = dict(base.files)
        ops = [line for line in lines if line["key"] != "header"]
        for op in ops:
            value = op["value"]
            path = value["path"]
            if op["key"] == "file":
                files[path] = StoredFile(base64.b64decode(value["content"]), False)
            elif op["key"] == "lfsFile":
                if value["oid"] not in self.lfs_store:
                    raise HubError(400, None, f"LFS object {value['oid']} of {path} was never uploaded")
                files[path] = StoredFile(self.lfs_store[value["oid"]], True)
            elif op["key"] == "deletedFile":
                if path not in files:
                    raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {path}")
                del files[path]
            elif op["key"] == "deletedFolder":
                files = {p: f for p, f in files.items() if not p.startswith(path.rstrip("/") + "/")}
            else:
                raise HubError(400, None, f"unknown commit operation {op['key']}")
        ref, pr_url = unquote(rev), None
        if create_pr:
            repo.pr_count += 1
            ref = f"refs/pr/{repo.pr_count}"
            pr_url = f"{self.endpoint}/{_prefix(repo.repo_type)}{repo.repo_id}/discussions/{repo.pr_count}"
        return self._add_commit(repo, ref, header["summary"], files, ops), pr_url


def _prefix(repo_type: str) -> str:
    return "" if repo_type == "model" else f"{repo_type}s/"


_API_REPO = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(.*))?$")
_GIT_REPO = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:  # noqa: C901 - mccabe counts every method of the nested handler class as one function; each method is short
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # close idle keep-alive connections so handler threads end soon after a test

        def log_message(self, *args: Any) -> None:  # silence the per-request log on stderr
            return

        # ---- plumbing ---------------------------------------------------------------------

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks, total = [], 0
                for _ in range(1 << 20):  # bounded: at most a million chunks
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    total += size
                    if total > MAX_BODY:
                        raise HubError(413, None, "request body too large")
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise HubError(413, None, "request body too large")
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), headers)

        def _error(self, err: HubError) -> None:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._json(err.status, {"error": err.message}, headers)

        def _auth(self) -> bool:
            """True with the valid token, False with none; a wrong token is refused outright."""
            header = self.headers.get("Authorization")
            if header is None:
                return False
            if header != f"Bearer {VALID_TOKEN}":
                raise HubError(401, None, "Invalid credentials in Authorization header")
            return True

        def _readable(self, repo_type: str, repo_id: str, authed: bool) -> Repo:
            repo = hub.repos.get((repo_type, repo_id))
            if repo is None or (repo.private and not authed):
                raise HubError(404 if authed else 401, "RepoNotFound", "Repository not found")
            return repo

        def _writable(self, repo_type: str, repo_id: str, authed: bool) -> Repo:
            if not authed:
                raise HubError(401, None, "You must be authenticated to write")
            repo = self._readable(repo_type, repo_id, authed)
            if repo_id.split("/")[0] not in (USER, *ORGS):
                raise HubError(403, None, f"You don't have the rights to write to {repo_id}")
            return repo

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            path, query = unquote(url.path), parse_qs(url.query)
            body = self._body()
            with hub.lock:
                hub.requests.append((self.command, path, "Authorization" in self.headers))
                for i, (prefix, status) in enumerate(hub._failures):
                    if path.startswith(prefix):
                        del hub._failures[i]
                        raise HubError(status, None, "injected failure")
                authed = self._auth()
                self._route(self.command, path, query, body, authed, url.path)

        def _handle(self) -> None:
            try:
                self._dispatch()
            except HubError as err:
                self._error(err)
            except Exception as err:  # a bug here must fail the test loudly, not hang the client
                self._error(HubError(500, None, f"fake hub failed on {self.command} {self.path}: {err!r}"))

        do_GET = do_POST = do_PUT = do_HEAD = _handle

        # ---- routes -----------------------------------------------------------------------

        def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes, authed: bool, raw_path: str) -> None:
            if path == "/api/whoami-v2" and method == "GET":
                if not authed:
                    raise HubError(401, None, "Invalid credentials in Authorization header")
                orgs = [{"name": org, "type": "org"} for org in ORGS]
                return self._json(200, {"type": "user", "name": USER, "orgs": orgs, "auth": {"type": "access_token"}})
            if path == "/api/repos/create" and method == "POST":
                return self._create_repo(json.loads(body), authed)
            if path == "/api/validate-yaml" and method == "POST":
                return self._json(200, {"errors": [], "warnings": []})
            if path.startswith("/lfs-upload/") and method == "PUT":
                oid = path.rsplit("/", 1)[1]
                if hashlib.sha256(body).hexdigest() != oid:
                    raise HubError(400, None, f"uploaded bytes do not match oid {oid}")
                hub.lfs_store[oid] = body
                return self._send(200)
            if m := _GIT_REPO.match(path):
                return self._lfs_batch((m.group(1) or "models")[:-1], m.group(2), json.loads(body), authed)
            if m := _RESOLVE.match(path):
                rev_raw, _, file_raw = raw_path.split("/resolve/", 1)[1].partition("/")
                return self._resolve((m.group(1) or "models")[:-1], m.group(2), unquote(rev_raw), unquote(file_raw), authed)
            if m := _API_REPO.match(path):
                raw_rest = _API_REPO.match(raw_path)
                return self._api(m.group(1)[:-1], m.group(2), raw_rest.group(3) or "" if raw_rest else "", method, query, body, authed)
            raise HubError(404, None, f"no route for {method} {path}")

        def _create_repo(self, payload: dict[str, Any], authed: bool) -> None:
            if not authed:
                raise HubError(401, None, "You must be authenticated to create a repo")
            repo_type = payload.get("type") or "model"
            org = payload.get("organization") or USER
            repo_id = f"{org}/{payload['name']}"
            url = f"{hub.endpoint}/{_prefix(repo_type)}{repo_id}"
            if org not in (USER, *ORGS):
                raise HubError(403, None, f"You don't have the rights to create a {repo_type} under the namespace {org!r}")
            if (repo_type, repo_id) in hub.repos:
                return self._json(409, {"error": "You already created this repo", "url": url})
            hub.create_repo(repo_type, repo_id, payload.get("visibility", "public") == "private" or bool(payload.get("private")))
            return self._json(200, {"url": url, "name": repo_id, "id": repo_id})

        def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict[str, Any], authed: bool) -> None:
            self._writable(repo_type, repo_id, authed)
            objects = []
            for obj in payload["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in hub.lfs_store:
                    entry["actions"] = {"upload": {"href": f"{hub.endpoint}/lfs-upload/{obj['oid']}"}}
                objects.append(entry)
            return self._json(200, {"transfer": "basic", "objects": objects})

        def _resolve(self, repo_type: str, repo_id: str, rev: str, file_path: str, authed: bool) -> None:
            repo = self._readable(repo_type, repo_id, authed)
            commit = repo.commit_at(rev)
            if commit is None:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            stored = commit.files.get(file_path)
            if stored is None:
                raise HubError(404, "EntryNotFound", f"{file_path} does not exist on {rev}")
            data, status = stored.data, 200
            headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{stored.etag}"', "Accept-Ranges": "bytes"}
            if stored.lfs:
                headers |= {"X-Linked-Etag": f'"{stored.etag}"', "X-Linked-Size": str(len(data))}
            range_header = self.headers.get("Range")
            if range_header and (m := re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())):
                size = len(data)
                if m.group(1) == "":
                    start, end = max(0, size - int(m.group(2))), size - 1
                else:
                    start, end = int(m.group(1)), min(int(m.group(2) or size - 1), size - 1)
                if start >= size and size > 0:
                    headers["Content-Range"] = f"bytes */{size}"
                    return self._send(416, b"", headers)
                data, status = data[start : end + 1], 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return self._send(status, data, headers, content_type="application/octet-stream")

        def _api(self, repo_type: str, repo_id: str, rest: str, method: str, query: dict[str, list[str]], body: bytes, authed: bool) -> None:  # noqa: C901 - one flat branch per Hub API endpoint, read as a routing table
            action, _, tail = rest.partition("/")
            if action in ("", "revision") and method == "GET":
                repo = self._readable(repo_type, repo_id, authed)
                rev = unquote(tail) if action == "revision" else "main"
                commit = repo.commit_at(rev)
                if commit is None:
                    raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return self._json(200, {
                    "id": repo_id, "author": repo_id.split("/")[0], "sha": commit.oid, "private": repo.private,
                    "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                    "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
                    "siblings": [{"rfilename": p} for p in sorted(commit.files)],
                })
            if action == "refs" and method == "GET":
                repo = self._readable(repo_type, repo_id, authed)
                branches = [{"name": r, "ref": f"refs/heads/{r}", "targetCommit": oid} for r, oid in repo.refs.items() if not r.startswith("refs/")]
                return self._json(200, {"branches": branches, "converts": [], "tags": []})
            if action == "branch" and method == "POST":
                repo = self._writable(repo_type, repo_id, authed)
                branch = unquote(tail)
                if branch in repo.refs:
                    raise HubError(409, None, f"Reference {branch} already exists")
                start = repo.commit_at((json.loads(body or b"{}")).get("startingPoint") or "main")
                if start is None:
                    raise HubError(404, "RevisionNotFound", "Invalid starting point")
                repo.refs[branch] = start.oid
                return self._json(200, {})
            if action == "preupload" and method == "POST":
                repo = self._writable(repo_type, repo_id, authed)
                commit = repo.commit_at(unquote(tail))
                files = []
                for item in json.loads(body)["files"]:
                    lfs = item["path"].endswith(LFS_SUFFIXES) or item["size"] > 10 << 20
                    current = commit.files.get(item["path"]) if commit else None
                    files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                                  "oid": current.etag if current else None})
                return self._json(200, {"files": files, "commitOid": commit.oid if commit else None})
            if action == "commit" and method == "POST":
                repo = self._writable(repo_type, repo_id, authed)
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                commit, pr_url = hub.apply_commit(repo, unquote(tail), lines, query.get("create_pr") == ["1"])
                return self._json(200, {
                    "success": True, "commitOid": commit.oid, "pullRequestUrl": pr_url,
                    "commitUrl": f"{hub.endpoint}/{_prefix(repo_type)}{repo_id}/commit/{commit.oid}",
                })
            if action == "tree" and method == "GET":
                repo = self._readable(repo_type, repo_id, authed)
                rev, _, sub = tail.partition("/")
                return self._json(200, self._tree(repo, unquote(rev), unquote(sub), query.get("recursive", ["False"])[0].lower() == "true"))
            if action == "paths-info" and method == "POST":
                repo = self._readable(repo_type, repo_id, authed)
                commit = repo.commit_at(unquote(tail))
                if commit is None:
                    raise HubError(404, "RevisionNotFound", f"Invalid rev id: {tail}")
                form = parse_qs(body.decode())
                out = []
                for p in form.get("paths", []):
                    p = p.strip("/")
                    if p in commit.files:
                        out.append(commit.files[p].tree_entry(p))
                    elif any(f.startswith(p + "/") for f in commit.files):
                        out.append({"type": "directory", "path": p, "oid": hashlib.sha1(p.encode()).hexdigest()})
                return self._json(200, out)
            raise HubError(404, None, f"no route for {method} /api/{repo_type}s/{repo_id}/{rest}")

        def _tree(self, repo: Repo, rev: str, sub: str, recursive: bool) -> list[dict[str, Any]]:
            commit = repo.commit_at(rev)
            if commit is None:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            prefix = sub.strip("/") + "/" if sub.strip("/") else ""
            if prefix and not any(p.startswith(prefix) for p in commit.files):
                raise HubError(404, "EntryNotFound", f"{sub} does not exist on {rev}")
            entries: dict[str, dict[str, Any]] = {}
            for p, stored in sorted(commit.files.items()):
                if not p.startswith(prefix):
                    continue
                parts = p[len(prefix):].split("/")
                for depth in range(1, len(parts)):
                    if recursive or depth == 1:
                        d = prefix + "/".join(parts[:depth])
                        entries.setdefault(d, {"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest()})
                if recursive or len(parts) == 1:
                    entries[p] = stored.tree_entry(p)
            return list(entries.values())

    return Handler
