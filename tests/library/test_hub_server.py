"""The local Hub stand-in (tests/hub_server.py), exercised through the real huggingface_hub client (no mocks).

These tests also pin down how huggingface_hub (2.4.0) behaves on interrupted, paused, gated and offline downloads,
which the app's downloader relies on.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, constants, file_download, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import _http
from tqdm import tqdm

from tests.hub_server import HubServer

REPO = "org/tiny-GGUF"
GGUF = "tiny.Q4_K_M.gguf"
CHUNK = 4096  # huggingface_hub's read size (constants.DOWNLOAD_CHUNK_SIZE, 10 MiB by default) in these tests


def payload(n: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (n // len(block) + 1))[:n] if seed else os.urandom(n)


@pytest.fixture
def gguf_repo(hub: HubServer):
    data = payload(100_000)
    repo = hub.add_repo(REPO, {GGUF: data, "README.md": b"# tiny\n"}, tags=["gguf"], downloads=10)
    return repo, data


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read downloads in 4 KiB chunks so progress callbacks (tqdm updates) and resumes happen inside small files."""
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record instead of doing huggingface_hub's retry waits (1 s in http_get, 1-2-4-8-8 s backoff in _http)."""
    waited: list[float] = []
    fake_time = types.SimpleNamespace(sleep=waited.append)
    monkeypatch.setattr(file_download, "time", fake_time)
    monkeypatch.setattr(_http, "time", fake_time)
    return waited


def download_dir_files(local_dir: Path) -> list[str]:
    folder = local_dir / ".cache" / "huggingface" / "download"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


class CountingBar(tqdm):
    """A vanilla-tqdm `tqdm_class` that stays silent and counts bytes; `stop_after` makes update() raise."""

    stop_after: int | None = None
    seen: list[int] = []

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)
        self.bytes = kwargs.get("initial", 0) or 0

    def update(self, n=1):
        self.bytes += n
        type(self).seen.append(self.bytes)
        if self.stop_after is not None and self.bytes >= self.stop_after:
            raise PausedError(self.bytes)


class PausedError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------------
# listing and metadata


def test_list_models_search_sort_limit(hub: HubServer) -> None:
    hub.add_repo(
        "alice/llama-GGUF",
        {"a.gguf": b"x" * 10},
        downloads=5,
        likes=50,
        last_modified="2024-03-01T00:00:00.000Z",
    )
    hub.add_repo(
        "bob/llama-tiny",
        {"model.safetensors": b"y"},
        downloads=500,
        likes=1,
        last_modified="2024-05-01T00:00:00.000Z",
    )
    hub.add_repo(
        "bob/Mistral-GGUF", {"m.gguf": b"z"}, downloads=50, likes=5, tags=["gguf", "text-generation"]
    )
    hub.add_repo("carol/qwen", {"README.md": b"q"}, downloads=1, tags=["gguf"], trending_score=99)
    api = HfApi(endpoint=hub.url)

    ids = [m.id for m in api.list_models(search="LLAMA", sort="downloads")]
    assert ids == ["bob/llama-tiny", "alice/llama-GGUF"]
    assert [m.id for m in api.list_models(sort="likes", limit=2)] == ["alice/llama-GGUF", "bob/Mistral-GGUF"]
    assert [m.id for m in api.list_models(sort="last_modified", limit=1)] == ["bob/llama-tiny"]
    assert [m.id for m in api.list_models(sort="trending_score", limit=1)] == ["carol/qwen"]
    assert [m.id for m in api.list_models(author="bob", sort="downloads")] == [
        "bob/llama-tiny",
        "bob/Mistral-GGUF",
    ]
    # filter="gguf": the tag, or a .gguf file in the repo
    gguf = {m.id for m in api.list_models(filter="gguf")}
    assert gguf == {"alice/llama-GGUF", "bob/Mistral-GGUF", "carol/qwen"}
    assert [m.id for m in api.list_models(filter=["gguf", "text-generation"])] == ["bob/Mistral-GGUF"]
    # unknown parameters (expand=...) are accepted; the listing carries the usual summary fields
    (m,) = api.list_models(search="mistral", expand=["downloads", "likes", "gguf"])
    assert (m.downloads, m.likes, m.author, m.siblings) == (50, 5, "bob", None)
    assert m.last_modified is not None
    request = hub.requests[-1]
    assert request.path == "/api/models" and request.query["search"] == ["mistral"]
    assert "authorization" not in request.headers  # no token from this machine leaks in


