"""A minimal Hugging Face Hub-compatible HTTP server for the tests of `train_predictor.hub`
(standard library only, on 127.0.0.1, a free port, in a thread).

It implements the endpoints that huggingface_hub 2.4 calls to create a model repository and a
branch, upload a folder (preupload answers "regular" for every file, so contents arrive base64 in
the ndjson commit and neither LFS nor Xet is involved), resolve a revision, list a tree and
download a file, with the headers huggingface_hub reads (X-Repo-Commit, ETag, Content-Length,
X-Error-Code). Repositories keep every commit, under a 40-hex id, and their branches, so a
commit id and a branch both resolve, and an unknown repository or revision answers 404 with the
X-Error-Code that huggingface_hub maps to RepositoryNotFoundError / RevisionNotFoundError.
Authentication is not checked.

Endpoints (repo = org/name):
    POST      /api/repos/create                      {"name", "organization", "type"?} -> {"url"}; 409 if taken
    POST      /api/validate-yaml                     -> {"errors": [], "warnings": []}
    GET       /api/models/{repo}[/revision/{rev}]    -> {"id", "sha", "siblings", "private"}
    GET       /api/models/{repo}/tree/{rev}          -> [{"type": "file", "path", "size", "oid"}]
    POST      /api/models/{repo}/branch/{branch}     {"startingPoint"?}; 409 if it exists
    POST      /api/models/{repo}/preupload/{rev}     {"files": [...]} -> {"files": [{"uploadMode": "regular", ...}]}
    POST      /api/models/{repo}/commit/{rev}        ndjson (header, file, deletedFile) -> {"commitUrl", "commitOid"}
    HEAD/GET  /{repo}/resolve/{rev}/{path}           file bytes, X-Repo-Commit, ETag, Content-Length
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

__all__ = ["HubServer", "git_blob_id"]

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/]+)"


def git_blob_id(content: bytes) -> str:
    """The git object id of a file, which the Hub uses as the ETag and oid of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubError(Exception):
    """An HTTP error answer: status, X-Error-Code header (None for plain errors), message."""

    def __init__(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit id
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit id -> path -> content


class HubServer:
    """`with HubServer() as hub:` serves on `hub.url`; `hub.requests` logs "METHOD path" per request."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def create_repo(self, repo_id: str, private: bool = False) -> str:
        """Create a repository whose main branch has one commit holding .gitattributes, as the Hub
        does; return that commit's id."""
        with self._lock:
            if repo_id in self.repos:
                raise HubError(409, None, f"You already created this model repo: {repo_id}")
            self.repos[repo_id] = Repo(private)
        return self.commit(repo_id, "main", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})

    def commit(self, repo_id: str, branch: str, files: dict[str, bytes], deleted: tuple[str, ...] = (),
               message: str = "", parent: str | None = None) -> str:  # fmt: skip
        """Add a commit on top of `branch` (created at the first commit) and return its id."""
        with self._lock:
            repo = self._repo(repo_id)
            head = repo.branches.get(branch)
            if head is None and repo.branches:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {branch}")
            if parent is not None and parent != head:
                raise HubError(412, None, f"parent commit {parent} is not the head of {branch} ({head})")
            tree = {**(repo.commits[head] if head else {}), **files}
            for path in deleted:
                tree.pop(path, None)
            listing = "".join(f"{p} {git_blob_id(c)}\n" for p, c in sorted(tree.items()))
            oid = hashlib.sha1(f"{head}\n{message}\n{len(repo.commits)}\n{listing}".encode()).hexdigest()
            repo.commits[oid] = tree
            repo.branches[branch] = oid
            return oid

    def resolve(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]]:
        """(commit id, files) of a branch name or a commit id."""
        with self._lock:
            repo = self._repo(repo_id)
            oid = repo.branches.get(revision, revision)
            if oid not in repo.commits:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return oid, repo.commits[oid]

    def _repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, "RepoNotFound", "Repository not found")
        return self.repos[repo_id]


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    routes: list[tuple[str, re.Pattern, Callable[..., None]]]

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        self.hub.requests.append(f"{method} {path}")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            for route_method, pattern, handler in self.routes:
                match = pattern.fullmatch(path)
                if match and method in route_method.split("|"):
                    handler(self, body, **{k: unquote(v) for k, v in match.groupdict().items() if v is not None})
                    return
            raise HubError(404, None, f"no route for {method} {path}")
        except HubError as err:
            self._send(err.status, json.dumps({"error": str(err)}).encode(), "application/json",
                       {**({"X-Error-Code": err.code} if err.code else {}), "X-Error-Message": str(err), **err.headers})  # fmt: skip

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    # ---- endpoints

    def create_repo(self, body: bytes) -> None:
        payload = json.loads(body)
        if payload.get("type", "model") != "model" or not payload.get("organization"):
            raise HubError(400, None, f"this test Hub holds model repos named org/name; got {payload}")
        repo_id = f"{payload['organization']}/{payload['name']}"
        self.hub.create_repo(repo_id, private=payload.get("visibility") == "private")
        self._json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id})

    def validate_yaml(self, body: bytes) -> None:
        self._json({"errors": [], "warnings": []})

    def repo_info(self, body: bytes, repo: str, rev: str = "main") -> None:
        oid, files = self.hub.resolve(repo, rev)
        siblings = [{"rfilename": path} for path in sorted(files)]
        self._json({"id": repo, "sha": oid, "siblings": siblings, "private": self.hub.repos[repo].private})

    def tree(self, body: bytes, repo: str, rev: str) -> None:
        _, files = self.hub.resolve(repo, rev)
        self._json([{"type": "file", "path": p, "size": len(c), "oid": git_blob_id(c)} for p, c in sorted(files.items())])

    def create_branch(self, body: bytes, repo: str, rev: str) -> None:
        start = json.loads(body or b"{}").get("startingPoint", "main")
        oid, _ = self.hub.resolve(repo, start)
        with self.hub._lock:
            branches = self.hub.repos[repo].branches
            if rev in branches:
                raise HubError(409, None, f"Reference already exists: {rev}")
            branches[rev] = oid
        self._json({})

    def preupload(self, body: bytes, repo: str, rev: str) -> None:
        _, files = self.hub.resolve(repo, rev)
        answers = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_blob_id(files[f["path"]]) if f["path"] in files else None}  # fmt: skip
            for f in json.loads(body)["files"]
        ]
        self._json({"files": answers})

    def commit(self, body: bytes, repo: str, rev: str) -> None:
        header: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file" and value.get("encoding") == "base64":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deleted.append(value["path"])
            else:
                raise HubError(400, None, f"this test Hub takes base64 files and deletions only, got {key!r}")
        self.hub.resolve(repo, rev)  # 404 for an unknown repo or branch before anything changes
        oid = self.hub.commit(repo, rev, files, tuple(deleted), header.get("summary", ""), header.get("parentCommit"))
        self._json({"commitUrl": f"{self.hub.url}/{repo}/commit/{oid}", "commitOid": oid})

    def resolve_file(self, body: bytes, repo: str, rev: str, path: str) -> None:
        oid, files = self.hub.resolve(repo, rev)
        if path not in files:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": oid})
        content = files[path]
        headers = {"X-Repo-Commit": oid, "ETag": f'"{git_blob_id(content)}"'}
        self._send(200, content, "application/octet-stream", headers)


def _handler_class(hub: HubServer) -> type[_Handler]:
    api = f"/api/models/{_REPO}"
    routes = [
        ("POST", r"/api/repos/create", _Handler.create_repo),
        ("POST", r"/api/validate-yaml", _Handler.validate_yaml),
        ("GET", rf"{api}(/revision/{_REV})?", _Handler.repo_info),
        ("GET", rf"{api}/tree/{_REV}", _Handler.tree),
        ("POST", rf"{api}/branch/{_REV}", _Handler.create_branch),
        ("POST", rf"{api}/preupload/{_REV}", _Handler.preupload),
        ("POST", rf"{api}/commit/{_REV}", _Handler.commit),
        ("GET|HEAD", rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)", _Handler.resolve_file),
    ]
    compiled = [(method, re.compile(pattern), handler) for method, pattern, handler in routes]
    return type("HubHandler", (_Handler,), {"hub": hub, "routes": compiled})
