"""Model downloads from the Hugging Face Hub: a queue with progress, pause/resume, cancel and verification.

Qt-free: the app wraps `DownloadManager` in a QObject and turns its callback into a signal.

How a download goes
    1. `enqueue` checks the disk space and that the file is not already in the library, and writes the job
       to ``downloads.json`` (so a restart picks it up again).
    2. A worker thread asks the Hub for the file's metadata (huggingface_hub's ``get_hf_file_metadata``:
       size, commit, the CDN location) and streams the body with huggingface_hub's ``http_get`` into
       ``<staging>/<job>/<file>.part``, appending from the bytes already there with an HTTP ``Range``.
       ``http_get`` itself retries a dropped or stalled connection a few times, resuming each time;
       on top of that a job whose connection keeps failing is retried with a growing pause, and a
       paused, failed or interrupted job (app closed, machine asleep) resumes from its ``.part`` file.
    3. Each finished part is hashed and compared with the Hub's sha256 (the LFS object id). A mismatch
       deletes the part and fails the job: a corrupted file never reaches the library.
    4. The verified files are moved into ``<library>/<publisher>/<repo>/`` (LM Studio's layout), the
       first part is read as GGUF, and for a draft the tokenizer compatibility with its target is checked
       from the metadata, before first use.

huggingface_hub's own ``hf_hub_download`` is not used for the body: it deletes its partial file when a
download is interrupted, so it cannot resume across pauses or restarts.

Access tokens are passed per request and never logged or written to ``downloads.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlparse

from app.engine.units import format_bytes
from app.library.hub import HubError, HubFile, hub_error

log = logging.getLogger(__name__)

__all__ = [
    "CANCELLED",
    "DONE",
    "DOWNLOADING",
    "DownloadError",
    "DownloadJob",
    "DownloadManager",
    "FAILED",
    "PAUSED",
    "QUEUED",
    "VERIFYING",
    "destination_folder",
]

QUEUED = "queued"
DOWNLOADING = "downloading"
VERIFYING = "verifying"
PAUSED = "paused"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)

STATE_FILE = "downloads.json"
DISK_MARGIN = 64 * 1024 * 1024  # keep this much free beyond the download
PROGRESS_INTERVAL = 0.2  # seconds between progress events of one job
RETRY_DELAYS = (2.0, 5.0, 15.0, 30.0, 60.0)  # after huggingface_hub's own retries gave up
HASH_CHUNK = 4 * 1024 * 1024
# huggingface_hub's http_get reads the body in chunks of constants.DOWNLOAD_CHUNK_SIZE (10 MiB) and reports
# progress, resumes and lets us stop only at chunk boundaries: 256 KiB makes progress smooth on slow lines,
# pause/cancel prompt and a dropped connection lose at most that much.
DOWNLOAD_CHUNK = 256 * 1024


def _use_small_chunks() -> None:
    """Once, when this module is imported (not per download: other code may set it too, e.g. tests)."""
    from huggingface_hub import constants

    constants.DOWNLOAD_CHUNK_SIZE = DOWNLOAD_CHUNK


_use_small_chunks()


class DownloadError(Exception):
    """A download cannot start or failed; ``str(err)`` is one line for people."""


class _Stop(BaseException):
    """Raised inside the download loop to stop it (pause, cancel, shutdown). BaseException: nothing in
    huggingface_hub's retry code may swallow it."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass
class DownloadJob:
    """One queued download (all parts of one model). Snapshots of it are handed to the UI."""

    id: str
    repo_id: str
    revision: str
    files: list[dict]  # [{"filename", "size", "sha256"}] in part order
    quant: str | None
    dest_dir: str
    state: str = QUEUED
    downloaded: int = 0  # bytes on disk, all parts
    total: int = 0  # bytes, all parts (0 if the Hub did not say)
    speed: float = 0.0  # bytes/s, smoothed
    message: str = ""  # what is happening now ("retrying in 5 s", "verifying 2 of 3")
    error: str | None = None
    purpose: str = "model"  # "model" or "draft"
    target_path: str | None = None  # for a draft: the model it is meant to draft for
    compatible: bool | None = None  # for a draft: the metadata check after download
    compat_reason: str = ""
    result_path: str | None = None  # the first file in the library, once done
    created: float = field(default_factory=time.time)
    last_bytes_at: float = 0.0  # time.monotonic() of the last received bytes (not saved)

    @property
    def name(self) -> str:
        first = self.files[0]["filename"].rsplit("/", 1)[-1]
        return first if len(self.files) == 1 else f"{first} (+{len(self.files) - 1} parts)"

    @property
    def fraction(self) -> float:
        return min(self.downloaded / self.total, 1.0) if self.total else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current speed; None when unknown."""
        if self.state != DOWNLOADING or self.speed <= 0 or not self.total:
            return None
        return max(self.total - self.downloaded, 0) / self.speed

    def stalled_for(self, now: float | None = None) -> float:
        """Seconds since bytes last arrived while downloading (0 when not downloading)."""
        if self.state != DOWNLOADING or not self.last_bytes_at:
            return 0.0
        return max((now if now is not None else time.monotonic()) - self.last_bytes_at, 0.0)

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("last_bytes_at", None)
        data.pop("speed", None)
        return data

    @classmethod
    def from_json(cls, data: dict) -> DownloadJob | None:
        try:
            known = {f.name for f in fields(cls)}
            job = cls(**{k: v for k, v in data.items() if k in known})
            if not job.files or not all(isinstance(f, dict) and f.get("filename") for f in job.files):
                return None
            return job
        except TypeError:
            return None


def destination_folder(library_dir: Path, repo_id: str) -> Path:
    """Where a repository's files go in the library: <library>/<publisher>/<repo> (LM Studio's layout)."""
    parts = [p for p in repo_id.split("/") if p not in ("", ".", "..")]
    if not parts:
        raise DownloadError(f"invalid repository name {repo_id!r}")
    return library_dir.joinpath(*parts)


def _free_bytes(path: Path) -> int:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def _same_device(a: Path, b: Path) -> bool:
    def existing(p: Path) -> Path:
        while not p.exists() and p != p.parent:
            p = p.parent
        return p

    try:
        return existing(a).stat().st_dev == existing(b).stat().st_dev
    except OSError:
        return False


def sha256_file(path: Path, progress: Callable[[int], None] | None = None, stop: Callable[[], None] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
            if progress is not None:
                progress(len(chunk))
            if stop is not None:
                stop()
    return h.hexdigest()


class DownloadManager:
    """The download queue. Thread-safe; `on_event(job)` is called (from worker threads) with a snapshot of
    a job whenever it changes, progress at most every `PROGRESS_INTERVAL` seconds.

    library_dir: where finished models go. state_dir: ``downloads.json`` and the partial files.
    token: a callable returning the current Hub token (or None); asked for at every request.
    disk_free: bytes free at a path (replaceable for tests of the "disk full" path).
    """

    def __init__(
        self,
        library_dir: Path | str,
        state_dir: Path | str,
        *,
        token: Callable[[], str | None] | None = None,
        endpoint: str | None = None,
        on_event: Callable[[DownloadJob], None] | None = None,
        on_done: Callable[[DownloadJob], None] | None = None,
        max_parallel: int = 1,
        disk_free: Callable[[Path], int] = _free_bytes,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        autostart: bool = True,
    ) -> None:
        self.library_dir = Path(library_dir)
        self.state_dir = Path(state_dir)
        self.staging_dir = self.state_dir / "partial"
        self._token = token or (lambda: None)
        self.endpoint = endpoint
        self._on_event = on_event
        self._on_done = on_done
        self.max_parallel = max(1, int(max_parallel))
        self._disk_free = disk_free
        self.retry_delays = tuple(retry_delays)
        self._lock = threading.RLock()
        self._jobs: dict[str, DownloadJob] = {}
        self._order: list[str] = []
        self._stops: dict[str, str] = {}  # job id → "pause" | "cancel" | "shutdown"
        self._wake: dict[str, threading.Event] = {}  # interrupts a retry pause
        self._threads: dict[str, threading.Thread] = {}
        self._closed = False
        self.load_error: str | None = None
        self._load()
        if autostart:
            self._schedule()

    # -- public API -------------------------------------------------------------------------------------

    def jobs(self) -> list[DownloadJob]:
        with self._lock:
            return [replace(self._jobs[i]) for i in self._order]

    def job(self, job_id: str) -> DownloadJob | None:
        with self._lock:
            j = self._jobs.get(job_id)
            return replace(j) if j else None

    def enqueue(self, hub_file: HubFile, *, purpose: str = "model", target_path: Path | str | None = None,
                library_dir: Path | str | None = None) -> DownloadJob:  # fmt: skip
        """Queue `hub_file` (all its parts). Raises `DownloadError` when it cannot start: already in the
        library or queued, not enough disk space."""
        if purpose not in ("model", "draft"):
            raise DownloadError(f"unknown purpose {purpose!r}")
        dest = destination_folder(Path(library_dir) if library_dir else self.library_dir, hub_file.repo_id)
        files = [{"filename": p.filename, "size": p.size, "sha256": p.sha256} for p in hub_file.parts]
        with self._lock:
            if self._closed:
                raise DownloadError("downloads are shutting down")
            for j in self._jobs.values():
                if j.state not in FINISHED and j.repo_id == hub_file.repo_id and j.files[0]["filename"] == files[0]["filename"]:
                    raise DownloadError(f"{hub_file.display_name} is already in the download queue")
        targets = [dest / f["filename"].rsplit("/", 1)[-1] for f in files]
        if all(t.is_file() for t in targets) and all(
            f["size"] is None or t.stat().st_size == f["size"] for t, f in zip(targets, files, strict=True)
        ):
            raise DownloadError(f"{hub_file.display_name} is already in your library ({targets[0]})")
        total = sum(int(f["size"] or 0) for f in files)
        job = DownloadJob(
            id=uuid.uuid4().hex[:12], repo_id=hub_file.repo_id, revision=hub_file.revision, files=files,
            quant=hub_file.quant, dest_dir=str(dest), total=total, purpose=purpose,
            target_path=str(target_path) if target_path else None,
        )  # fmt: skip
        self._check_space(job)
        with self._lock:
            self._jobs[job.id] = job
            self._order.append(job.id)
            self._save()
        self._emit(job)
        self._schedule()
        return replace(job)

    def pause(self, job_id: str) -> None:
        """Stop downloading `job_id`, keeping what has arrived; `resume` continues from there."""
        with self._lock:
            job = self._require(job_id)
            if job.state in FINISHED or job.state == PAUSED:
                return
            if job_id in self._threads:  # the worker stops at the next chunk (or when a retry pause ends)
                self._stops[job_id] = "pause"
                self._wake_up(job_id)
            job.state, job.message, job.speed = PAUSED, "", 0.0
            self._save()
        self._emit(job)

    def resume(self, job_id: str) -> None:
        """Continue a paused or failed download (from the bytes already on disk)."""
        with self._lock:
            job = self._require(job_id)
            if job.state not in (PAUSED, FAILED):
                return
            if self._stops.get(job_id) == "pause":  # still winding down: it simply carries on
                self._stops.pop(job_id)
                job.state = DOWNLOADING
            else:
                job.state = QUEUED
            job.error, job.message = None, ""
            self._save()
        self._emit(job)
        self._schedule()

    def retry(self, job_id: str) -> None:
        self.resume(job_id)

    def cancel(self, job_id: str) -> None:
        """Stop `job_id` and delete its partial files. A finished download is only taken off the list."""
        with self._lock:
            job = self._require(job_id)
            if job.state in (DONE, CANCELLED):
                return
            job.state, job.message, job.speed = CANCELLED, "cancelled — partial files deleted", 0.0
            job.downloaded = 0
            self._save()
            if job_id in self._threads:  # the worker deletes the partial files when it has stopped
                self._stops[job_id] = "cancel"
                self._wake_up(job_id)
                running = True
            else:
                running = False
        if not running:
            self._remove_staging(job_id)
        self._emit(job)

    def remove(self, job_id: str) -> None:
        """Take a finished (done, failed, cancelled) job off the list; failed ones lose their partial files."""
        with self._lock:
            job = self._require(job_id)
            if job.state not in FINISHED:
                raise DownloadError("stop the download before removing it from the list")
            self._jobs.pop(job_id)
            self._order.remove(job_id)
            self._save()
        self._remove_staging(job_id)

    def clear_finished(self) -> list[str]:
        """Take the done and cancelled jobs off the list; returns their ids (a job restarted meanwhile stays)."""
        with self._lock:
            ids = [i for i in self._order if self._jobs[i].state in (DONE, CANCELLED)]
        removed: list[str] = []
        for i in ids:
            try:
                self.remove(i)
            except DownloadError:
                continue
            removed.append(i)
        return removed

    def partial_files(self, job_id: str) -> list[Path]:
        folder = self.staging_dir / job_id
        return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []

    def wait(self, job_id: str, timeout: float = 30.0, states: tuple[str, ...] = (DONE, FAILED, CANCELLED, PAUSED)) -> DownloadJob:
        """Block until `job_id` reaches one of `states` (tests and the CLI); returns its snapshot."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job is None:
                raise DownloadError(f"no download {job_id}")
            with self._lock:
                running = job_id in self._threads
            if job.state in states and not running:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"download {job_id} still {job.state} after {timeout} s")
            time.sleep(0.02)

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop every running download, keeping partial files (they resume next time). True if all stopped."""
        with self._lock:
            self._closed = True
            running = list(self._threads.items())
            for job_id, _ in running:
                self._stops.setdefault(job_id, "shutdown")
                self._wake_up(job_id)
        deadline = time.monotonic() + timeout
        ok = True
        for _, t in running:
            t.join(max(deadline - time.monotonic(), 0.0))
            ok = ok and not t.is_alive()
        with self._lock:
            self._save()
        return ok

    # -- scheduling ------------------------------------------------------------------------------------

    def _schedule(self) -> None:
        with self._lock:
            if self._closed:
                return
            free = self.max_parallel - len(self._threads)
            for job_id in list(self._order):
                if free <= 0:
                    break
                job = self._jobs[job_id]
                if job.state == QUEUED and job_id not in self._threads:
                    t = threading.Thread(target=self._run, args=(job_id,), name=f"download-{job_id}", daemon=True)
                    self._threads[job_id] = t
                    self._stops.pop(job_id, None)
                    self._wake[job_id] = threading.Event()
                    free -= 1
                    t.start()

    def _run(self, job_id: str) -> None:
        try:
            self._download(job_id)
        except _Stop as stop:
            self._stopped(job_id, stop.why)
        except Exception as e:  # every failure ends as a readable message on the job
            msg = str(e) if isinstance(e, DownloadError | HubError) else str(hub_error(e, what="download"))
            log.info("download %s failed: %s", job_id, msg)
            self._update(job_id, state=FAILED, error=msg, message="", speed=0.0, force=True, save=True)
        finally:
            with self._lock:
                self._threads.pop(job_id, None)
                self._wake.pop(job_id, None)
                stop_why = self._stops.pop(job_id, None)
                job = self._jobs.get(job_id)
            if job is not None and stop_why == "cancel" and job.state != DONE:
                self._stopped(job_id, "cancel")  # cancelled while finishing: delete what is left
            self._schedule()

    def _stopped(self, job_id: str, why: str) -> None:
        if why == "cancel":
            self._remove_staging(job_id)
            self._update(job_id, state=CANCELLED, message="cancelled — partial files deleted", speed=0.0,
                         downloaded=0, force=True, save=True)  # fmt: skip
        elif why == "pause":
            with self._lock:
                job = self._jobs.get(job_id)
                resumed = job is not None and job.state != PAUSED
            if resumed:  # resumed while winding down: the scheduler starts it again
                self._update(job_id, state=QUEUED, force=True, save=True)
            else:
                self._update(job_id, state=PAUSED, message="", speed=0.0, force=True, save=True)
        else:  # shutdown: picked up again at the next start
            self._update(job_id, state=QUEUED, message="will resume when Tandem starts again", speed=0.0,
                         force=True, save=True)  # fmt: skip

    def _check_stop(self, job_id: str) -> None:
        why = self._stops.get(job_id)
        if why:
            raise _Stop(why)

    # -- the download itself ---------------------------------------------------------------------------

    def _download(self, job_id: str) -> None:
        job = self._require(job_id)
        staging = self.staging_dir / job_id
        staging.mkdir(parents=True, exist_ok=True)
        self._update(job_id, state=DOWNLOADING, error=None, message="connecting…", save=True)
        self._check_space(job)
        sizes = [int(f["size"] or 0) for f in job.files]
        for index, f in enumerate(job.files):
            self._check_stop(job_id)
            part = staging / (f["filename"].rsplit("/", 1)[-1] + ".part")
            done_file = staging / (f["filename"].rsplit("/", 1)[-1])
            if done_file.is_file():  # verified in an earlier run
                continue
            before = sum(sizes[:index])
            self._fetch_with_retries(job_id, f, part, before, index)
            self._verify(job_id, f, part, before, index)
            os.replace(part, done_file)
        self._check_stop(job_id)
        self._install(job_id, staging)

    def _fetch_with_retries(self, job_id: str, f: dict, part: Path, before: int, index: int) -> None:
        attempt = 0
        while True:
            self._check_stop(job_id)
            try:
                self._fetch(job_id, f, part, before, index)
                return
            except (_Stop, DownloadError):
                raise
            except Exception as e:
                err = hub_error(e, self._require(job_id).repo_id, "download")
                if err.kind in ("gated", "auth", "not-found") or attempt >= len(self.retry_delays):
                    raise err from e
                delay = self.retry_delays[attempt]
                attempt += 1
                log.info("download %s: %s; retrying in %.0f s", job_id, err, delay)
                self._update(job_id, message=f"{err} — retrying in {delay:.0f} s (attempt {attempt + 1})",
                             speed=0.0)  # fmt: skip
                wake = self._wake.get(job_id)
                if wake is not None:
                    wake.wait(delay)
                    wake.clear()

    def _fetch(self, job_id: str, f: dict, part: Path, before: int, index: int) -> None:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        job = self._require(job_id)
        token = self._token() or False
        url = hf_hub_url(job.repo_id, f["filename"], revision=job.revision, endpoint=self.endpoint)
        meta = get_hf_file_metadata(url, token=token, endpoint=self.endpoint)
        size = meta.size if meta.size is not None else f["size"]
        if f["size"] is None and size is not None:
            f["size"] = size
            self._update(job_id, total=sum(int(x["size"] or 0) for x in job.files))
        headers = build_hf_headers(token=token, library_name="tandem")
        target = url
        if meta.location and meta.location != url:
            target = meta.location
            if urlparse(meta.location).netloc != urlparse(url).netloc:
                headers.pop("authorization", None)  # a signed CDN address: the token stays with the Hub
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:  # not ours, or the file changed: start over
            part.unlink()
            have = 0
        self._check_space(self._require(job_id))
        self._update(job_id, downloaded=before + have, message=f"part {index + 1} of {len(job.files)}"
                     if len(job.files) > 1 else "")  # fmt: skip
        progress = self._progress_class(job_id, before)
        with open(part, "r+b" if part.exists() else "w+b") as out:
            out.seek(have)
            http_get(target, out, resume_size=have, headers=headers, expected_size=size,
                     displayed_filename=f["filename"], tqdm_class=progress)  # fmt: skip
            out.truncate()

    def _progress_class(self, job_id: str, before: int):
        manager = self

        class _Progress:
            def __init__(self, *args, initial: int = 0, **kwargs) -> None:
                self.n = initial
                self.t_last = time.monotonic()
                self.n_last = initial

            def __enter__(self):
                return self

            def __exit__(self, *exc) -> None:
                return None

            def close(self) -> None:
                return None

            def update(self, n: int | float | None = 1) -> None:
                manager._check_stop(job_id)
                self.n += int(n or 0)
                now = time.monotonic()
                with manager._lock:
                    job = manager._jobs[job_id]
                    job.downloaded = before + self.n
                    job.last_bytes_at = now
                    if now - self.t_last >= PROGRESS_INTERVAL:
                        rate = (self.n - self.n_last) / (now - self.t_last)
                        job.speed = rate if job.speed <= 0 else 0.7 * job.speed + 0.3 * rate
                        self.t_last, self.n_last = now, self.n
                        if job.message.startswith(("connecting", "connection", "can't reach")) or "retrying" in job.message:
                            job.message = ""
                        snapshot = replace(job)
                    else:
                        snapshot = None
                if snapshot is not None:
                    manager._emit(snapshot)

        return _Progress

    def _verify(self, job_id: str, f: dict, part: Path, before: int, index: int) -> None:
        job = self._require(job_id)
        size = part.stat().st_size
        if f["size"] is not None and size != f["size"]:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{f['filename']}: got {format_bytes(size)} instead of {format_bytes(f['size'])} — the partial file "
                "was deleted; retry to download it again"
            )
        expected = f.get("sha256")
        if not expected:
            return  # a small non-LFS file: the Hub publishes no sha256 for it
        label = f"verifying {index + 1} of {len(job.files)}" if len(job.files) > 1 else "verifying checksum"
        self._update(job_id, state=VERIFYING, message=label, speed=0.0)
        done = [0]
        last = [time.monotonic()]

        def progress(n: int) -> None:
            done[0] += n
            if time.monotonic() - last[0] >= PROGRESS_INTERVAL:
                last[0] = time.monotonic()
                self._update(job_id, message=f"{label} ({100 * done[0] // max(size, 1)} %)")

        got = sha256_file(part, progress, lambda: self._check_stop(job_id))
        if got != expected.lower():
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{f['filename']} is corrupted (sha256 {got[:12]}… instead of {expected[:12]}…): it was deleted and "
                "not added to your library — retry to download it again"
            )
        self._update(job_id, state=DOWNLOADING, message="", downloaded=before + size)

    def _install(self, job_id: str, staging: Path) -> None:
        from app.engine.compat import check_draft_compatibility
        from app.engine.gguf_info import GGUFError, inspect_gguf

        job = self._require(job_id)
        dest = Path(job.dest_dir)
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DownloadError(f"cannot create {dest}: {e.strerror or e}") from e
        moved: list[Path] = []
        for f in job.files:
            name = f["filename"].rsplit("/", 1)[-1]
            src, dst = staging / name, dest / name
            try:
                shutil.move(str(src), str(dst))
            except OSError as e:
                raise DownloadError(f"cannot move {name} into {dest}: {e.strerror or e}") from e
            moved.append(dst)
        self._remove_staging(job_id)
        first = moved[0]
        compatible, reason = None, ""
        try:
            info = inspect_gguf(first)
            if job.purpose == "draft" and job.target_path:
                target = Path(job.target_path)
                if target.is_file():
                    verdict = check_draft_compatibility(inspect_gguf(target), info)
                    compatible, reason = bool(verdict), verdict.reason
                else:
                    reason = f"cannot check compatibility: {target} is gone"
        except GGUFError as e:
            compatible, reason = (False if job.purpose == "draft" else None), f"downloaded, but not usable: {e}"
        message = "downloaded and verified" if compatible is not False else "downloaded — not usable as draft"
        self._update(job_id, state=DONE, message=message, result_path=str(first), compatible=compatible,
                     compat_reason=reason, downloaded=job.total or job.downloaded, speed=0.0, force=True,
                     save=True)  # fmt: skip
        if self._on_done is not None:
            try:
                self._on_done(self._require(job_id))
            except Exception:  # pragma: no cover - a UI callback failing must not fail the download
                log.exception("download finished callback failed")

    # -- helpers ---------------------------------------------------------------------------------------

    def _check_space(self, job: DownloadJob) -> None:
        have = sum(p.stat().st_size for p in self.partial_files(job.id))
        remaining = max(job.total - have, 0)
        need_staging = remaining + DISK_MARGIN
        free = self._disk_free(self.staging_dir)
        if free < need_staging:
            raise DownloadError(
                f"not enough disk space for {job.name}: it needs {format_bytes(remaining)} more, "
                f"{format_bytes(free)} free on {self._mount_hint(self.staging_dir)} — free some space and retry"
            )
        dest = Path(job.dest_dir)
        if not _same_device(dest, self.staging_dir):
            free_dest = self._disk_free(dest)
            if free_dest < job.total + DISK_MARGIN:
                raise DownloadError(
                    f"not enough disk space in the models folder for {job.name}: it needs "
                    f"{format_bytes(job.total)}, {format_bytes(free_dest)} free on {self._mount_hint(dest)}"
                )

    @staticmethod
    def _mount_hint(path: Path) -> str:
        return str(path)

    def _require(self, job_id: str) -> DownloadJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise DownloadError(f"no download {job_id}")
        return job

    def _wake_up(self, job_id: str) -> None:
        ev = self._wake.get(job_id)
        if ev is not None:
            ev.set()

    def _update(self, job_id: str, save: bool = False, force: bool = False, **changes: object) -> None:
        """Change a job and tell the UI. The worker's own state changes do not override a pause or cancel
        the user asked for meanwhile (`force` does: the worker has stopped)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            if not force and job_id in self._stops and "state" in changes:
                changes = {k: v for k, v in changes.items() if k not in ("state", "message", "error")}
            for k, v in changes.items():
                setattr(job, k, v)
            if save:
                self._save()
            snapshot = replace(job)
        self._emit(snapshot)

    def _emit(self, job: DownloadJob) -> None:
        if self._on_event is not None:
            try:
                self._on_event(replace(job))
            except Exception:  # pragma: no cover
                log.exception("download event callback failed")

    def _remove_staging(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.staging_dir / job_id)

    # -- persistence -----------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def _load(self) -> None:
        path = self.state_path
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            items = data.get("jobs", []) if isinstance(data, dict) else []
        except (OSError, ValueError) as e:
            self.load_error = f"the download list {path} could not be read ({e}); it was set aside"
            log.warning(self.load_error)
            with contextlib.suppress(OSError):
                path.replace(path.with_suffix(f".broken-{int(time.time())}"))
            return
        for item in items:
            job = DownloadJob.from_json(item) if isinstance(item, dict) else None
            if job is None:
                continue
            if job.state in (DOWNLOADING, VERIFYING):
                job.state, job.message = QUEUED, "resuming"
            have = sum(p.stat().st_size for p in self.partial_files(job.id))
            if job.state != DONE:
                job.downloaded = have
            self._jobs[job.id] = job
            self._order.append(job.id)

    def _save(self) -> None:
        with self._lock:
            data = {"version": 1, "jobs": [self._jobs[i].to_json() for i in self._order]}
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, self.state_path)
        except OSError as e:
            log.warning("cannot save the download list: %s", e)