def test_list_models_paginates_with_link_header(hub: HubServer) -> None:
    hub.page_size = 2
    for i in range(5):
        hub.add_repo(f"org/m{i}", {"f.gguf": b"x"}, downloads=i)
    api = HfApi(endpoint=hub.url)
    assert [m.id for m in api.list_models(sort="downloads")] == [f"org/m{i}" for i in (4, 3, 2, 1, 0)]
    pages = [r for r in hub.requests if r.path == "/api/models"]
    assert [r.query.get("cursor") for r in pages] == [None, ["2"], ["4"]]
    hub.clear_requests()
    assert len(list(api.list_models(sort="downloads", limit=3))) == 3


def test_model_info_files_metadata(hub: HubServer, gguf_repo) -> None:
    repo, data = gguf_repo
    api = HfApi(endpoint=hub.url)
    info = api.model_info(REPO, files_metadata=True)
    assert info.sha == repo.sha and re.fullmatch(r"[0-9a-f]{40}", info.sha)
    assert info.gated is False and info.tags == ["gguf"] and info.downloads == 10
    files = {s.rfilename: s for s in info.siblings}
    assert files[GGUF].size == len(data)
    assert files[GGUF].lfs.sha256 == hashlib.sha256(data).hexdigest()
    assert files[GGUF].lfs.size == len(data) and files[GGUF].lfs.pointer_size > 100
    assert files["README.md"].size == 7 and files["README.md"].lfs is None
    assert files["README.md"].blob_id == hub.file(REPO, "README.md").blob_id
    assert hub.requests[-1].query == {"blobs": ["true"]}

    # without files_metadata: names only; at a commit sha: same info
    assert {s.size for s in api.model_info(REPO).siblings} == {None}
    assert api.model_info(REPO, revision=repo.sha).sha == repo.sha
    # deterministic commit sha
    assert hub.add_repo(REPO, {GGUF: data, "README.md": b"# tiny\n"}).sha == repo.sha

    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="v9")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/missing")


def test_list_repo_tree_and_whoami(hub: HubServer, gguf_repo) -> None:
    hub.add_repo(
        "org/split", {"q4/a-00001-of-00002.gguf": b"a", "q4/a-00002-of-00002.gguf": b"b", "x.md": b"c"}
    )
    api = HfApi(endpoint=hub.url)
    assert sorted(api.list_repo_files("org/split")) == [
        "q4/a-00001-of-00002.gguf",
        "q4/a-00002-of-00002.gguf",
        "x.md",
    ]
    top = {e.path: type(e).__name__ for e in api.list_repo_tree("org/split")}
    assert top == {"q4": "RepoFolder", "x.md": "RepoFile"}
    (entry,) = [e for e in api.list_repo_tree(REPO) if e.path == GGUF]
    assert entry.lfs.sha256 == hub.file(REPO, GGUF).sha256

    hub.add_token("hf_good")
    assert api.whoami(token="hf_good")["name"] == "tester"
    with pytest.raises(HfHubHTTPError):
        api.whoami(token="hf_bad")


# ---------------------------------------------------------------------------------------------------------
# downloads


