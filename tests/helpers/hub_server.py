"""A real, in-process HTTP fake of the Hugging Face Hub, for offline tests.

`HubServer` is a stdlib `ThreadingHTTPServer` bound to 127.0.0.1 on a free port. It speaks enough
of the Hub HTTP API (checked against huggingface_hub 2.4 and transformers 5.24) that the real
clients work against it unmodified once `HF_ENDPOINT` points at it:

* `create_repo` / `delete_repo`, `whoami`, `model_info` / `repo_info`, `list_repo_files` /
  `list_repo_tree`, `create_branch` / `delete_branch`, `list_repo_refs`;
* `upload_file`, `upload_folder`, `create_commit` (also `run_as_future=True` and `create_pr=True`),
  including LFS files: preupload, the git-LFS batch endpoint, a presigned-style PUT upload URL
  and the verify call are all served here;
* `hf_hub_download`, `snapshot_download`, `from_pretrained`, `pipeline(model=...)` through
  `/{repo}/resolve/{revision}/{path}` (HEAD, GET and byte ranges) with the Hub's headers;
* `transformers.Trainer(push_to_hub=True)` with every `hub_strategy`.

Anything else is answered 501 "fake hub does not implement ..." and shows up in `server.requests`.

Using it from pytest::

    from tests.helpers.hub_server import hub_server  # noqa: F401  (makes the fixture available)

    def test_push(hub_server):
        huggingface_hub.create_repo("user/demo", token=FAKE_TOKEN)
        ...
        assert len(hub_server.repos["user/demo"].commits) == 2
        assert hub_server.find_requests("POST", "/commit/")[0].headers["authorization"] == f"Bearer {FAKE_TOKEN}"

Outside pytest, or with another scope: `start_hub_server()` returns a started server (call
`.stop()`), `running_hub_server()` is the same as a context manager, and
`patched_hub_clients(server, hf_home)` / `point_clients_at(server, monkeypatch, hf_home)` apply
the client patches listed below.

What the fixture (`point_clients_at`) patches, all undone by monkeypatch at teardown:

* environment: `HF_ENDPOINT`=server url, `HF_HUB_OFFLINE=0`, `TRANSFORMERS_OFFLINE=0`,
  `HF_TOKEN`=`FAKE_TOKEN` (removed when `token=None`), `HF_HOME`/`HF_HUB_CACHE` = a tmp dir,
  `HF_HUB_DISABLE_XET=1`, `HF_HUB_DISABLE_TELEMETRY=1`; unsets `HUGGING_FACE_HUB_TOKEN`,
  `HF_OIDC_RESOURCE`, `HF_TOKEN_PATH` and the legacy cache variables.
* `huggingface_hub.constants` reads all of those once, at import, so setting the environment is
  not enough when huggingface_hub is already imported (it always is, under pytest). Patched
  attributes: `ENDPOINT`, `HUGGINGFACE_CO_URL_TEMPLATE`, `HF_HUB_OFFLINE` (what
  `is_offline_mode()` returns; transformers imports that function, so it follows), `HF_HOME`,
  `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `HF_ASSETS_CACHE`, `HUGGINGFACE_ASSETS_CACHE`,
  `HF_XET_CACHE`, `HF_TOKEN_PATH`, `HF_STORED_TOKENS_PATH`, `HF_HUB_DISABLE_XET`,
  `HF_HUB_DISABLE_TELEMETRY`, `HF_URL_HOSTS`.
* copies taken at import elsewhere: `huggingface_hub.utils._cache_manager.HF_HUB_CACHE`,
  `huggingface_hub.utils._http._HUB_ORIGINS` (hosts that keep the auth header on redirects),
  `huggingface_hub.hf_api.api.endpoint` (the module-level `HfApi()` behind the functional
  `huggingface_hub.create_repo`, `upload_file`, ...: its endpoint is frozen when it is built) and
  `transformers.utils.hub._hf_api` (the cached `HfApi` the Trainer and `pipeline` use), reset to
  None so it is rebuilt against the fake and the test's instance is dropped afterwards.
* Not patched: `HfApi` instances your own code built before the fixture ran (build them lazily or
  pass `endpoint=`), `transformers.utils.hub.HF_MODULES_CACHE` (remote-code modules) and
  `datasets.config.HF_ENDPOINT` (the fake hosts model repos only).

Why xet is disabled: `hf_xet` is installed in this venv, and with it huggingface_hub uploads LFS
files through the Xet CAS service (and `upload_folder` switches to a multi-commit pipeline),
which this fake does not implement. With `HF_HUB_DISABLE_XET` the classic LFS path is used.

State, all in memory (guarded by one lock; read it once the client call has returned):

* `server.repos`: repo id -> `FakeRepo` with `.files` (path -> bytes at the head of main),
  `.private`, `.commits` (list of `Commit(sha, message, paths, files, lfs_paths, date)`, oldest
  first; a new repo starts with the Hub's initial ".gitattributes" commit) and `.branches`.
* `server.requests`: every request as `RecordedRequest(method, path, query, headers, status)`;
  `path` is as sent (percent-encoded, no query string); `headers` holds the lower-cased
  `authorization`, `content-type`, `range` and `user-agent` when present.
* `server.lfs_objects`: sha256 -> bytes uploaded through the LFS PUT URL.
* `server.upload_mode`: what preupload answers. "auto" (default) acts like the Hub: LFS for
  paths matching the repo's `.gitattributes` LFS rules (`*.safetensors`, `*.bin`, `*.pt`, ...) or
  of 10 MB and more, inline base64 ("regular") otherwise. "regular" or "lfs" force one mode.
* `server.add_repo(repo_id, files=..., private=...)` and `server.commit_files(...)` seed content
  without going through HTTP; `server.find_requests(method, path_contains)` filters the log;
  `server.server_errors` holds tracebacks of bugs in the fake itself (answered 500).

Failure injection (rules are checked before auth, in the order they were added):

* `server.fail_next(n=1, status=503, path_contains=None, method=None, error_code=None)`: the next
  n matching requests get `status` (with `X-Error-Code: error_code` if given, e.g.
  "EntryNotFound", which the client turns into the matching exception).
* `server.fail_all(status=503, path_contains=None, method=None)`: every matching request fails
  until `server.reset_failures()`.
* `server.require_token("hf_xxx")`: requests without `Authorization: Bearer hf_xxx` get 401;
  `require_token(None)` turns it off. The LFS PUT upload URL is exempt, as presigned S3 URLs
  are on the Hub. Even without it, writes and `whoami` need some token and private repos need
  one to be read.
* Retries to keep in mind: huggingface_hub retries 408/429/500/502/503/504 with 1, 2, 4, 8, 8 s
  sleeps on preupload, the LFS batch/PUT/verify calls and tree listings, so a `fail_all(503)`
  there costs ~23 s and a `fail_next(1, 503)` is silently absorbed. The commit POST
  (path_contains="/commit/"), create_repo, model_info and resolve HEAD are not retried.
* 401 answers carry `X-Error-Code: RepoNotFound` on repo URLs when no token was sent (as the Hub
  does), so the client raises `RepositoryNotFoundError` (status 401); a wrong token gets
  "Invalid credentials in Authorization header" and a plain `HfHubHTTPError` (status 401).
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import importlib.util
import json
import re
import secrets
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

FAKE_TOKEN = "hf_fake_hub_server_token"
FAKE_USER = "user"

# The .gitattributes the Hub writes in the initial commit of a new repo (abridged to the LFS rules).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
        "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
        "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)
# The Hub refuses regular (non-LFS) files from this size on.
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

_LFS_UPLOAD_PREFIX = "/_fake_lfs/"  # our stand-in for the presigned S3 URLs the LFS batch API hands out
_LFS_BATCH_SUFFIX = ".git/info/lfs/objects/batch"
_RECORDED_HEADERS = ("authorization", "content-type", "range", "user-agent")
# Words that can follow a repo id in /api/models/... so that "gpt2/tree/main" is not read as repo "gpt2/tree".
_REPO_API_ACTIONS = {"revision", "tree", "preupload", "commit", "refs", "branch", "paths-info", "commits"}
_INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


# --------------------------------------------------------------------------------------------------
# Hashes and small helpers
# --------------------------------------------------------------------------------------------------


def git_blob_sha1(content: bytes) -> str:
    """Git object id of a blob: the oid/ETag the Hub reports for a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(content: bytes) -> bytes:
    """The git-LFS pointer file that git stores in place of an LFS file's content."""
    oid = hashlib.sha256(content).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n".encode()


