"""A Hugging Face Hub look-alike for tests: the real ``huggingface_hub`` client pushes to and pulls from it.

Only the endpoints that huggingface_hub 2.4 calls for create_repo, create_branch, repo_info / model_info /
dataset_info, list_repo_tree, get_paths_info, list_repo_commits, list_repo_refs, whoami, create_commit / upload_file /
upload_folder (preupload + commit), hf_hub_download and snapshot_download are implemented, with the paths, query
parameters, headers and JSON shapes the client expects.

Every file is "regular": preupload answers ``uploadMode: "regular"`` so the client sends contents base64-encoded in the
ndjson commit; LFS and Xet are never offered (``lfsFile`` operations get a 400). Run the client with
``HF_HUB_DISABLE_XET=1``: with hf_xet installed, ``upload_folder`` otherwise takes its Xet pipeline, which works here
too (all files are regular) but splits large folders into several commits and retries a dropped commit by itself.

Layout on disk, per repo, under ``root/<type>s/<namespace>/<name>/``::

    repo.json            {"private": bool, "createdAt": date}
    refs.json            {branch: commit sha}, pull requests as "refs/pr/N"
    commits/<sha>.json   {"id", "parents", "title", "message", "date", "authors", "files": {path: {oid, size, sha256}}}
    blobs/<oid>          contents, named by the git blob oid (the sha1 the client computes for regular files)
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
GITATTRIBUTES = b"".join(
    b"*.%s filter=lfs diff=lfs merge=lfs -text\n" % ext for ext in (b"bin", b"h5", b"pt", b"safetensors", b"zip")
)
Response = tuple[int, dict[str, str], bytes]


class HubReply(Exception):
    """An error answered like the Hub: JSON ``{"error": message}``, X-Error-Message and X-Error-Code headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.extra = status, message, code, headers or {}, extra

    def response(self) -> Response:
        """The HTTP response for this error."""
        headers = {"X-Error-Message": self.message, **({"X-Error-Code": self.code} if self.code else {})}
        return _json({"error": self.message, **self.extra}, self.status, {**headers, **self.headers})