def test_download_to_local_dir_gets_identical_bytes(hub: HubServer, gguf_repo, tmp_path: Path) -> None:
    repo, data = gguf_repo
    path = hf_hub_download(REPO, GGUF, local_dir=tmp_path, endpoint=hub.url)
    assert Path(path) == tmp_path / GGUF and Path(path).read_bytes() == data
    # huggingface_hub keeps commit + etag (sha256 for LFS files) next to the download
    meta = (tmp_path / ".cache/huggingface/download" / f"{GGUF}.metadata").read_text().split("\n")
    assert meta[:2] == [repo.sha, repo.files[GGUF].sha256]
    assert download_dir_files(tmp_path) == [f"{GGUF}.lock", f"{GGUF}.metadata"]

    head, get = hub.file_requests(REPO, GGUF, method=None)
    assert (head.method, head.status, get.method, get.status, get.range) == ("HEAD", 200, "GET", 200, None)
    assert "authorization" not in get.headers

    # a second call only checks the HEAD (etag unchanged) and downloads nothing
    hub.clear_requests()
    assert hf_hub_download(REPO, GGUF, local_dir=tmp_path, endpoint=hub.url) == path
    assert [r.method for r in hub.requests] == ["HEAD"]

    # non-LFS file, and the default cache (HF_HUB_CACHE under the fixture's HF_HOME, never the user's cache)
    readme = hf_hub_download(REPO, "README.md", endpoint=hub.url)
    assert Path(readme).read_bytes() == b"# tiny\n"
    assert Path(readme).is_relative_to(constants.HF_HUB_CACHE) and "hf_home" in readme


def test_missing_file_and_repo(hub: HubServer, gguf_repo, tmp_path: Path) -> None:
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "nope.gguf", local_dir=tmp_path, endpoint=hub.url)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/nope", GGUF, local_dir=tmp_path, endpoint=hub.url)
    assert hub.requests[-1].status == 404


def test_interrupted_download_is_retried_inside_the_call_with_range(
    hub: HubServer, gguf_repo, tmp_path: Path, small_chunks, sleeps
) -> None:
    _, data = gguf_repo
    hub.interrupt(REPO, GGUF, after_bytes=[30_000, 10_000])
    path = hf_hub_download(REPO, GGUF, local_dir=tmp_path, endpoint=hub.url)
    assert Path(path).read_bytes() == data

    gets = hub.file_requests(REPO, GGUF)
    assert [g.status for g in gets] == [200, 206, 206]
    # Resumes from what it has written: whole chunks only (a partly received chunk is dropped and fetched again)
    first = 30_000 // CHUNK * CHUNK
    second = first + 10_000 // CHUNK * CHUNK
    assert [g.range for g in gets] == [None, f"bytes={first}-", f"bytes={second}-"]
    assert [g.bytes_sent for g in gets] == [30_000, 10_000, len(data) - second]
    assert sleeps == [1, 1]  # http_get waits 1 s before each resume
    assert download_dir_files(tmp_path) == [f"{GGUF}.lock", f"{GGUF}.metadata"]


def test_interrupt_without_progress_gives_up_after_five_retries(
    hub: HubServer, gguf_repo, tmp_path: Path, small_chunks, sleeps
) -> None:
    hub.interrupt(REPO, GGUF, after_bytes=[0] * 6)
    with pytest.raises(httpx2.RemoteProtocolError):
        hf_hub_download(REPO, GGUF, local_dir=tmp_path, endpoint=hub.url)
    assert len(hub.file_requests(REPO, GGUF)) == 6 and sleeps == [1] * 5
    assert not (tmp_path / GGUF).exists()
    assert download_dir_files(tmp_path) == [f"{GGUF}.lock"]  # the partial file is deleted


def test_exception_from_tqdm_update_deletes_partial_file_so_next_call_starts_over(
    hub: HubServer, gguf_repo, tmp_path: Path, small_chunks
) -> None:
    """Pausing by raising from a custom tqdm_class's update(): the exception propagates unchanged, but the
    process-unique `.incomplete` file is deleted, so the next call downloads from byte 0 (no Range)."""
    _, data = gguf_repo
    bar = type("PauseBar", (CountingBar,), {"stop_after": 50_000, "seen": []})
    with pytest.raises(PausedError):
        hf_hub_download(REPO, GGUF, local_dir=tmp_path, endpoint=hub.url, tqdm_class=bar)
    assert bar.seen[-1] == 13 * CHUNK  # raised at the first update past 50 000 bytes
    assert not (tmp_path / GGUF).exists()
    assert download_dir_files(tmp_path) == [f"{GGUF}.lock"]

    hub.clear_requests()
    path = hf_hub_download(REPO, GGUF, local_dir=tmp_path, endpoint=hub.url)
    assert Path(path).read_bytes() == data
    (get,) = hub.file_requests(REPO, GGUF)
    assert get.range is None and get.status == 200 and get.bytes_sent == len(data)