def _new_commit_sha() -> str:
    return secrets.token_hex(20)


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _as_bytes(content: bytes | str) -> bytes:
    return content.encode() if isinstance(content, str) else content


def _lfs_patterns(gitattributes: bytes) -> list[str]:
    return [line.split()[0] for line in gitattributes.decode(errors="replace").splitlines() if "filter=lfs" in line]


def _matches_gitattributes_pattern(pattern: str, path: str) -> bool:
    # Like git: a pattern without "/" matches the file name at any depth; otherwise the whole path.
    if "/" in pattern:
        return fnmatch.fnmatchcase(path, pattern)
    return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)


def _is_true(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


# --------------------------------------------------------------------------------------------------
# In-memory repositories
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Commit:
    sha: str
    message: str
    paths: tuple[str, ...]  # paths this commit added, changed or deleted
    files: dict[str, bytes]  # the full tree after this commit; treat as read-only
    lfs_paths: frozenset[str]  # which of `files` are stored as LFS objects
    date: str = field(default_factory=_iso_now)


@dataclass
class FakeRepo:
    repo_id: str
    private: bool = False
    commits: list[Commit] = field(default_factory=list)  # every branch's commits, oldest first
    branches: dict[str, str] = field(default_factory=dict)  # branch name -> head commit sha
    created_at: str = field(default_factory=_iso_now)

    @property
    def files(self) -> dict[str, bytes]:
        """Path -> content at the head of main."""
        return self.head().files

    def head(self, branch: str = "main") -> Commit:
        """The head commit of `branch`; KeyError if there is no such branch."""
        sha = self.branches[branch]
        return next(commit for commit in self.commits if commit.sha == sha)

    def resolve(self, revision: str) -> Commit | None:
        """A branch name or a commit sha (7+ leading hex digits) -> commit, else None."""
        sha = self.branches.get(revision)
        if sha is None and len(revision) >= 7:
            sha = next((c.sha for c in self.commits if c.sha.startswith(revision)), None)
        return next((c for c in self.commits if c.sha == sha), None)


@dataclass(frozen=True)
class _FileMeta:
    blob_id: str  # git oid: of the content, or of the LFS pointer for LFS files
    size: int
    sha256: str | None = None  # LFS files only
    pointer_size: int | None = None


def _file_meta(commit: Commit, path: str) -> _FileMeta:
    content = commit.files[path]
    if path not in commit.lfs_paths:
        return _FileMeta(blob_id=git_blob_sha1(content), size=len(content))
    pointer = lfs_pointer(content)
    return _FileMeta(
        blob_id=git_blob_sha1(pointer),
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        pointer_size=len(pointer),
    )


# --------------------------------------------------------------------------------------------------
# Requests, responses, errors, failure rules
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # as sent: percent-encoded, without the query string
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names, only _RECORDED_HEADERS
    status: int


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def segments(self) -> list[str]:
        # Split before unquoting: the client sends "refs/pr/1" as one segment, "refs%2Fpr%2F1".
        return [unquote(part) for part in self.path.strip("/").split("/")]

    @property
    def token(self) -> str | None:
        scheme, _, value = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return value.strip() or None

    def json(self):
        return json.loads(self.body or b"{}")


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload, status: int = 200, headers: dict[str, str] | None = None) -> _Response:
        return cls(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


class HubError(Exception):
    """An error answered the way the Hub does: status, X-Error-Code, X-Error-Message and a JSON body.

    The client (`hf_raise_for_status`) picks its exception class from X-Error-Code.
    """

    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.headers = status, message, error_code, headers or {}

    def to_response(self) -> _Response:
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.error_code:
            headers["X-Error-Code"] = self.error_code
        return _Response.json({"error": self.message}, status=self.status, headers=headers)


def _repo_not_found(repo_id: str) -> HubError:
    return HubError(404, f"Repository {repo_id} not found", "RepoNotFound")


def _revision_not_found(revision: str) -> HubError:
    return HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


@dataclass
class _FailureRule:
    status: int
    remaining: int | None  # None: fail until reset_failures()
    path_contains: str | None
    method: str | None
    error_code: str | None

    def matches(self, request: _Request) -> bool:
        return (self.method is None or self.method.upper() == request.method) and (
            self.path_contains is None or self.path_contains in request.path
        )


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class HubServer:
    """The fake Hub. See the module docstring for the API tests use."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, username: str = FAKE_USER):
        self.username = username
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[RecordedRequest] = []
        self.lfs_objects: dict[str, bytes] = {}
        self.upload_mode = "auto"
        self.server_errors: list[str] = []
        self._failures: list[_FailureRule] = []
        self._required_token: str | None = None
        self._lock = threading.RLock()
        self._httpd = _HttpServer((host, port), _HubRequestHandler)
        self._httpd.hub = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        # A short poll interval keeps stop() (called once per test) fast.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ---- failure injection -------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        path_contains: str | None = None,
        method: str | None = None,
        error_code: str | None = None,
    ) -> None:
        """Answer the next `n` requests whose path contains `path_contains` (and method matches) with `status`."""
        with self._lock:
            self._failures.append(_FailureRule(status, n, path_contains, method, error_code))

    def fail_all(self, status: int = 503, path_contains: str | None = None, method: str | None = None) -> None:
        """Answer every matching request with `status` until `reset_failures()`."""
        with self._lock:
            self._failures.append(_FailureRule(status, None, path_contains, method, None))

    def reset_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def require_token(self, token: str | None) -> None:
        """Reject requests not bearing exactly this token with 401 (None: accept any token again)."""
        with self._lock:
            self._required_token = token

    # ---- seeding and inspection helpers ------------------------------------------------------

    def add_repo(self, repo_id: str, files: dict[str, bytes | str] | None = None, private: bool = False) -> FakeRepo:
        """Create a repo like the Hub does (initial .gitattributes commit), plus one commit of `files`."""
        with self._lock:
            repo = FakeRepo(repo_id=repo_id, private=private)
            files_at_creation = {".gitattributes": DEFAULT_GITATTRIBUTES.encode()}
            initial = Commit(_new_commit_sha(), "initial commit", (".gitattributes",), files_at_creation, frozenset())
            repo.commits.append(initial)
            repo.branches["main"] = initial.sha
            self.repos[repo_id] = repo
            if files:
                self.commit_files(repo_id, files)
            return repo

    def commit_files(
        self,
        repo_id: str,
        files: dict[str, bytes | str],
        message: str = "Upload files",
        branch: str = "main",
        deleted: tuple[str, ...] = (),
    ) -> Commit:
        """Commit directly on the server; LFS-ness follows `upload_mode` as for uploads through HTTP."""
        with self._lock:
            repo = self.repos[repo_id]
            head = repo.head(branch)
            added = {path: _as_bytes(content) for path, content in files.items()}
            lfs = {path for path, content in added.items() if self._upload_mode_for(head, path, len(content)) == "lfs"}
            return self._apply_commit(repo, branch, message, added, lfs, set(deleted))

    def find_requests(self, method: str | None = None, path_contains: str = "") -> list[RecordedRequest]:
        with self._lock:
            return [
                r for r in self.requests if (method is None or r.method == method.upper()) and path_contains in r.path
            ]

    # ---- request handling --------------------------------------------------------------------

    def handle(self, request: _Request) -> _Response:
        """Answer one request. Called from the HTTP handler threads."""
        try:
            self._raise_injected_failure(request)
            self._check_required_token(request)
            with self._lock:  # one request at a time: the state is small and this keeps it consistent
                response = self._dispatch(request)
        except HubError as error:
            response = error.to_response()
        except Exception as error:  # a bug in the fake: answer 500 so the client fails fast, keep the traceback
            self.server_errors.append(traceback.format_exc())
            response = HubError(500, f"fake hub crashed: {error!r}").to_response()
        with self._lock:
            headers = {name: request.headers[name] for name in _RECORDED_HEADERS if name in request.headers}
            self.requests.append(RecordedRequest(request.method, request.path, request.query, headers, response.status))
        return response

    def _raise_injected_failure(self, request: _Request) -> None:
        with self._lock:
            rule = next((rule for rule in self._failures if rule.matches(request)), None)
            if rule is None:
                return
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._failures.remove(rule)
        raise HubError(rule.status, f"Injected failure (fake hub): {request.method} {request.path}", rule.error_code)

    def _check_required_token(self, request: _Request) -> None:
        required = self._required_token
        if required is None or request.path.startswith(_LFS_UPLOAD_PREFIX):
            return
        if request.token is None:
            raise self._unauthorized(request, "Authorization header is required")
        if request.token != required:
            raise HubError(401, _INVALID_CREDENTIALS)

    @staticmethod
    def _unauthorized(request: _Request, message: str) -> HubError:
        # The Hub hides private repos from anonymous callers: on repo URLs a missing token reads as "not found".
        repo_scoped = request.path.startswith("/api/models/") or "/resolve/" in request.path
        return HubError(401, message, "RepoNotFound" if repo_scoped else None)

    def _dispatch(self, request: _Request) -> _Response:
        segments = request.segments
        if request.path.startswith(_LFS_UPLOAD_PREFIX):
            return self._lfs_storage(request)
        if request.path.endswith(_LFS_BATCH_SUFFIX):
            return self._lfs_batch(request)
        if segments[:2] == ["api", "models"] and len(segments) > 2:
            return self._model_api(request, segments[2:])
        route = self._API_ROUTES.get((request.method, request.path))
        if route is not None:
            return route(self, request)
        if "resolve" in segments and request.method in ("GET", "HEAD"):
            return self._resolve(request)
        raise HubError(501, f"fake hub does not implement {request.method} {request.path}")

    # ---- access checks -----------------------------------------------------------------------

    def _repo_for_read(self, request: _Request, repo_id: str) -> FakeRepo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise _repo_not_found(repo_id)
        if repo.private and request.token is None:
            raise self._unauthorized(request, "Repository not found")
        return repo

    def _repo_for_write(self, request: _Request, repo_id: str) -> FakeRepo:
        if request.token is None:
            raise self._unauthorized(request, "You must be authenticated to write to a repo")
        repo = self.repos.get(repo_id)
        if repo is None:
            raise _repo_not_found(repo_id)
        return repo

    @staticmethod
    def _commit_at(repo: FakeRepo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _revision_not_found(revision)
        return commit

    def _repo_url(self, repo_id: str) -> str:
        return f"{self.url}/{repo_id}"

    # ---- /api/... routes that are not about one repo -----------------------------------------

    def _whoami(self, request: _Request) -> _Response:
        if request.token is None:
            raise HubError(401, _INVALID_CREDENTIALS)
        return _Response.json(
            {
                "type": "user",
                "id": "fake-user-id",
                "name": self.username,
                "fullname": "Fake Hub User",
                "email": f"{self.username}@example.com",
                "emailVerified": True,
                "isPro": False,
                "canPay": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
            }
        )

    def _create_repo(self, request: _Request) -> _Response:
        if request.token is None:
            raise self._unauthorized(request, "You must be authenticated to create a repo")
        payload = request.json()
        if payload.get("type") not in (None, "model"):
            raise HubError(400, f"fake hub only hosts model repos, not {payload['type']!r}")
        repo_id = f"{payload.get('organization') or self.username}/{payload['name']}"
        url = self._repo_url(repo_id)
        if repo_id in self.repos:
            # The client reads "url" from this 409 body when exist_ok=True.
            return _Response.json({"error": "You already created this model repo", "url": url}, status=409)
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self.add_repo(repo_id, private=private)
        return _Response.json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, request: _Request) -> _Response:
        payload = request.json()
        repo_id = f"{payload.get('organization') or self.username}/{payload['name']}"
        self._repo_for_write(request, repo_id)
        del self.repos[repo_id]
        return _Response.json({})

    def _validate_yaml(self, request: _Request) -> _Response:
        # Model cards are pushed with every Trainer.push_to_hub(); accept any metadata.
        return _Response.json({"errors": [], "warnings": []})

    _API_ROUTES = {
        ("GET", "/api/whoami-v2"): _whoami,
        ("POST", "/api/repos/create"): _create_repo,
        ("DELETE", "/api/repos/delete"): _delete_repo,
        ("POST", "/api/validate-yaml"): _validate_yaml,
    }

    # ---- /api/models/{repo_id}/... -----------------------------------------------------------

    def _model_api(self, request: _Request, segments: list[str]) -> _Response:
        namespaced = len(segments) >= 2 and segments[1] not in _REPO_API_ACTIONS
        split = 2 if namespaced else 1
        repo_id, rest = "/".join(segments[:split]), segments[split:]
        action, args = (rest[0], rest[1:]) if rest else ("", [])
        route = self._MODEL_ROUTES.get((request.method, action))
        if route is None:
            raise HubError(501, f"fake hub does not implement {request.method} {request.path}")
        return route(self, request, repo_id, args)

    def _model_info(self, request: _Request, repo_id: str, args: list[str]) -> _Response:
        repo = self._repo_for_read(request, repo_id)
        commit = self._commit_at(repo, args[0] if args else "main")
        with_blobs = _is_true(request.query.get("blobs"))
        return _Response.json(
            {
                "_id": repo_id,
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit.sha,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "pipeline_tag": _pipeline_tag(commit),
                "siblings": [_sibling(commit, path, with_blobs) for path in sorted(commit.files)],
                "spaces": [],
                "usedStorage": sum(len(content) for content in commit.files.values()),
            }
        )

    def _tree(self, request: _Request, repo_id: str, args: list[str]) -> _Response:
        repo = self._repo_for_read(request, repo_id)
        if not args:
            raise _revision_not_found("")
        commit = self._commit_at(repo, args[0])
        folder = "/".join(args[1:]).strip("/")
        entries = _tree_entries(commit, folder, recursive=_is_true(request.query.get("recursive")))
        if folder and not entries:
            raise HubError(404, f"{folder} does not exist", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        return _Response.json(entries)  # a single page: no "Link" header

    def _refs(self, request: _Request, repo_id: str, args: list[str]) -> _Response:
        repo = self._repo_for_read(request, repo_id)

        def ref(name: str, full: str) -> dict:
            return {"name": name, "ref": full, "targetCommit": repo.branches[name]}

        branches = [ref(name, f"refs/heads/{name}") for name in repo.branches if not name.startswith("refs/pr/")]
        pulls = [ref(name, name) for name in repo.branches if name.startswith("refs/pr/")]
        return _Response.json({"branches": branches, "converts": [], "tags": [], "pullRequests": pulls})

    def _create_branch(self, request: _Request, repo_id: str, args: list[str]) -> _Response:
        repo = self._repo_for_write(request, repo_id)
        branch = "/".join(args)
        if branch in repo.branches:
            raise HubError(409, f"Reference refs/heads/{branch} already exists")
        start = self._commit_at(repo, request.json().get("startingPoint") or "main")
        repo.branches[branch] = start.sha
        return _Response.json({})

    def _delete_branch(self, request: _Request, repo_id: str, args: list[str]) -> _Response:
        repo = self._repo_for_write(request, repo_id)
        branch = "/".join(args)
        if branch not in repo.branches or branch == "main":
            raise _revision_not_found(branch)
        del repo.branches[branch]
        return _Response.json({})

    def _preupload(self, request: _Request, repo_id: str, args: list[str]) -> _Response:
        repo = self._repo_for_write(request, repo_id)
        head = self._commit_at(repo, args[0] if args else "main")
        answers = []
        for item in request.json()["files"]:
            mode = self._upload_mode_for(head, item["path"], item["size"])
            # "oid" of the file already there lets the client skip unchanged files, as on the Hub.
            oid = _remote_oid(head, item["path"], mode)
            answers.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return _Response.json({"files": answers, "commitOid": head.sha})

    def _upload_mode_for(self, head: Commit, path: str, size: int) -> str:
        if self.upload_mode != "auto":
            return self.upload_mode
        patterns = _lfs_patterns(head.files.get(".gitattributes", b""))
        if size >= LFS_SIZE_THRESHOLD or any(_matches_gitattributes_pattern(p, path) for p in patterns):
            return "lfs"
        return "regular"

    def _commit(self, request: _Request, repo_id: str, args: list[str]) -> _Response:
        repo = self._repo_for_write(request, repo_id)
        branch = args[0] if args else "main"
        if branch not in repo.branches:
            raise _revision_not_found(branch)
        header, operations = _parse_commit_payload(request.body)
        parent = header.get("parentCommit")
        if parent and not repo.head(branch).sha.startswith(parent):
            raise HubError(412, f"Parent commit {parent} is not the head of {branch}")
        added, lfs_added, deleted = self._collect_operations(repo.head(branch), operations)
        answer: dict = {}
        if _is_true(request.query.get("create_pr")):
            branch, number = self._open_pull_request(repo, branch)
            answer["pullRequestUrl"] = f"{self._repo_url(repo_id)}/discussions/{number}"
        commit = self._apply_commit(repo, branch, header.get("summary") or "", added, lfs_added, deleted)
        answer.update(success=True, commitOid=commit.sha, commitUrl=f"{self._repo_url(repo_id)}/commit/{commit.sha}")
        return _Response.json(answer)

    _MODEL_ROUTES = {
        ("GET", ""): _model_info,
        ("GET", "revision"): _model_info,
        ("GET", "tree"): _tree,
        ("GET", "refs"): _refs,
        ("POST", "branch"): _create_branch,
        ("DELETE", "branch"): _delete_branch,
        ("POST", "preupload"): _preupload,
        ("POST", "commit"): _commit,
    }

    # ---- commits -----------------------------------------------------------------------------

    def _collect_operations(self, head: Commit, operations: list[dict]) -> tuple[dict[str, bytes], set[str], set[str]]:
        """NDJSON commit operations -> (added path -> content, added paths stored as LFS, deleted paths)."""
        added: dict[str, bytes] = {}
        lfs_added: set[str] = set()
        deleted: set[str] = set()
        for operation in operations:
            key, value = operation["key"], operation["value"]
            path = value["path"]
            if key == "file":
                added[path] = _decode_inline_file(value)
            elif key == "lfsFile":
                added[path] = self._uploaded_lfs_object(value["oid"], path)
                lfs_added.add(path)
            elif key == "deletedFile":
                if path not in head.files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                deleted.add(path)
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                deleted.update(p for p in head.files if p.startswith(prefix))
            else:
                raise HubError(400, f"fake hub does not implement commit operation {key!r}")
        return added, lfs_added, deleted

    def _uploaded_lfs_object(self, oid: str, path: str) -> bytes:
        content = self.lfs_objects.get(oid)
        if content is None:  # the client committed an LFS pointer without uploading the content first
            raise HubError(422, f"LFS object {oid} for {path} was not uploaded")
        return content

    def _open_pull_request(self, repo: FakeRepo, base_branch: str) -> tuple[str, int]:
        number = 1 + sum(name.startswith("refs/pr/") for name in repo.branches)
        branch = f"refs/pr/{number}"
        repo.branches[branch] = repo.branches[base_branch]
        return branch, number

    @staticmethod
    def _apply_commit(
        repo: FakeRepo, branch: str, message: str, added: dict[str, bytes], lfs_added: set[str], deleted: set[str]
    ) -> Commit:
        parent = repo.head(branch)
        files = {path: content for path, content in parent.files.items() if path not in deleted}
        files.update(added)
        # A path re-added inline stops being LFS; one re-added as LFS becomes LFS.
        lfs_paths = ((parent.lfs_paths - added.keys()) | lfs_added) & files.keys()
        commit = Commit(_new_commit_sha(), message, tuple(sorted(added.keys() | deleted)), files, frozenset(lfs_paths))
        repo.commits.append(commit)
        repo.branches[branch] = commit.sha
        return commit

    # ---- git LFS -----------------------------------------------------------------------------

    def _lfs_batch(self, request: _Request) -> _Response:
        repo_id = unquote(request.path[1 : -len(_LFS_BATCH_SUFFIX)])
        self._repo_for_write(request, repo_id)
        payload = request.json()
        if payload.get("operation") != "upload":
            raise HubError(400, "fake hub serves LFS downloads through /resolve only")
        objects = [self._lfs_batch_object(obj["oid"], obj["size"]) for obj in payload["objects"]]
        return _Response.json(
            {"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"}
        )

    def _lfs_batch_object(self, oid: str, size: int) -> dict:
        entry: dict = {"oid": oid, "size": size, "authenticated": True}
        if oid not in self.lfs_objects:  # no "actions": the client skips content the server already has
            href = f"{self.url}{_LFS_UPLOAD_PREFIX}{oid}"
            entry["actions"] = {
                "upload": {"href": href, "header": {}},  # no "chunk_size" header: single-part PUT
                "verify": {"href": f"{href}/verify", "header": {}},
            }
        return entry

    def _lfs_storage(self, request: _Request) -> _Response:
        oid, _, action = request.path[len(_LFS_UPLOAD_PREFIX) :].partition("/")
        if request.method == "PUT" and not action:
            if hashlib.sha256(request.body).hexdigest() != oid:
                raise HubError(400, f"uploaded content does not match sha256 {oid}")
            self.lfs_objects[oid] = request.body
            return _Response(200, b"", {"ETag": f'"{hashlib.md5(request.body).hexdigest()}"'})
        if request.method == "POST" and action == "verify":
            stored = self.lfs_objects.get(oid)
            if stored is None or len(stored) != request.json().get("size"):
                raise HubError(404, f"LFS object {oid} not found")
            return _Response.json({"success": True})
        raise HubError(405, f"{request.method} not allowed on LFS storage")

    # ---- downloads ---------------------------------------------------------------------------

    def _resolve(self, request: _Request) -> _Response:
        segments = request.segments
        at = segments.index("resolve")
        if at not in (1, 2) or len(segments) < at + 3:  # only model repos: "{ns}/{name}" or legacy "{name}"
            raise HubError(404, f"fake hub cannot resolve {request.path}", "RepoNotFound")
        repo_id, revision, filename = "/".join(segments[:at]), segments[at + 1], "/".join(segments[at + 2 :])
        commit = self._commit_at(self._repo_for_read(request, repo_id), revision)
        if filename not in commit.files:
            # X-Repo-Commit lets the client cache the absence of the file for this commit.
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        meta = _file_meta(commit, filename)
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{meta.blob_id}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if meta.sha256 is not None:
            # The Hub redirects LFS files to a CDN; the client keys its cache on these two headers.
            headers.update({"X-Linked-Etag": f'"{meta.sha256}"', "X-Linked-Size": str(meta.size)})
        content = commit.files[filename]
        if request.method == "HEAD":
            return _Response(200, content, headers)  # the handler sends the headers only
        status, body, range_headers = _slice_range(content, request.headers.get("range"))
        return _Response(status, body, {**headers, **range_headers})


# --------------------------------------------------------------------------------------------------
# Response builders that need no server state
# --------------------------------------------------------------------------------------------------


def _remote_oid(head: Commit, path: str, mode: str) -> str | None:
    """The oid the client compares with its own to skip unchanged files: sha256 for LFS, git sha1 otherwise."""
    content = head.files.get(path)
    if content is None:
        return None
    return hashlib.sha256(content).hexdigest() if mode == "lfs" else git_blob_sha1(content)


def _parse_commit_payload(body: bytes) -> tuple[dict, list[dict]]:
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    if not lines or lines[0].get("key") != "header":
        raise HubError(400, "commit payload must start with a header line")
    return lines[0]["value"], lines[1:]


def _decode_inline_file(value: dict) -> bytes:
    if value.get("encoding") == "base64":
        return base64.b64decode(value["content"])
    return value["content"].encode()


def _sibling(commit: Commit, path: str, with_blobs: bool) -> dict:
    sibling: dict = {"rfilename": path}
    if with_blobs:  # the Hub only adds sizes and oids for ?blobs=true
        meta = _file_meta(commit, path)
        sibling.update(size=meta.size, blobId=meta.blob_id)
        if meta.sha256 is not None:
            sibling["lfs"] = {"size": meta.size, "sha256": meta.sha256, "pointerSize": meta.pointer_size}
    return sibling


def _pipeline_tag(commit: Commit) -> str | None:
    """The model card's `pipeline_tag:` metadata, which is what `pipeline(model=...)` without a task reads."""
    match = re.search(rb"^pipeline_tag:\s*(\S+)\s*$", commit.files.get("README.md", b""), re.MULTILINE)
    return match.group(1).decode() if match else None


def _tree_entries(commit: Commit, folder: str, recursive: bool) -> list[dict]:
    """Files and folders under `folder`: direct children, or all descendants when recursive (folders included)."""
    prefix = f"{folder}/" if folder else ""
    files, folders = [], set()
    for path in sorted(commit.files):
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            folders.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            files.append(_tree_file_entry(commit, path))
    folder_entries = [
        {"type": "directory", "oid": hashlib.sha1(f"{commit.sha}:{name}".encode()).hexdigest(), "size": 0, "path": name}
        for name in sorted(folders)
    ]
    return folder_entries + files


def _tree_file_entry(commit: Commit, path: str) -> dict:
    meta = _file_meta(commit, path)
    entry: dict = {"type": "file", "oid": meta.blob_id, "size": meta.size, "path": path}
    if meta.sha256 is not None:
        entry["lfs"] = {"oid": meta.sha256, "size": meta.size, "pointerSize": meta.pointer_size}
    return entry


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


def _slice_range(content: bytes, range_header: str | None) -> tuple[int, bytes, dict[str, str]]:
    """Serve a single `bytes=a-b` range with 206; anything else gets the whole file (clients cope with 200)."""
    match = _RANGE.fullmatch(range_header or "")
    if match is None or match.groups() == ("", ""):
        return 200, content, {}
    start, end = match.groups()
    size = len(content)
    if start == "":  # "bytes=-n": the last n bytes
        first, last = max(0, size - int(end)), size - 1
    else:
        first, last = int(start), min(int(end), size - 1) if end else size - 1
    if first >= size or first > last:
        raise HubError(416, f"Range {range_header} not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return 206, content[first : last + 1], {"Content-Range": f"bytes {first}-{last}/{size}"}


# --------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True  # a client that never hangs up must not block stop()
    hub: HubServer


class _HubRequestHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so an error answered before a body was fully used can
    # never leave a kept-alive connection out of sync, and stop() leaves no idle connection threads.
    protocol_version = "HTTP/1.0"
    server: _HttpServer

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        request = _Request(
            method=self.command,
            path=parts.path,
            query={name: values[-1] for name, values in parse_qs(parts.query).items()},
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self._read_body(),  # always read the body first, even for requests we reject
        )
        self._write(self.server.hub.handle(request))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def _read_body(self) -> bytes:
        # httpx streams file uploads (LFS PUT) with chunked transfer encoding when it cannot size them.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked_body(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # optional trailers
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF closing each chunk

    def _write(self, response: _Response) -> None:
        self.send_response(response.status)
        for name, value in {"Content-Length": str(len(response.body)), **response.headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args) -> None:
        pass  # requests are in HubServer.requests; keep test output clean


# --------------------------------------------------------------------------------------------------
# Starting it, and pointing huggingface_hub / transformers at it
# --------------------------------------------------------------------------------------------------


def start_hub_server(**kwargs) -> HubServer:
    """A started server; call `.stop()` when done (or use `running_hub_server()`)."""
    return HubServer(**kwargs).start()


@contextlib.contextmanager
def running_hub_server(**kwargs) -> Iterator[HubServer]:
    server = start_hub_server(**kwargs)
    try:
        yield server
    finally:
        server.stop()


def point_clients_at(
    server: HubServer, monkeypatch: pytest.MonkeyPatch, hf_home: str | Path, token: str | None = FAKE_TOKEN
) -> None:
    """Make huggingface_hub and transformers talk to `server`, whatever was imported before.

    Caches go under `hf_home`. `token=None` removes HF_TOKEN so requests go out unauthenticated.
    The module docstring lists every patched name and why.
    """
    hf_home = Path(hf_home)
    hub_cache = hf_home / "hub"
    _patch_environment(monkeypatch, server.url, hf_home, hub_cache, token)
    _patch_huggingface_hub(monkeypatch, server.url, hf_home, hub_cache)
    _patch_transformers(monkeypatch)


@contextlib.contextmanager
def patched_hub_clients(
    server: HubServer, hf_home: str | Path, token: str | None = FAKE_TOKEN
) -> Iterator[HubServer]:
    """`point_clients_at` for code without a `monkeypatch` fixture; everything is restored on exit."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        point_clients_at(server, monkeypatch, hf_home, token)
        yield server


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    """A fresh fake Hub per test, with huggingface_hub/transformers pointed at it and HF_TOKEN=FAKE_TOKEN."""
    with running_hub_server() as server:
        point_clients_at(server, monkeypatch, tmp_path / "hf_home")
        yield server


def _patch_environment(
    monkeypatch: pytest.MonkeyPatch, url: str, hf_home: Path, hub_cache: Path, token: str | None
) -> None:
    # For code that reads the environment itself, and for subprocesses.
    env = {
        "HF_ENDPOINT": url,
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Unset anything that would take precedence over the values above (get_token() prefers OIDC).
    overriding = ("HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_TOKEN_PATH", "HUGGINGFACE_HUB_CACHE")
    for name in (*overriding, "HF_ASSETS_CACHE", "HF_XET_CACHE"):
        monkeypatch.delenv(name, raising=False)
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)  # get_token() reads this at every call


def _patch_huggingface_hub(monkeypatch: pytest.MonkeyPatch, url: str, hf_home: Path, hub_cache: Path) -> None:
    from huggingface_hub import constants
    from huggingface_hub import hf_api as hf_api_module
    from huggingface_hub.utils import _cache_manager, _http

    # Values huggingface_hub.constants computed from the environment when it was first imported.
    computed_at_import = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HUGGINGFACE_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,  # also skips the /api/agent-harnesses lookup made for the user agent
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {"127.0.0.1"},
    }
    for name, value in computed_at_import.items():
        monkeypatch.setattr(constants, name, value)
    # Copies other modules took with `from ..constants import ...` or built at import.
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(url)})
    monkeypatch.setattr(hf_api_module.api, "endpoint", url)


def _patch_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("transformers") is None:
        return
    import transformers.utils.hub as transformers_hub

    # transformers caches one HfApi (endpoint fixed at construction) for Trainer pushes and pipeline():
    # drop it so the next one is built against the fake, and so the one built here dies with the test.
    monkeypatch.setattr(transformers_hub, "_hf_api", None)