class _Drop(Exception):
    """Close the connection without answering."""


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    authed: bool = False

    def flag(self, name: str) -> bool:
        """A boolean query parameter ("true", "1")."""
        return self.query.get(name, ["false"])[0].lower() in ("1", "true")

    def json(self) -> Any:
        """The body as JSON ({} when empty)."""
        return json.loads(self.body) if self.body else {}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(data).encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_oid(data: bytes) -> str:
    """The git blob oid of ``data``, as the client computes it for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _dirs(files: dict[str, dict]) -> set[str]:
    return {p.rsplit("/", i)[0] for p in files for i in range(1, p.count("/") + 1)}


def _entry_oid(files: dict[str, dict], path: str) -> str | None:
    """The oid of a file, a made-up but content-derived oid for a folder, None if neither."""
    if path in files:
        return files[path]["oid"]
    inside = sorted(f"{p} {e['oid']}" for p, e in files.items() if p.startswith(path + "/"))
    return hashlib.sha1("\n".join(inside).encode()).hexdigest() if inside else None


class Repo:
    """One repo on disk."""

    def __init__(self, path: Path):
        self.path = path

    def read_json(self, name: str) -> Any:
        """A JSON file of the repo."""
        return json.loads((self.path / name).read_text())

    def write_json(self, name: str, data: Any) -> None:
        """Write a JSON file of the repo."""
        (self.path / name).parent.mkdir(parents=True, exist_ok=True)
        (self.path / name).write_text(json.dumps(data, indent=1))

    def exists(self) -> bool:
        """Whether the repo was created."""
        return (self.path / "repo.json").is_file()

    def meta(self) -> dict:
        """private flag and creation date."""
        return self.read_json("repo.json")

    def refs(self) -> dict[str, str]:
        """Branch (and refs/pr/N) -> commit sha."""
        return self.read_json("refs.json")

    def set_ref(self, name: str, sha: str) -> None:
        """Point a branch at a commit."""
        self.write_json("refs.json", {**self.refs(), name: sha})

    def commit(self, sha: str) -> dict | None:
        """A commit by full sha, None if unknown."""
        known = re.fullmatch(r"[0-9a-f]{40}", sha) and (self.path / "commits" / f"{sha}.json").is_file()
        return self.read_json(f"commits/{sha}.json") if known else None

    def resolve(self, rev: str) -> dict:
        """The commit a branch name or a full commit sha designates; RevisionNotFound otherwise."""
        sha = self.refs().get(rev.removeprefix("refs/heads/"), rev)
        commit = self.commit(sha)
        if commit is None:
            raise HubReply(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def history(self, sha: str) -> list[dict]:
        """The first-parent chain from a commit, newest first."""
        chain = [self.read_json(f"commits/{sha}.json")]
        while chain[-1]["parents"]:
            chain.append(self.read_json(f"commits/{chain[-1]['parents'][0]}.json"))
        return chain

    def last_commit(self, head: dict, path: str) -> dict:
        """The oldest commit of the unbroken run, back from ``head``, where ``path`` is as it is at ``head``."""
        oid, last = _entry_oid(head["files"], path), head
        for commit in self.history(head["id"])[1:]:
            if _entry_oid(commit["files"], path) != oid:
                break
            last = commit
        return last

    def put_blob(self, data: bytes) -> dict:
        """Store contents; the tree entry for them."""
        oid = git_oid(data)
        blob = self.path / "blobs" / oid
        if not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
        return {"oid": oid, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def blob(self, oid: str) -> Path:
        """The file holding a blob."""
        return self.path / "blobs" / oid

    def write_commit(self, parent: str | None, files: dict, title: str, message: str, author: str) -> str:
        """Record a commit; its sha."""
        body = {"parents": [parent] if parent else [], "title": title, "message": message, "date": _now()}
        body |= {"authors": [author], "files": files}
        sha = hashlib.sha1(uuid.uuid4().bytes + json.dumps(body, sort_keys=True).encode()).hexdigest()
        self.write_json(f"commits/{sha}.json", {"id": sha, **body})
        return sha


class FakeHub:
    """A Hub-compatible server on 127.0.0.1, in a daemon thread; also a context manager."""

    user = "test-user"  # the namespace of repos created without one, and whoami's name

    def __init__(self, root: Path, token: str = "hf_test_token"):
        self.root, self.token = Path(root), token
        self.endpoint = ""
        self.requests: list[tuple[str, str]] = []  # (method, raw path without the query), in order
        self.uploaded: list[str] = []  # repo paths of the files of every applied commit, in order
        self._lock = threading.RLock()
        self._drop = [0, 0]  # [commits to accept first, commits to drop]
        self._failures: list[list] = []  # [method, regex, status, times left]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        api = r"/api/(?P<kind>models|datasets|spaces)/(?P<repo_id>[^/]+/[^/]+)"
        resolve = r"/(?:(?P<kind>datasets|spaces)/)?(?P<repo_id>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)"
        self._routes: list[tuple[str, re.Pattern, Callable[..., Response]]] = [
            (m, re.compile(p), h)
            for m, p, h in [
                ("POST", r"/api/repos/create", self._create_repo),
                ("GET", r"/api/whoami-v2", self._whoami),
                ("POST", r"/api/validate-yaml", lambda req: _json({"errors": [], "warnings": []})),
                ("GET", api + r"(?:/revision/(?P<rev>[^/]+))?", self._repo_info),
                ("GET", api + r"/refs", self._refs),
                ("POST", api + r"/branch/(?P<rev>[^/]+)", self._create_branch),
                ("GET", api + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", self._tree),
                ("POST", api + r"/paths-info/(?P<rev>[^/]+)", self._paths_info),
                ("GET", api + r"/commits/(?P<rev>[^/]+)", self._commits),
                ("POST", api + r"/preupload/(?P<rev>[^/]+)", self._preupload),
                ("POST", api + r"/commit/(?P<rev>[^/]+)", self._commit),
                ("GET", resolve, self._resolve),
                ("HEAD", resolve, self._resolve),
            ]
        ]

    # ---- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        """Listen on a free port of 127.0.0.1; sets ``endpoint``."""
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- test controls ---------------------------------------------------------------------------------------------

    def drop_next_commits(self, count: int = 1, after_files: int = 0) -> None:
        """Accept ``after_files`` commit requests, then read the next ``count`` and close without answering."""
        with self._lock:
            self._drop = [after_files, count]

    def fail(self, method: str, path_regex: str, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests whose raw path matches (re.search) with ``status`` (no X-Error-Code)."""
        with self._lock:
            self._failures.append([method.upper(), re.compile(path_regex), status, times])

    def blob_path(self, repo_type: str, repo_id: str, path: str, revision: str = "main") -> Path:
        """The file holding that file's contents; corrupt it and GET serves it while metadata stays as recorded."""
        repo = self._repo(repo_type, repo_id)
        return repo.blob(repo.resolve(revision)["files"][path]["oid"])

    def commits(self, repo_type: str, repo_id: str, revision: str = "main") -> list[str]:
        """Commit shas of a branch, newest first."""
        repo = self._repo(repo_type, repo_id)
        return [c["id"] for c in repo.history(repo.resolve(revision)["id"])]

    # ---- plumbing --------------------------------------------------------------------------------------------------

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        return Repo(self.root / f"{repo_type}s" / repo_id)

    def _web_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.endpoint}/{URL_PREFIX[repo_type]}{repo_id}"

    def handle(self, req: _Request) -> Response:
        """Answer one request (the body already read)."""
        with self._lock:
            self.requests.append((req.method, req.path))
            for failure in self._failures:
                if failure[0] == req.method and failure[1].search(req.path):
                    failure[3] -= 1
                    self._failures = [f for f in self._failures if f[3] > 0]
                    return HubReply(failure[2], f"Injected failure: HTTP {failure[2]}").response()
            try:
                header = req.headers.get("Authorization")
                if header is not None and header != f"Bearer {self.token}":
                    raise HubReply(401, "Invalid credentials in Authorization header")
                req.authed = header is not None
                for method, pattern, handler in self._routes:
                    match = pattern.fullmatch(req.path)
                    if method == req.method and match:
                        groups = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                        return handler(req, **groups)
                raise HubReply(404, f"Not found: {req.method} {req.path}")
            except HubReply as e:
                return e.response()

    def _open(self, req: _Request, kind: str | None, repo_id: str, write: bool = False) -> tuple[str, Repo]:
        """(repo type, repo), or RepoNotFound: 401 without a token, 404 with one (the Hub hides private repos)."""
        repo_type = PLURAL.get(kind or "models", kind)
        repo = self._repo(repo_type, repo_id)
        visible = repo.exists() and (req.authed or not repo.meta()["private"])
        if not visible or (write and not req.authed):
            raise HubReply(401 if not req.authed else 404, "Repository not found", "RepoNotFound")
        return repo_type, repo

    def _file_entry(self, repo: Repo, commit: dict, path: str, expand: bool) -> dict:
        """A tree / paths-info entry, with ``lastCommit`` when expanded."""
        files = commit["files"]
        kind = "file" if path in files else "directory"
        entry = {"type": kind, "oid": _entry_oid(files, path), "size": files[path]["size"] if kind == "file" else 0}
        entry["path"] = path
        if expand:
            last = repo.last_commit(commit, path)
            entry["lastCommit"] = {"id": last["id"], "title": last["title"], "date": last["date"]}
        return entry

    # ---- endpoints -------------------------------------------------------------------------------------------------

    def _whoami(self, req: _Request) -> Response:
        """GET /api/whoami-v2 (whoami)."""
        if not req.authed:
            raise HubReply(401, "Invalid credentials in Authorization header")
        auth = {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}
        return _json({"type": "user", "name": self.user, "fullname": self.user, "orgs": [], "auth": auth})

    def _create_repo(self, req: _Request) -> Response:
        """POST /api/repos/create (create_repo): an initial commit with .gitattributes; 409 with the url if taken."""
        if not req.authed:
            raise HubReply(401, "You must be authenticated to create a repository")
        data = req.json()
        repo_type = data.get("type") or "model"
        repo_id = f"{data.get('organization') or self.user}/{data['name']}"
        repo, url = self._repo(repo_type, repo_id), self._web_url(repo_type, repo_id)
        if repo.exists():
            raise HubReply(409, f"You already created this {repo_type} repo", url=url)
        repo.path.mkdir(parents=True)
        private = data.get("visibility") == "private" or bool(data.get("private"))
        repo.write_json("repo.json", {"private": private, "createdAt": _now()})
        files = {".gitattributes": repo.put_blob(GITATTRIBUTES)}
        repo.write_json("refs.json", {})
        repo.set_ref("main", repo.write_commit(None, files, "initial commit", "", "system"))
        return _json({"url": url, "name": repo_id, "id": repo_id})

    def _repo_info(self, req: _Request, kind: str, repo_id: str, rev: str = "main") -> Response:
        """GET /api/{type}s/{id}[/revision/{rev}] (repo_info): siblings with size and blobId when ?blobs=true."""
        _, repo = self._open(req, kind, repo_id)
        commit, meta, blobs = repo.resolve(rev), repo.meta(), req.flag("blobs")
        siblings = [
            {"rfilename": p, **({"size": e["size"], "blobId": e["oid"]} if blobs else {})}
            for p, e in sorted(commit["files"].items())
        ]
        info = {"id": repo_id, "author": repo_id.split("/")[0], "sha": commit["id"], "lastModified": commit["date"]}
        info |= {"createdAt": meta["createdAt"], "private": meta["private"], "gated": False, "disabled": False}
        return _json({**info, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings})

    def _refs(self, req: _Request, kind: str, repo_id: str) -> Response:
        """GET /api/{type}s/{id}/refs (list_repo_refs)."""
        _, repo = self._open(req, kind, repo_id)
        refs = repo.refs().items()
        branches = [
            {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in refs if not n.startswith("refs/")
        ]
        prs = [{"name": n, "ref": n, "targetCommit": s} for n, s in refs if n.startswith("refs/pr/")]
        extra = {"pullRequests": prs} if req.flag("include_prs") else {}
        return _json({"branches": branches, "converts": [], "tags": [], **extra})

    def _create_branch(self, req: _Request, kind: str, repo_id: str, rev: str) -> Response:
        """POST /api/{type}s/{id}/branch/{name} (create_branch), from ``startingPoint`` or main; 409 if it exists."""
        _, repo = self._open(req, kind, repo_id, write=True)
        if rev.startswith("refs/"):
            raise HubReply(400, f"Invalid reference for a branch: {rev}")
        if rev in repo.refs():
            raise HubReply(409, f"Reference already exists: refs/heads/{rev}")
        repo.set_ref(rev, repo.resolve(req.json().get("startingPoint") or "main")["id"])
        return _json({})

    def _tree(self, req: _Request, kind: str, repo_id: str, rev: str, path: str = "") -> Response:
        """GET /api/{type}s/{id}/tree/{rev}[/{folder}] (list_repo_tree), everything in one page."""
        _, repo = self._open(req, kind, repo_id)
        commit = repo.resolve(rev)
        base = path.strip("/")
        paths = sorted(set(commit["files"]) | _dirs(commit["files"]))
        if base and base not in _dirs(commit["files"]):
            raise HubReply(404, f"Entry not found: {base}", "EntryNotFound", {"X-Repo-Commit": commit["id"]})
        prefix = f"{base}/" if base else ""
        paths = [p for p in paths if p.startswith(prefix) and (req.flag("recursive") or "/" not in p[len(prefix) :])]
        return _json([self._file_entry(repo, commit, p, req.flag("expand")) for p in paths])

    def _paths_info(self, req: _Request, kind: str, repo_id: str, rev: str) -> Response:
        """POST /api/{type}s/{id}/paths-info/{rev} (get_paths_info), form-encoded; unknown paths are left out."""
        _, repo = self._open(req, kind, repo_id)
        commit, form = repo.resolve(rev), parse_qs(req.body.decode())
        expand = form.get("expand", ["false"])[0].lower() in ("1", "true")
        paths = [p.strip("/") for p in form.get("paths", [])]
        known = [p for p in paths if _entry_oid(commit["files"], p) is not None]
        return _json([self._file_entry(repo, commit, p, expand) for p in known])

    def _commits(self, req: _Request, kind: str, repo_id: str, rev: str) -> Response:
        """GET /api/{type}s/{id}/commits/{rev} (list_repo_commits), newest first, one page."""
        _, repo = self._open(req, kind, repo_id)
        history = repo.history(repo.resolve(rev)["id"])
        keys = ("id", "title", "message", "date")
        return _json([{**{k: c[k] for k in keys}, "authors": [{"user": a} for a in c["authors"]]} for c in history])

    def _preupload(self, req: _Request, kind: str, repo_id: str, rev: str) -> Response:
        """POST /api/{type}s/{id}/preupload/{rev}: every file "regular", with the oid it has now (the client skips
        files whose git oid is unchanged)."""
        _, repo = self._open(req, kind, repo_id, write=True)
        commit = repo.resolve(rev)
        oids = {p: e["oid"] for p, e in commit["files"].items()}
        mode = {"uploadMode": "regular", "shouldIgnore": False}
        files = [{"path": f["path"], **mode, "oid": oids.get(f["path"])} for f in req.json()["files"]]
        return _json({"files": files, "commitOid": commit["id"]})

    def _commit(self, req: _Request, kind: str, repo_id: str, rev: str) -> Response:
        """POST /api/{type}s/{id}/commit/{branch}[?create_pr=1] (create_commit): the ndjson header + operations."""
        if self._drop[1] > 0:
            if self._drop[0] > 0:
                self._drop[0] -= 1
            else:
                self._drop[1] -= 1
                raise _Drop
        repo_type, repo = self._open(req, kind, repo_id, write=True)
        lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), None)
        if header is None:
            raise HubReply(400, "The commit payload has no header line")
        head = repo.refs().get(rev)
        if head is None:
            raise HubReply(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        create_pr, parent = req.flag("create_pr"), header.get("parentCommit")
        if parent and not create_pr and not head.startswith(parent):
            raise HubReply(412, "A commit has happened since. Please refresh and try again.")
        files, added = dict(repo.commit(head)["files"]), []
        for op in lines:
            added += self._apply(repo, files, op["key"], op["value"])
        target = rev
        if create_pr:
            target = f"refs/pr/{1 + sum(n.startswith('refs/pr/') for n in repo.refs())}"
        sha = repo.write_commit(head, files, header["summary"], header.get("description", ""), self.user)
        repo.set_ref(target, sha)
        self.uploaded += added
        url = self._web_url(repo_type, repo_id)
        pr_url = f"{url}/discussions/{target.rsplit('/', 1)[1]}" if create_pr else None
        return _json({"success": True, "commitUrl": f"{url}/commit/{sha}", "commitOid": sha, "pullRequestUrl": pr_url})

    def _apply(self, repo: Repo, files: dict, key: str, value: dict) -> list[str]:
        """Apply one commit operation to ``files``; the paths it added."""
        path = value.get("path", "")
        if key == "file":
            raw = value["content"]
            files[path] = repo.put_blob(base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode())
            return [path]
        if key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubReply(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            inside = [p for p in files if p.startswith(path.rstrip("/") + "/")]
            if not inside:
                raise HubReply(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in inside:
                del files[p]
        elif key == "lfsFile":
            raise HubReply(400, "This test server takes no LFS files: preupload answers uploadMode 'regular'")
        elif key != "header":
            raise HubReply(400, f"Unknown commit operation: {key}")
        return []

    def _resolve(self, req: _Request, repo_id: str, rev: str, path: str, kind: str | None = None) -> Response:
        """HEAD/GET /[{type}s/]{id}/resolve/{rev}/{path} (hf_hub_download): X-Repo-Commit, ETag = quoted git oid,
        Content-Length; HEAD reports the recorded size, GET sends the blob as it is on disk (Range honoured)."""
        _, repo = self._open(req, kind, repo_id)
        commit = repo.resolve(rev)
        headers = {"X-Repo-Commit": commit["id"]}
        entry = commit["files"].get(path)
        if entry is None:
            raise HubReply(404, "Entry not found", "EntryNotFound", headers)
        data = repo.blob(entry["oid"]).read_bytes()
        headers |= {"ETag": f'"{entry["oid"]}"', "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if req.method == "HEAD":
            return 200, {**headers, "Content-Length": str(entry["size"])}, b""
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", (req.headers.get("Range") or "").strip())
        if not match or match.groups() == ("", ""):
            return 200, headers, data
        start, end = match.groups()
        start, end = (len(data) - int(end), len(data) - 1) if not start else (int(start), int(end or len(data) - 1))
        if start >= len(data) or start > end:
            raise HubReply(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
        end = min(end, len(data) - 1)
        return 206, {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, data[start : end + 1]


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, lets the FakeHub answer it, writes the response (or drops the connection)."""

    protocol_version = "HTTP/1.1"
    timeout = 30
    hub: FakeHub

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():
            pass
        return b"".join(chunks)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        req = _Request(self.command, url.path, parse_qs(url.query), self.headers, self._body())
        try:
            status, headers, body = self.hub.handle(req)
        except _Drop:
            self.close_connection = True
            return
        except Exception:
            traceback.print_exc()
            status, headers, body = HubReply(500, "Internal error of the fake Hub (traceback on stderr)").response()
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log."""