def test_partial_file_location_while_downloading(
    hub: HubServer, gguf_repo, tmp_path: Path, small_chunks
) -> None:
    """Hold the transfer mid-way to see the partial file: local_dir/.cache/huggingface/download/
    `<hash>.<sha256>.<8 hex>.incomplete` (unique per call); then cancel via tqdm and it is gone."""
    repo, _ = gguf_repo
    hold = hub.hold(REPO, GGUF, after_bytes=10 * CHUNK)
    bar = type("CancelBar", (CountingBar,), {"stop_after": None, "seen": []})
    errors: list[BaseException] = []

    def run() -> None:
        try:
            hf_hub_download(REPO, GGUF, local_dir=tmp_path, endpoint=hub.url, tqdm_class=bar)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert hold.reached.wait(5)
        deadline = time.monotonic() + 5
        while (not bar.seen or bar.seen[-1] < 10 * CHUNK) and time.monotonic() < deadline:
            time.sleep(0.01)
        (partial,) = [n for n in download_dir_files(tmp_path) if n.endswith(".incomplete")]
        assert re.fullmatch(rf"[\w=-]+\.{repo.files[GGUF].sha256}\.[0-9a-f]{{8}}\.incomplete", partial)
        size = (tmp_path / ".cache/huggingface/download" / partial).stat().st_size
        assert 0 < size <= 10 * CHUNK  # what has reached the disk so far (the file is written buffered)
        bar.stop_after = 0  # the next update() raises
    finally:
        hold.release()
        worker.join(5)
    assert [type(e) for e in errors] == [PausedError]
    assert download_dir_files(tmp_path) == [f"{GGUF}.lock"]


def test_corrupted_bytes_are_not_detected_by_huggingface_hub(
    hub: HubServer, gguf_repo, tmp_path: Path
) -> None:
    repo, data = gguf_repo
    hub.corrupt(REPO, GGUF)
    path = hf_hub_download(REPO, GGUF, local_dir=tmp_path, endpoint=hub.url)
    got = Path(path).read_bytes()
    assert len(got) == len(data) and got != data
    assert sum(a != b for a, b in zip(got, data, strict=True)) == 1
    assert hashlib.sha256(got).hexdigest() != repo.files[GGUF].sha256  # the caller has to verify the sha256


def test_throttle_and_server_error_retry(hub: HubServer, gguf_repo, tmp_path: Path, sleeps) -> None:
    _, data = gguf_repo
    hub.throttle(400_000, REPO, GGUF)  # 100 kB at 400 kB/s
    start = time.monotonic()
    hf_hub_download(REPO, GGUF, local_dir=tmp_path / "a", endpoint=hub.url)
    assert 0.2 < time.monotonic() - start < 3
    hub.throttle(None, REPO, GGUF)

    # a 5xx on the metadata HEAD: huggingface_hub asks again (with backoff enabled) and succeeds
    hub.clear_requests()
    hub.fail_next(503, 1, method="HEAD")
    path = hf_hub_download(REPO, GGUF, local_dir=tmp_path / "b", endpoint=hub.url)
    assert Path(path).read_bytes() == data
    assert [(r.method, r.status) for r in hub.requests] == [("HEAD", 503), ("HEAD", 200), ("GET", 200)]

    # a 5xx on the GET itself is not retried
    hub.fail_next(500, 1, method="GET")
    with pytest.raises(HfHubHTTPError) as err:
        hf_hub_download(REPO, GGUF, local_dir=tmp_path / "c", endpoint=hub.url)
    assert err.value.response.status_code == 500
    assert sleeps == []


