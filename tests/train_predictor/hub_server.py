"""A minimal Hugging Face Hub-compatible HTTP server for the tests of `train_predictor.hub`
(standard library only, on 127.0.0.1, a free port, in a thread).

It implements the endpoints that huggingface_hub 2.4 calls to create a model repository and a
branch, upload a folder, resolve a revision, list a tree and download a file, with the headers
huggingface_hub reads (X-Repo-Commit, ETag, X-Linked-Etag, X-Linked-Size, Content-Length,
X-Error-Code). Uploads take the paths the Hub gives them: preupload answers "lfs" for a binary file
(a `*.safetensors` path, as the Hub's .gitattributes says, or a sample with a NUL byte) and
"regular" otherwise. A regular file arrives base64 in the ndjson commit. An LFS file goes the way
huggingface_hub sends it when the server offers no Xet (and hf_xet is not installed): the LFS batch
API (`POST {repo}.git/info/lfs/objects/batch`, transfer "basic") answers an upload and a verify
action, the client PUTs the bytes and POSTs the verify, and the commit names the file by its sha256
(`lfsFile`); downloads of it carry the sha256 as X-Linked-Etag, as the Hub's do. `hub.lfs` holds
the uploaded objects by sha256. huggingface_hub 2.4 takes that path only with HF_HUB_DISABLE_XET=1:
with hf_xet installed (its dependency) it sends LFS files over Xet whatever the server offers, and
Xet's CAS protocol is not served here (a Xet upload fails on /xet-write-token with a 404).
Repositories keep every commit under a 40-hex id, and their branches, so a commit
id and a branch both resolve, and an unknown repository or revision answers 404 with the
X-Error-Code that huggingface_hub turns into RepositoryNotFoundError / RevisionNotFoundError.
Authentication is not checked.

Endpoints (repo = org/name):
    POST      /api/repos/create                    {"name", "organization"} -> {"url"}; 409 if taken
    POST      /api/validate-yaml                   -> {"errors": [], "warnings": []}
    GET       /api/models/{repo}[/revision/{rev}]  -> {"id", "sha", "siblings", "private"}
    GET       /api/models/{repo}/tree/{rev}        -> [{"type": "file", "path", "size", "oid"}]
    POST      /api/models/{repo}/branch/{branch}   {"startingPoint"?}; 409 if it exists
    POST      /api/models/{repo}/preupload/{rev}   {"files"} -> {"files": [{"uploadMode": "regular"|"lfs"}]}
    POST      /{repo}.git/info/lfs/objects/batch   {"operation": "upload", "objects"} -> upload/verify actions
    PUT       /lfs/{oid}                           the object's bytes (basic transfer)
    POST      /lfs/{oid}/verify                    {"oid", "size"}
    POST      /api/models/{repo}/commit/{rev}      ndjson header/file/lfsFile/deletedFile -> {"commitOid"}
    HEAD/GET  /{repo}/resolve/{rev}/{path}         the file, X-Repo-Commit, ETag, Content-Length
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["HubServer", "HTTPErrorReply", "git_blob_id", "is_lfs"]

_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"  # what the Hub puts in a new repo


def is_lfs(path: str, sample: bytes) -> bool:
    """Whether the Hub stores a file in LFS: a `*.safetensors` path (its .gitattributes) or binary
    content (a NUL byte in the first 512 bytes, the sample preupload sends)."""
    return path.endswith(".safetensors") or b"\0" in sample[:512]


def git_blob_id(content: bytes) -> str:
    """The git object id of a file, which the Hub uses as the ETag and oid of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HTTPErrorReply(Exception):
    """An error answer: HTTP status, X-Error-Code (None for plain errors), message, extra headers."""

    def __init__(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit id
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit id -> path -> content


class HubServer:
    """`with HubServer() as hub:` serves on `hub.url`; `hub.requests` logs "METHOD path" per
    request. Tests may also seed repositories directly with `create_repo` and `commit`."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> LFS object uploaded through the batch API
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
        """A new repository whose main branch has one commit holding .gitattributes, as on the
        Hub; returns that commit's id."""
        with self._lock:
            if repo_id in self.repos:
                raise HTTPErrorReply(409, None, f"You already created this model repo: {repo_id}")
            self.repos[repo_id] = Repo(private)
        return self.commit(repo_id, "main", {".gitattributes": _GITATTRIBUTES})

    def commit(
        self,
        repo_id: str,
        branch: str,
        files: dict[str, bytes],
        deleted: tuple[str, ...] = (),
        message: str = "",
        parent: str | None = None,
    ) -> str:
        """Add a commit on top of `branch` (created by a repository's first commit); returns its id."""
        with self._lock:
            repo = self._repo(repo_id)
            head = repo.branches.get(branch)
            if head is None and repo.branches:
                raise HTTPErrorReply(404, "RevisionNotFound", f"Invalid rev id: {branch}")
            if parent is not None and parent != head:
                raise HTTPErrorReply(412, None, f"parent commit {parent} is not the head of {branch}")
            tree = {**(repo.commits[head] if head else {}), **files}
            for path in deleted:
                tree.pop(path, None)
            listing = "".join(f"{path} {git_blob_id(content)}\n" for path, content in sorted(tree.items()))
            oid = hashlib.sha1(f"{repo_id}\n{head}\n{message}\n{len(repo.commits)}\n{listing}".encode())
            repo.commits[oid.hexdigest()] = tree
            repo.branches[branch] = oid.hexdigest()
            return oid.hexdigest()

    def create_branch(self, repo_id: str, branch: str, start: str = "main") -> None:
        """A new branch at the commit that `start` (branch or commit id) resolves to."""
        oid, _ = self.resolve(repo_id, start)
        with self._lock:
            branches = self.repos[repo_id].branches
            if branch in branches:
                raise HTTPErrorReply(409, None, f"Reference already exists: {branch}")
            branches[branch] = oid

    def resolve(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]]:
        """(commit id, files) of a branch name or a commit id."""
        with self._lock:
            repo = self._repo(repo_id)
            oid = repo.branches.get(revision, revision)
            if oid not in repo.commits:
                raise HTTPErrorReply(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return oid, repo.commits[oid]

    def _repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HTTPErrorReply(404, "RepoNotFound", "Repository not found")
        return self.repos[repo_id]


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    routes: list[tuple[tuple[str, ...], re.Pattern, str]]  # (methods, path pattern, handler method name)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = []
        while True:  # chunked: hex size line, data, CRLF; a 0 size ends it
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        self.hub.requests.append(f"{self.command} {path}")
        body = self._body()
        try:
            for methods, pattern, handler in self.routes:
                match = pattern.fullmatch(path)
                if match and self.command in methods:
                    args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    getattr(self, handler)(body, **args)
                    return
            raise HTTPErrorReply(404, None, f"no route for {self.command} {path}")
        except HTTPErrorReply as err:
            headers = {"X-Error-Message": str(err), **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(err.status, json.dumps({"error": str(err)}).encode(), "application/json", headers)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
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
            raise HTTPErrorReply(400, None, f"this test Hub holds model repos named org/name; got {payload}")
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.hub.url}/{repo_id}"
        try:
            self.hub.create_repo(repo_id, private=payload.get("visibility") == "private")
        except HTTPErrorReply as err:  # huggingface_hub reads the existing repo's url from the 409
            self._json({"error": str(err), "url": url}, status=err.status)
            return
        self._json({"url": url, "name": repo_id})

    def validate_yaml(self, body: bytes) -> None:
        self._json({"errors": [], "warnings": []})

    def repo_info(self, body: bytes, repo: str, rev: str = "main") -> None:
        oid, files = self.hub.resolve(repo, rev)
        siblings = [{"rfilename": path} for path in sorted(files)]
        self._json({"id": repo, "sha": oid, "siblings": siblings, "private": self.hub.repos[repo].private})

    def tree(self, body: bytes, repo: str, rev: str) -> None:
        _, files = self.hub.resolve(repo, rev)
        self._json([
            {"type": "file", "path": path, "size": len(content), "oid": git_blob_id(content),
             **({"lfs": _lfs_info(content)} if is_lfs(path, content) else {})}  # fmt: skip
            for path, content in sorted(files.items())
        ])

    def create_branch(self, body: bytes, repo: str, rev: str) -> None:
        self.hub.create_branch(repo, rev, json.loads(body or b"{}").get("startingPoint", "main"))
        self._json({})

    def preupload(self, body: bytes, repo: str, rev: str) -> None:
        _, files = self.hub.resolve(repo, rev)
        # The oid of an existing file lets huggingface_hub skip files that did not change.
        answers = [
            {"path": f["path"], "shouldIgnore": False,
             "uploadMode": "lfs" if is_lfs(f["path"], base64.b64decode(f.get("sample", ""))) else "regular",
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
            elif key == "lfsFile":
                if value.get("algo") != "sha256" or value.get("oid") not in self.hub.lfs:
                    raise HTTPErrorReply(400, None, f"LFS object {value.get('oid')} was not uploaded")
                files[value["path"]] = self.hub.lfs[value["oid"]]
            elif key == "deletedFile":
                deleted.append(value["path"])
            else:
                raise HTTPErrorReply(400, None, f"this test Hub takes base64 files and deletions, not {key}")
        summary, parent = header.get("summary", ""), header.get("parentCommit")
        oid = self.hub.commit(repo, rev, files, tuple(deleted), summary, parent)
        self._json({"commitUrl": f"{self.hub.url}/{repo}/commit/{oid}", "commitOid": oid})

    def lfs_batch(self, body: bytes, repo: str) -> None:
        self.hub.resolve(repo, "main")  # 404 for an unknown repository
        request = json.loads(body)
        if request.get("operation") != "upload" or "basic" not in request.get("transfers", ["basic"]):
            raise HTTPErrorReply(400, None, f"this test Hub takes basic LFS uploads; got {request}")
        objects = []
        for obj in request["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs:  # no actions: already stored, the client skips it
                href = f"{self.hub.url}/lfs/{obj['oid']}"
                answer["actions"] = {"upload": {"href": href}, "verify": {"href": f"{href}/verify"}}
            objects.append(answer)
        self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def lfs_put(self, body: bytes, oid: str) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HTTPErrorReply(400, None, f"LFS object's sha256 is not {oid}")
        self.hub.lfs[oid] = body
        self._send(200, b"", "text/plain")

    def lfs_verify(self, body: bytes, oid: str) -> None:
        stated = json.loads(body)
        if oid not in self.hub.lfs or len(self.hub.lfs[oid]) != stated.get("size"):
            raise HTTPErrorReply(404, None, f"LFS object {oid} not stored with size {stated.get('size')}")
        self._json({})

    def resolve_file(self, body: bytes, repo: str, rev: str, path: str) -> None:
        oid, files = self.hub.resolve(repo, rev)
        if path not in files:
            raise HTTPErrorReply(404, "EntryNotFound", f"{path} is not in {rev}", {"X-Repo-Commit": oid})
        content = files[path]
        headers = {"X-Repo-Commit": oid, "ETag": f'"{git_blob_id(content)}"'}
        if is_lfs(path, content):  # the Hub's headers for an LFS file: its sha256 and size
            sha = hashlib.sha256(content).hexdigest()
            linked = {"X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(content))}
            headers.update({"ETag": f'"{sha}"', **linked})
        self._send(200, content, "application/octet-stream", headers)


def _lfs_info(content: bytes) -> dict[str, Any]:
    """The tree's `lfs` entry of an LFS file: sha256, size and the size of its git-lfs pointer."""
    sha = hashlib.sha256(content).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(content)}\n"
    return {"oid": sha, "size": len(content), "pointerSize": len(pointer)}


def _handler_class(hub: HubServer) -> type[_Handler]:
    """A handler class bound to `hub` (http.server builds one handler per request)."""
    repo, rev = r"(?P<repo>[^/]+/[^/]+)", r"(?P<rev>[^/]+)"
    api = f"/api/models/{repo}"
    routes = [
        (("POST",), r"/api/repos/create", "create_repo"),
        (("POST",), r"/api/validate-yaml", "validate_yaml"),
        (("GET",), rf"{api}(/revision/{rev})?", "repo_info"),
        (("GET",), rf"{api}/tree/{rev}", "tree"),
        (("POST",), rf"{api}/branch/{rev}", "create_branch"),
        (("POST",), rf"{api}/preupload/{rev}", "preupload"),
        (("POST",), rf"{api}/commit/{rev}", "commit"),
        (("POST",), rf"/{repo}\.git/info/lfs/objects/batch", "lfs_batch"),
        (("PUT",), r"/lfs/(?P<oid>[0-9a-f]{64})", "lfs_put"),
        (("POST",), r"/lfs/(?P<oid>[0-9a-f]{64})/verify", "lfs_verify"),
        (("GET", "HEAD"), rf"/{repo}/resolve/{rev}/(?P<path>.+)", "resolve_file"),
    ]
    compiled = [(methods, re.compile(pattern), handler) for methods, pattern, handler in routes]
    return type("HubHandler", (_Handler,), {"hub": hub, "routes": compiled})
