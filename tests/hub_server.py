"""A local stand-in for the parts of the Hugging Face Hub HTTP API that `huggingface_hub` uses to find and download models.

Standard library only: a `http.server.ThreadingHTTPServer` on 127.0.0.1 (port 0 = any free port), served from a daemon
thread. Written against `huggingface_hub` 2.4.0 (HTTP client: `httpx2`); tests drive it through the real client.

    with HubServer() as hub:                      # or hub = HubServer().start(); ...; hub.stop()
        hub.add_repo("org/tiny-GGUF", {"tiny.Q4_K_M.gguf": data, "README.md": b"# tiny"}, tags=["gguf"])
        api = HfApi(endpoint=hub.url)
        hf_hub_download("org/tiny-GGUF", "tiny.Q4_K_M.gguf", local_dir=tmp_path, endpoint=hub.url)

Pointing huggingface_hub at the server
--------------------------------------
`huggingface_hub` reads its environment ONCE, at import, into `huggingface_hub.constants` (ENDPOINT, HF_HUB_OFFLINE,
HF_HUB_ETAG_TIMEOUT, HF_HUB_DISABLE_IMPLICIT_TOKEN, HF_HUB_DISABLE_TELEMETRY, HF_HUB_CACHE, HF_TOKEN_PATH, ...).
Setting `HF_ENDPOINT` in a test is therefore too late. What works reliably, per test:

* pass `endpoint=hub.url` explicitly: `HfApi(endpoint=hub.url)`, `hf_hub_download(..., endpoint=hub.url)`,
  `get_hf_file_metadata(url, endpoint=hub.url)`; and
* monkeypatch the constants as well (code under test may omit `endpoint=`): `constants.ENDPOINT = hub.url` and
  `constants.HUGGINGFACE_CO_URL_TEMPLATE = hub.url + "/{repo_id}/resolve/{revision}/{filename}"` (`hf_hub_url` builds
  download URLs from the template and only swaps the prefix when it equals `constants.ENDPOINT`).

`point_huggingface_hub_at(monkeypatch, hub.url, home)` below does that, plus: no token leaks in from the machine
(`HF_TOKEN` unset, `HF_HUB_DISABLE_IMPLICIT_TOKEN`, token path under `home`), `HF_HUB_OFFLINE` off, telemetry off
(with telemetry on, every request builds a user agent that fetches `{ENDPOINT}/api/agent-harnesses`, i.e. the real
Hub when ENDPOINT is not patched), short ETag timeout, `HF_HOME`/`HF_HUB_CACHE` under `home`. It patches both the
environment variables (for subprocesses) and the constants (for this process). The `hub` fixture in
tests/library/conftest.py uses it.

Plain HTTP, never hf-xet: `huggingface_hub` switches to Xet only when a resolve response carries an `X-Xet-Hash` header
(or a cached tree listing carries `xetHash`); this server sends neither, so downloads are plain `GET`s (with `Range`
on retries). `point_huggingface_hub_at` also sets HF_HUB_DISABLE_XET for good measure.

Repositories and files
----------------------
`add_repo(repo_id, files, *, gated=False, private=False, downloads=0, likes=0, trending_score=0, last_modified=ISO,
created_at=ISO, tags=None, library_name=None, pipeline_tag=None, **extra)` registers (or replaces) a model repo and
returns a `Repo` (`.sha`, `.files[name]` -> `HubFile` with `.data`, `.size`, `.sha256`, `.blob_id`, `.lfs`, `.etag`).
`extra` keys (e.g. `gguf={"total": ..., "architecture": "llama", "context_length": 2048}`) are copied into the JSON.
The commit sha is a deterministic 40-hex string (sha1 of repo id + file names + content hashes).

LFS rule: a file is served as an LFS file when its name ends in `.gguf` or `.safetensors`/`.bin`, or when it is at least
`hub.lfs_threshold` bytes (default 10 KiB). For LFS files: siblings carry `lfs: {sha256, size, pointerSize}` and
`blobId` = git sha1 of the LFS pointer file; the resolve endpoint sends `ETag` = `X-Linked-Etag` = sha256 and
`X-Linked-Size`. Other files: `ETag` = git blob sha1, no X-Linked-*. Files are served directly (no CDN redirect).

Endpoints
---------
* `GET /api/models`: `search=` (substring of the id, case-insensitive), `author=`, `filter=` (repeatable, all must
  match: a tag, or `gguf` which also matches repos holding a .gguf file), `gated=true|false`, `sort=downloads|likes|
  lastModified|trendingScore|createdAt|id` (`direction=1` ascending, otherwise descending), `limit=`, pagination
  with `Link: <...&cursor=N>; rel="next"` when more than `hub.page_size` entries remain; `expand`/`full`/`config`/...
  are ignored except that `full=true` or `expand=siblings` adds `siblings`. Private repos only with a valid token.
* `GET /api/models/{repo_id}` and `/api/models/{repo_id}/revision/{rev}`: model info; `blobs=true` adds sizes and
  LFS info to siblings. Gated repos answer without a token (`gated: "auto"` / `"manual"`), like the real Hub.
* `GET /api/models/{repo_id}/tree/{rev}[/{path}]` (`recursive=true`): `list_repo_tree`/`list_repo_files`.
* `HEAD`/`GET /{repo_id}/resolve/{rev}/{filename}`: the file, with `Range: bytes=N-` / `bytes=N-M` (206 +
  `Content-Range`, 416 when unsatisfiable). Headers: `X-Repo-Commit`, `ETag`, `X-Linked-Etag`, `X-Linked-Size`,
  `Content-Length`, `Accept-Ranges: bytes`, `Content-Disposition`.
* `GET /api/whoami-v2`: 200 for a known token, 401 otherwise. `GET /api/agent-harnesses`: an empty registry.

Errors (headers as the real Hub sends them, turned into exceptions by `hf_raise_for_status`):
unknown repo / private repo without access -> 404 (401 for private) `X-Error-Code: RepoNotFound`
(`RepositoryNotFoundError`); unknown revision -> 404 `RevisionNotFound`; unknown file -> 404 `EntryNotFound`
(`RemoteEntryNotFoundError`); gated repo file without `Authorization` -> 401 `GatedRepo`, with a token the hub does not
authorize for it -> 403 `GatedRepo` (`GatedRepoError`). With `hub.strict_tokens = True` an unknown bearer token gets
401 `X-Error-Message: Invalid credentials in Authorization header` everywhere.

Tokens: `hub.tokens` (set of valid tokens, authorized for every gated/private repo); `hub.add_token(token,
repos=None)` restricts a token to some repos.

Fault injection (any time, thread-safe; `hub.clear_faults()` removes them all)
------------------------------------------------------------------------------
* `hub.interrupt(repo_id, filename, after_bytes=[N1, N2, ...])`: each of the next GETs of that file sends full headers
  (Content-Length of the whole requested range) and then closes the connection after N body bytes (one list entry per
  GET; N counts from the start of the requested range).
* `hub.corrupt(repo_id, filename, offset=None)`: serve the file with one byte flipped (default: the middle byte);
  headers still announce the true size and sha256. `hub.corrupt(..., enabled=False)` undoes it.
* `hub.throttle(bytes_per_second, repo_id=None, filename=None)`: limit the body rate, globally or for one file
  (`None` removes the limit).
* `hub.hold(repo_id, filename, after_bytes=N)` -> `Hold`: the next GET of that file stops after N body bytes and waits;
  `hold.reached` (an Event) is set when it waits (or when the response ended before N); `hold.release()` lets it
  continue. For deterministic pause/cancel tests. `hub.stop()` also ends a held or throttled response.
* `hub.fail_next(status, count=1, *, path_contains=None, method=None)`: the next `count` matching requests get
  `status` (a small JSON error body, no X-Error-Code).

Request log: `hub.requests` is a list of `RequestRecord(method, path, query, headers, status, bytes_sent)`, headers with
lower-case names; `record.range` is the Range header or None. `hub.file_requests(repo_id, filename, method="GET")`
filters it; `hub.clear_requests()` empties it.

huggingface_hub 2.4.0 behaviour seen through this server (pinned by tests/library/test_hub_server.py)
------------------------------------------------------------------------------------------------------
* `hf_hub_download` = HEAD (metadata: X-Repo-Commit, ETag/X-Linked-Etag, X-Linked-Size) + one GET. A body cut short
  (httpx2.RemoteProtocolError / ConnectError / timeout) is retried INSIDE the call after `time.sleep(1)`, with
  `Range: bytes=<bytes written>-` (whole read chunks only, `constants.DOWNLOAD_CHUNK_SIZE` = 10 MiB); up to 5 retries
  without progress, then the httpx2 error propagates.
* The partial file is `<local_dir>/.cache/huggingface/download/<hash>.<etag>.<8 hex>.incomplete` (cache mode:
  `blobs/<etag>.<8 hex>.incomplete`), unique per call and deleted on ANY failure (including an exception raised from a
  `tqdm_class.update()`): a later call never resumes, it starts from byte 0.
* No sha256 check of downloaded bytes (`corrupt()` goes unnoticed).
* Retry waits are hard-coded (`http_backoff`: 1, 2, 4, 8, 8 s; `http_get`: 1 s); no env var shortens them. Tests
  replace the `time` module attribute of `huggingface_hub.file_download` / `huggingface_hub.utils._http` with an
  object whose `sleep` records the wait.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")
DEFAULT_LFS_THRESHOLD = 10 * 1024
DEFAULT_DATE = "2024-01-01T00:00:00.000Z"
_WRITE_CHUNK = 16 * 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class HubFile:
    name: str
    data: bytes
    lfs: bool
    size: int = 0
    sha256: str = ""
    blob_id: str = ""  # git sha1 of the content (regular file) or of the LFS pointer (LFS file)
    pointer_size: int | None = None

    def __post_init__(self) -> None:
        self.size = len(self.data)
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        if self.lfs:
            pointer = lfs_pointer(self.sha256, self.size)
            self.pointer_size = len(pointer)
            self.blob_id = git_blob_sha1(pointer)
        else:
            self.blob_id = git_blob_sha1(self.data)

    @property
    def etag(self) -> str:
        """What huggingface_hub ends up with as the file's etag: sha256 for LFS files, git blob sha1 otherwise."""
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class Repo:
    repo_id: str
    files: dict[str, HubFile]
    sha: str
    gated: str | bool = False  # False, "auto" or "manual"
    private: bool = False
    downloads: int = 0
    likes: int = 0
    trending_score: int = 0
    last_modified: str = DEFAULT_DATE
    created_at: str = DEFAULT_DATE
    tags: list[str] = field(default_factory=list)
    library_name: str | None = None
    pipeline_tag: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def author(self) -> str | None:
        return self.repo_id.split("/")[0] if "/" in self.repo_id else None

    def has_gguf(self) -> bool:
        return any(name.endswith(".gguf") for name in self.files)

    def siblings(self, blobs: bool) -> list[dict[str, Any]]:
        out = []
        for f in sorted(self.files.values(), key=lambda f: f.name):
            entry: dict[str, Any] = {"rfilename": f.name}
            if blobs:
                entry["size"] = f.size
                entry["blobId"] = f.blob_id
                if f.lfs:
                    entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            out.append(entry)
        return out

    def summary(self) -> dict[str, Any]:
        """The fields the real Hub returns for a repo in a listing (plus author/sha/gated/lastModified)."""
        data: dict[str, Any] = {
            "_id": self.sha[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.author,
            "sha": self.sha,
            "lastModified": self.last_modified,
            "createdAt": self.created_at,
            "private": self.private,
            "gated": self.gated,
            "disabled": False,
            "downloads": self.downloads,
            "likes": self.likes,
            "trendingScore": self.trending_score,
            "tags": list(self.tags),
        }
        if self.library_name is not None:
            data["library_name"] = self.library_name
        if self.pipeline_tag is not None:
            data["pipeline_tag"] = self.pipeline_tag
        data.update(self.extra)
        return data

    def info(self, blobs: bool) -> dict[str, Any]:
        data = self.summary()
        data["siblings"] = self.siblings(blobs)
        data["spaces"] = []
        data["usedStorage"] = sum(f.size for f in self.files.values())
        return data


@dataclass
class RequestRecord:
    method: str
    path: str  # unquoted path, without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    status: int | None = None
    bytes_sent: int = 0  # body bytes actually written

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


class Hold:
    """A pause point in one GET: the server waits after `after_bytes` body bytes until `release()`."""

    def __init__(self, after_bytes: int) -> None:
        self.after_bytes = after_bytes
        self.reached = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    @property
    def released(self) -> bool:
        return self._released.is_set()


@dataclass
class _Failure:
    status: int
    count: int
    path_contains: str | None
    method: str | None


class HubServer:
    def __init__(self, *, lfs_threshold: int = DEFAULT_LFS_THRESHOLD, page_size: int = 1000) -> None:
        self.lfs_threshold = lfs_threshold
        self.page_size = page_size
        self.repos: dict[str, Repo] = {}
        self.tokens: set[str] = set()
        self.strict_tokens = False
        self.requests: list[RequestRecord] = []
        self._token_repos: dict[str, set[str]] = {}
        self._lock = threading.RLock()
        self._interrupts: dict[tuple[str, str], list[int]] = {}
        self._corrupt: dict[tuple[str, str], int | None] = {}
        self._throttle: dict[tuple[str, str] | None, float] = {}
        self._holds: dict[tuple[str, str], list[Hold]] = {}
        self._failures: list[_Failure] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._port = 0

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> HubServer:
        """Start serving (again). A restarted server keeps its port, so `url` stays valid across stop()/start()."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self._port), _Handler, self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection (kept-alive ones too), so clients get connection errors."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_all_connections()
        server.server_close()
        server.join_handlers(timeout=2.0)
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("HubServer not started")
        return f"http://127.0.0.1:{self._port}"

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- registry --------------------------------------------------------------------------------------------

    def is_lfs(self, name: str, data: bytes) -> bool:
        return name.endswith(LFS_SUFFIXES) or len(data) >= self.lfs_threshold

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        gated: bool | str = False,
        private: bool = False,
        downloads: int = 0,
        likes: int = 0,
        trending_score: int = 0,
        last_modified: str = DEFAULT_DATE,
        created_at: str | None = None,
        tags: Iterable[str] | None = None,
        library_name: str | None = None,
        pipeline_tag: str | None = None,
        **extra: Any,
    ) -> Repo:
        hub_files = {
            name: HubFile(name, bytes(data), self.is_lfs(name, data)) for name, data in files.items()
        }
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(hub_files):
            digest.update(b"\0" + name.encode() + b"\0" + hub_files[name].sha256.encode())
        repo = Repo(
            repo_id=repo_id,
            files=hub_files,
            sha=digest.hexdigest(),
            gated=("auto" if gated is True else gated),
            private=private,
            downloads=downloads,
            likes=likes,
            trending_score=trending_score,
            last_modified=last_modified,
            created_at=created_at or last_modified,
            tags=list(tags or []),
            library_name=library_name,
            pipeline_tag=pipeline_tag,
            extra=dict(extra),
        )
        with self._lock:
            self.repos[repo_id] = repo
        return repo

    def remove_repo(self, repo_id: str) -> None:
        with self._lock:
            self.repos.pop(repo_id, None)

    def file(self, repo_id: str, filename: str) -> HubFile:
        return self.repos[repo_id].files[filename]

    def add_token(self, token: str, repos: Iterable[str] | None = None) -> None:
        """A valid token; authorized for every gated/private repo, or only for `repos` when given."""
        with self._lock:
            self.tokens.add(token)
            if repos is None:
                self._token_repos.pop(token, None)
            else:
                self._token_repos[token] = set(repos)

    # -- faults ----------------------------------------------------------------------------------------------

    def interrupt(self, repo_id: str, filename: str, after_bytes: Iterable[int]) -> None:
        with self._lock:
            self._interrupts.setdefault((repo_id, filename), []).extend(int(n) for n in after_bytes)

    def corrupt(
        self, repo_id: str, filename: str, *, offset: int | None = None, enabled: bool = True
    ) -> None:
        with self._lock:
            if enabled:
                self._corrupt[(repo_id, filename)] = offset
            else:
                self._corrupt.pop((repo_id, filename), None)

    def throttle(
        self, bytes_per_second: float | None, repo_id: str | None = None, filename: str | None = None
    ) -> None:
        key = None if repo_id is None else (repo_id, filename or "")
        with self._lock:
            if bytes_per_second is None:
                self._throttle.pop(key, None)
            else:
                self._throttle[key] = float(bytes_per_second)

    def hold(self, repo_id: str, filename: str, after_bytes: int) -> Hold:
        h = Hold(after_bytes)
        with self._lock:
            self._holds.setdefault((repo_id, filename), []).append(h)
        return h

    def fail_next(
        self, status: int, count: int = 1, *, path_contains: str | None = None, method: str | None = None
    ) -> None:
        with self._lock:
            self._failures.append(_Failure(status, count, path_contains, method.upper() if method else None))

    def clear_faults(self) -> None:
        with self._lock:
            self._interrupts.clear()
            self._corrupt.clear()
            self._throttle.clear()
            for holds in self._holds.values():
                for h in holds:
                    h.release()
            self._holds.clear()
            self._failures.clear()

    # -- request log -----------------------------------------------------------------------------------------

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def file_requests(self, repo_id: str, filename: str, method: str | None = "GET") -> list[RequestRecord]:
        suffix = f"/{filename}"
        prefix = f"/{repo_id}/resolve/"
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path.startswith(prefix)
                and r.path.endswith(suffix)
                and (method is None or r.method == method)
            ]

    # -- internals used by the handler -----------------------------------------------------------------------

    def _take_failure(self, method: str, path: str) -> int | None:
        with self._lock:
            for f in self._failures:
                if (
                    f.count > 0
                    and (f.method in (None, method))
                    and (f.path_contains is None or f.path_contains in path)
                ):
                    f.count -= 1
                    status = f.status
                    self._failures = [x for x in self._failures if x.count > 0]
                    return status
        return None

    def _take_interrupt(self, key: tuple[str, str]) -> int | None:
        with self._lock:
            queue = self._interrupts.get(key)
            return queue.pop(0) if queue else None

    def _take_hold(self, key: tuple[str, str]) -> Hold | None:
        with self._lock:
            queue = self._holds.get(key)
            return queue.pop(0) if queue else None

    def _rate(self, key: tuple[str, str]) -> float | None:
        with self._lock:
            return self._throttle.get(key, self._throttle.get((key[0], ""), self._throttle.get(None)))

    def _served_bytes(self, key: tuple[str, str], data: bytes) -> bytes:
        with self._lock:
            if key not in self._corrupt or not data:
                return data
            offset = self._corrupt[key]
        offset = len(data) // 2 if offset is None else offset
        buf = bytearray(data)
        buf[offset] ^= 0xFF
        return bytes(buf)

    def _token_from(self, headers: dict[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def _authorized(self, token: str | None, repo_id: str) -> bool:
        with self._lock:
            if token is None or token not in self.tokens:
                return False
            allowed = self._token_repos.get(token)
            return allowed is None or repo_id in allowed

    def _visible(self, repo: Repo, token: str | None) -> bool:
        return not repo.private or self._authorized(token, repo.repo_id)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], hub: HubServer
    ) -> None:
        self.hub = hub
        self._conns: set[socket.socket] = set()
        self._handlers: set[threading.Thread] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):  # type: ignore[override]
        with self._conn_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):  # type: ignore[override]
        with self._conn_lock:
            self._handlers.add(threading.current_thread())
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conn_lock:
                self._handlers.discard(threading.current_thread())
                self._conns.discard(request)

    def close_all_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def join_handlers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._conn_lock:
            handlers = list(self._handlers)
        for t in handlers:
            t.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request, client_address):  # type: ignore[override]
        pass  # client went away mid-response (cancel, interrupt): expected in these tests


class _Abort(Exception):
    """Stop writing this response and close the connection."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
        pass

    # -- plumbing --------------------------------------------------------------------------------------------

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.raw_path = split.path
        self.query = parse_qs(split.query, keep_blank_values=True)
        self.req_headers = {k.lower(): v for k, v in self.headers.items()}
        self.record = RequestRecord(method, unquote(split.path), self.query, self.req_headers)
        with self.hub._lock:
            self.hub.requests.append(self.record)
        self.method = method
        try:
            status = self.hub._take_failure(method, self.record.path)
            if status is not None:
                self._error(status, None, f"Injected failure {status}")
                return
            token = self.hub._token_from(self.req_headers)
            if token is not None and self.hub.strict_tokens and token not in self.hub.tokens:
                self._error(401, None, "Invalid credentials in Authorization header")
                return
            self._route(method, token)
        except _Abort:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _route(self, method: str, token: str | None) -> None:
        path = self.raw_path
        if path == "/api/models" and method == "GET":
            return self._list_models(token)
        if path == "/api/whoami-v2" and method == "GET":
            return self._whoami(token)
        if path == "/api/agent-harnesses" and method == "GET":
            return self._json({"standardEnvVars": [], "harnesses": {}})
        if path.startswith("/api/models/") and method == "GET":
            return self._model_api(path[len("/api/models/") :], token)
        if "/resolve/" in path and method in ("GET", "HEAD"):
            return self._resolve(path, token)
        self._error(404, None, f"Not found: {path}")

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.record.status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.method != "HEAD" and body:
            self.wfile.write(body)
            self.record.bytes_sent += len(body)

    def _json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self._send(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)

    def _error(
        self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None
    ) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        headers.update(extra or {})
        self._json({"error": message}, status=status, headers=headers)

    def _flag(self, name: str) -> bool:
        return self.query.get(name, [""])[-1].lower() in ("1", "true")

    # -- repo lookup -----------------------------------------------------------------------------------------

    def _find_repo(self, repo_id: str, token: str | None) -> Repo | None:
        """The repo, or None after answering 404/401 RepoNotFound (unknown, or private without access)."""
        with self.hub._lock:
            repo = self.hub.repos.get(repo_id)
        if repo is None or not self.hub._visible(repo, token):
            status = 401 if repo is not None and token is None else 404
            self._error(status, "RepoNotFound", "Repository not found")
            return None
        return repo

    def _check_revision(self, repo: Repo, revision: str) -> bool:
        if revision in ("main", repo.sha):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", {"X-Repo-Commit": repo.sha})
        return False

    # -- /api ------------------------------------------------------------------------------------------------

    def _list_models(self, token: str | None) -> None:
        q = self.query
        with self.hub._lock:
            repos = [r for r in self.hub.repos.values() if self.hub._visible(r, token)]
        search = q.get("search", [""])[-1].lower()
        if search:
            repos = [r for r in repos if search in r.repo_id.lower()]
        author = q.get("author", [""])[-1]
        if author:
            repos = [r for r in repos if r.author == author]
        for flt in q.get("filter", []):
            for tag in flt.split(","):
                if tag:
                    repos = [r for r in repos if tag in r.tags or (tag == "gguf" and r.has_gguf())]
        if "gated" in q:
            want = self._flag("gated")
            repos = [r for r in repos if bool(r.gated) == want]
        sort = q.get("sort", [""])[-1]
        keys = {
            "downloads": lambda r: r.downloads,
            "likes": lambda r: r.likes,
            "lastModified": lambda r: r.last_modified,
            "trendingScore": lambda r: r.trending_score,
            "createdAt": lambda r: r.created_at,
            "id": lambda r: r.repo_id,
        }
        if sort in keys:
            repos.sort(key=lambda r: r.repo_id)  # stable tie-break
            repos.sort(key=keys[sort], reverse=q.get("direction", ["-1"])[-1] != "1")
        limit = int(q.get("limit", ["0"])[-1] or 0)
        cursor = int(q.get("cursor", ["0"])[-1] or 0)
        page_size = min(limit or self.hub.page_size, self.hub.page_size)
        page = repos[cursor : cursor + page_size]
        with_siblings = self._flag("full") or "siblings" in q.get("expand", []) + q.get("expand[]", [])
        items = [r.info(blobs=False) if with_siblings else r.summary() for r in page]
        headers = {}
        if cursor + page_size < len(repos):
            params = [(k, v) for k, vs in q.items() if k != "cursor" for v in vs]
            params.append(("cursor", str(cursor + page_size)))
            qs = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params)
            headers["Link"] = f'<{self.hub.url}/api/models?{qs}>; rel="next"'
        self._json(items, headers=headers)

    def _whoami(self, token: str | None) -> None:
        if token is None or token not in self.hub.tokens:
            self._error(401, None, "Invalid credentials in Authorization header")
            return
        self._json(
            {
                "type": "user",
                "name": "tester",
                "fullname": "Test User",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "read"}},
            }
        )

    def _model_api(self, rest: str, token: str | None) -> None:
        rest = unquote(rest)
        sub, revision, tail = "info", "main", ""
        for marker in ("/revision/", "/tree/"):
            if marker in rest:
                rest, after = rest.split(marker, 1)
                sub = marker.strip("/")
                revision, _, tail = after.partition("/")
                break
        repo = self._find_repo(rest, token)
        if repo is None or not self._check_revision(repo, revision):
            return
        if sub == "tree":
            return self._tree(repo, tail.strip("/"))
        self._json(repo.info(blobs=self._flag("blobs")))

    def _tree(self, repo: Repo, folder: str) -> None:
        recursive = self._flag("recursive")
        prefix = f"{folder}/" if folder else ""
        entries: dict[str, dict[str, Any]] = {}
        for f in repo.files.values():
            if not f.name.startswith(prefix):
                continue
            rel = f.name[len(prefix) :]
            parts = rel.split("/")
            for i in range(1, len(parts)):  # parent directories
                if not recursive and i > 1:
                    break
                d = prefix + "/".join(parts[:i])
                entries[d] = {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "path": d}
            if recursive or len(parts) == 1:
                entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.name}
                if f.lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
                entries[f.name] = entry
        if folder and not entries:
            self._error(404, "EntryNotFound", f"{folder} does not exist on {repo.sha}")
            return
        self._json([entries[k] for k in sorted(entries)])

    # -- /resolve --------------------------------------------------------------------------------------------

    def _resolve(self, path: str, token: str | None) -> None:
        repo_part, _, rest = path.lstrip("/").partition("/resolve/")
        revision, _, filename = rest.partition("/")
        repo_id, revision, filename = unquote(repo_part), unquote(revision), unquote(filename)
        repo = self._find_repo(repo_id, token)
        if repo is None or not self._check_revision(repo, revision):
            return
        f = repo.files.get(filename)
        if f is None:
            self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": repo.sha})
            return
        if repo.gated and not self.hub._authorized(token, repo_id):
            if token is None:
                status = 401
                msg = (
                    f"Access to model {repo_id} is restricted. You must have access to it and be authenticated"
                    " to access it. Please log in."
                )
            else:
                status = 403
                msg = f"Access to model {repo_id} is restricted and you are not in the authorized list."
            self._error(status, "GatedRepo", msg, {"X-Repo-Commit": repo.sha})
            return
        self._send_file(repo, f)

    def _send_file(self, repo: Repo, f: HubFile) -> None:
        key = (repo.repo_id, f.name)
        base = f.name.rsplit("/", 1)[-1].encode("ascii", "replace").decode().replace('"', "_")
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{f.etag}"',
            "X-Repo-Commit": repo.sha,
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(base)}; filename=\"{base}\";",
        }
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(f.size)
        start, end, status = 0, f.size - 1, 200
        range_header = self.req_headers.get("range")
        if range_header:
            parsed = _parse_range(range_header, f.size)
            if parsed is None:
                self._send(416, {**headers, "Content-Range": f"bytes */{f.size}"})
                return
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
        headers["Content-Length"] = str(end - start + 1)
        if self.method == "HEAD":
            self._send(status, headers)
            return
        self.record.status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        body = self.hub._served_bytes(key, f.data)[start : end + 1]
        cut = self.hub._take_interrupt(key)
        hold = self.hub._take_hold(key)
        self._write_body(body, key, cut, hold)
        if cut is not None and cut < len(body):
            raise _Abort()

    def _write_body(self, body: bytes, key: tuple[str, str], cut: int | None, hold: Hold | None) -> None:
        limit = len(body) if cut is None else min(cut, len(body))
        pos = 0
        while pos < limit:
            if self.hub._stopping.is_set():
                raise _Abort()
            if hold is not None and pos >= hold.after_bytes:
                self._wait_hold(hold)
                hold = None
            boundary = limit if hold is None else min(limit, hold.after_bytes)
            rate = self.hub._rate(key)
            step = _WRITE_CHUNK if not rate else max(1, min(_WRITE_CHUNK, int(rate / 20)))
            chunk = body[pos : min(boundary, pos + step)]
            self.wfile.write(chunk)
            pos += len(chunk)
            self.record.bytes_sent = pos
            if rate:
                time.sleep(len(chunk) / rate)
        if hold is not None:
            hold.reached.set()  # the response ended before the hold point: nothing to hold back

    def _wait_hold(self, hold: Hold) -> None:
        hold.reached.set()
        while not hold._released.wait(0.05):
            if self.hub._stopping.is_set():
                raise _Abort()


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive for a single `bytes=` range, None when unsatisfiable or malformed."""
    unit, _, spec = value.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":  # suffix range: the last N bytes
            n = int(last)
            if n <= 0:
                return None
            return max(0, size - n), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def point_huggingface_hub_at(monkeypatch: Any, url: str, home: Any, *, etag_timeout: int = 2) -> None:
    """Make huggingface_hub (already imported) talk to `url` only, with no token and no state from this machine.

    `monkeypatch` is pytest's fixture; `home` a fresh directory used as HF_HOME. See the module docstring for why
    both the environment and `huggingface_hub.constants` are patched.
    """
    import os

    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    home = os.fspath(home)
    url = url.rstrip("/")
    env = {
        "HF_ENDPOINT": url,
        "HF_HOME": home,
        "HF_HUB_CACHE": os.path.join(home, "hub"),
        "HF_TOKEN_PATH": os.path.join(home, "token"),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_ETAG_TIMEOUT": str(etag_timeout),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_OIDC_RESOURCE",
        "HF_HUB_ENABLE_HF_TRANSFER",
        "TRANSFORMERS_OFFLINE",
    ):
        monkeypatch.delenv(name, raising=False)

    patches = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": home,
        "HF_HUB_CACHE": env["HF_HUB_CACHE"],
        "HF_TOKEN_PATH": env["HF_TOKEN_PATH"],
        "HF_STORED_TOKENS_PATH": os.path.join(home, "stored_tokens"),
        "AGENT_HARNESSES_PATH": os.path.join(home, ".agent_harnesses.json"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": True,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
        "HF_HUB_ETAG_TIMEOUT": etag_timeout,
    }
    for name, value in patches.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    # never fetch the agent registry (it is looked up when telemetry is on and cached per process)
    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)