# ---------------------------------------------------------------------------------------------------------
# access control


def test_gated_repo_needs_an_accepted_token(hub: HubServer, tmp_path: Path) -> None:
    data = payload(5000, seed=1)
    hub.add_repo("meta/gated-GGUF", {"g.gguf": data}, gated=True)
    hub.add_token("hf_ok")
    api = HfApi(endpoint=hub.url)

    info = api.model_info("meta/gated-GGUF", files_metadata=True)  # metadata is public, like on the real Hub
    assert info.gated == "auto" and info.siblings[0].lfs.sha256 == hashlib.sha256(data).hexdigest()

    with pytest.raises(GatedRepoError) as err:
        hf_hub_download("meta/gated-GGUF", "g.gguf", local_dir=tmp_path, endpoint=hub.url)
    assert err.value.response.status_code == 401
    assert isinstance(err.value, RepositoryNotFoundError)  # GatedRepoError subclasses it: catch Gated first
    with pytest.raises(GatedRepoError) as err:
        hf_hub_download("meta/gated-GGUF", "g.gguf", local_dir=tmp_path, endpoint=hub.url, token="hf_wrong")
    assert err.value.response.status_code == 403
    assert not (tmp_path / "g.gguf").exists()

    path = hf_hub_download("meta/gated-GGUF", "g.gguf", local_dir=tmp_path, endpoint=hub.url, token="hf_ok")
    assert Path(path).read_bytes() == data
    assert hub.file_requests("meta/gated-GGUF", "g.gguf")[-1].headers["authorization"] == "Bearer hf_ok"

    # a token limited to other repos is refused too
    hub.add_token("hf_other", repos=["org/else"])
    with pytest.raises(GatedRepoError):
        hf_hub_download(
            "meta/gated-GGUF", "g.gguf", local_dir=tmp_path / "x", endpoint=hub.url, token="hf_other"
        )


def test_private_repo_is_hidden_without_token(hub: HubServer) -> None:
    hub.add_repo("me/secret", {"s.gguf": b"s"}, private=True)
    hub.add_token("hf_me")
    api = HfApi(endpoint=hub.url)
    assert [m.id for m in api.list_models()] == []
    assert [m.id for m in api.list_models(token="hf_me")] == ["me/secret"]
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("me/secret")
    assert api.model_info("me/secret", token="hf_me").private is True


# ---------------------------------------------------------------------------------------------------------
# server down


def test_stopped_server(hub: HubServer, gguf_repo, tmp_path: Path, sleeps) -> None:
    _, data = gguf_repo
    api = HfApi(endpoint=hub.url)
    api.model_info(REPO)  # leaves a kept-alive connection in huggingface_hub's pool
    hf_hub_download(REPO, GGUF, local_dir=tmp_path / "have", endpoint=hub.url)
    hub.stop()

    # model_info: no retry at all, httpx2.ConnectError at once
    start = time.monotonic()
    with pytest.raises(httpx2.ConnectError):
        api.model_info(REPO)
    assert time.monotonic() - start < 1

    # list_models: http_backoff retries 5 times, waiting 1+2+4+8+8 = 23 s in real life, then ConnectError
    with pytest.raises(httpx2.ConnectError):
        list(api.list_models(search="tiny"))
    assert sleeps == [1, 2, 4, 8, 8]

    # hf_hub_download with nothing local: HEAD fails, is retried with the same backoff, then LocalEntryNotFoundError
    sleeps.clear()
    with pytest.raises(LocalEntryNotFoundError) as err:
        hf_hub_download(REPO, GGUF, local_dir=tmp_path / "new", endpoint=hub.url)
    assert isinstance(err.value.__cause__, httpx2.ConnectError) and sleeps == [1, 2, 4, 8, 8]

    # ... but with the file already in local_dir it returns the local copy straight away
    sleeps.clear()
    path = hf_hub_download(REPO, GGUF, local_dir=tmp_path / "have", endpoint=hub.url)
    assert Path(path).read_bytes() == data and sleeps == []

    # back on the same port
    hub.start()
    assert api.model_info(REPO).id == REPO


def test_offline_mode(
    hub: HubServer, gguf_repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps
) -> None:
    """HF_HUB_OFFLINE (constants.HF_HUB_OFFLINE once imported): nothing reaches the server, no retry waits."""
    hf_hub_download(REPO, GGUF, local_dir=tmp_path / "have", endpoint=hub.url)
    hub.clear_requests()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    api = HfApi(endpoint=hub.url)
    with pytest.raises(OfflineModeIsEnabled):  # a builtin ConnectionError, not an httpx2 error
        api.model_info(REPO)
    with pytest.raises(LocalEntryNotFoundError) as err:
        hf_hub_download(REPO, GGUF, local_dir=tmp_path / "new", endpoint=hub.url)
    assert isinstance(err.value.__cause__, OfflineModeIsEnabled)
    assert Path(hf_hub_download(REPO, GGUF, local_dir=tmp_path / "have", endpoint=hub.url)).is_file()
    assert hub.requests == [] and sleeps == []


def test_server_stopping_mid_download(
    hub: HubServer, gguf_repo, tmp_path: Path, small_chunks, sleeps
) -> None:
    """The connection drops mid-body. If the client sees the close as an incomplete body (RemoteProtocolError),
    http_get retries (1 s apart) 5 times against the dead server and then raises httpx2.ConnectError; if the
    socket was reset under it (ReadError, which http_get does not retry — it depends on timing), that comes
    out at once. Either way straight out of hf_hub_download, and the partial file is deleted."""
    hold = hub.hold(REPO, GGUF, after_bytes=5 * CHUNK)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            hf_hub_download(REPO, GGUF, local_dir=tmp_path, endpoint=hub.url)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    assert hold.reached.wait(5)
    start = time.monotonic()
    hub.stop()
    assert time.monotonic() - start < 1
    worker.join(5)
    outcome = ([type(e) for e in errors], sleeps)
    assert outcome in (([httpx2.ConnectError], [1] * 5), ([httpx2.ReadError], [])), outcome
    assert download_dir_files(tmp_path) == [f"{GGUF}.lock"]


# ---------------------------------------------------------------------------------------------------------
# the server on its own (plain urllib)


def test_resolve_headers_and_ranges(hub: HubServer, gguf_repo) -> None:
    repo, data = gguf_repo
    url = f"{hub.url}/{REPO}/resolve/main/{GGUF}"

    def fetch(method: str = "GET", range_: str | None = None):
        req = urllib.request.Request(url, method=method, headers={"Range": range_} if range_ else {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    status, headers, body = fetch("HEAD")
    assert (status, body) == (200, b"")
    sha = repo.files[GGUF].sha256
    assert headers["X-Repo-Commit"] == repo.sha and headers["ETag"] == headers["X-Linked-Etag"] == f'"{sha}"'
    assert headers["X-Linked-Size"] == headers["Content-Length"] == str(len(data))
    assert headers["Accept-Ranges"] == "bytes"
    assert fetch("GET", "bytes=10-19")[2] == data[10:20]
    status, headers, body = fetch("GET", "bytes=99990-")
    assert (status, body, headers["Content-Range"]) == (206, data[99990:], f"bytes 99990-99999/{len(data)}")
    assert fetch("GET", "bytes=-5")[2] == data[-5:]
    status, headers, _ = fetch("GET", f"bytes={len(data)}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"

    req = urllib.request.Request(f"{hub.url}/{REPO}/resolve/main/README.md", method="HEAD")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert (
            r.headers["ETag"] == f'"{repo.files["README.md"].blob_id}"' and "X-Linked-Etag" not in r.headers
        )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{hub.url}/{REPO}/resolve/main/missing.bin", timeout=5)
    assert err.value.code == 404 and err.value.headers["X-Error-Code"] == "EntryNotFound"
