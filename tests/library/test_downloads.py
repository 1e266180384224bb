"""Downloads against the local Hub server: resume after interruptions and restarts, verification, cancel,
disk space, gated repositories. Everything goes through the real huggingface_hub client over HTTP."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from app.library.downloads import (
    CANCELLED,
    DONE,
    FAILED,
    PAUSED,
    QUEUED,
    DownloadError,
    DownloadManager,
)
from app.library.hub import HubClient

REPO = "TheOrg/Tiny-GGUF"
NAME = "tiny-Q4_K_M.gguf"
DATA = bytes(range(256)) * 12288  # 3 MiB: twelve of the 256 KiB chunks downloads report and resume by


def _manager(hub, tmp_path: Path, **kw) -> DownloadManager:
    kw.setdefault("retry_delays", (0.05, 0.05))
    return DownloadManager(tmp_path / "models", tmp_path / "state", endpoint=hub.url, **kw)


def _wait_bytes(m: DownloadManager, job_id: str, n: int, timeout: float = 10.0) -> None:
    """Wait until the client has written `n` bytes (the server may have sent more into socket buffers)."""
    deadline = time.monotonic() + timeout
    while m.job(job_id).downloaded < n:
        assert time.monotonic() < deadline, m.job(job_id)
        time.sleep(0.01)


def _held_download(hub, tmp_path: Path, after_bytes: int, written: int = 0):
    """Start a download the server holds after `after_bytes`; wait until the client has written `written`."""
    hold = hub.hold(REPO, NAME, after_bytes=after_bytes)
    m = _manager(hub, tmp_path)
    job = m.enqueue(_file(hub))
    assert hold.reached.wait(10)
    if written:
        _wait_bytes(m, job.id, written)
    return m, job, hold


def _file(hub, repo: str = REPO, name: str = NAME, token: str | None = None):
    listing = HubClient(endpoint=hub.url, token=token).files(repo)
    found = listing.find(name)
    assert found is not None
    return found


def test_download_lands_in_the_library_verified(hub, tmp_path: Path) -> None:
    hub.add_repo(REPO, {NAME: DATA})
    events = []
    m = _manager(hub, tmp_path, on_event=events.append)
    job = m.enqueue(_file(hub))
    done = m.wait(job.id)
    assert done.state == DONE, done.error
    dest = tmp_path / "models" / "TheOrg" / "Tiny-GGUF" / NAME
    assert dest.read_bytes() == DATA
    assert done.result_path == str(dest)
    assert done.downloaded == done.total == len(DATA)
    assert m.partial_files(job.id) == []
    assert {e.state for e in events} >= {QUEUED, "downloading", "verifying", DONE}
    # already there: a second download is refused with a clear message
    with pytest.raises(DownloadError, match="already in your library"):
        m.enqueue(_file(hub))
    m.shutdown()


def test_interrupted_twice_resumes_and_ends_verified(hub, tmp_path: Path) -> None:
    hub.add_repo(REPO, {NAME: DATA})
    hub.interrupt(REPO, NAME, after_bytes=[600_000, 700_000])
    m = _manager(hub, tmp_path)
    job = m.wait(m.enqueue(_file(hub)).id)
    assert job.state == DONE, job.error
    assert (tmp_path / "models" / "TheOrg" / "Tiny-GGUF" / NAME).read_bytes() == DATA
    gets = hub.file_requests(REPO, NAME)
    assert len(gets) == 3
    assert gets[0].range is None
    # resumed from the last whole chunk each time: 2 chunks, then 2 more
    assert gets[1].range == "bytes=524288-"
    assert gets[2].range == "bytes=1048576-"
    m.shutdown()


def test_pause_resume_and_restart_continue_from_the_partial_file(hub, tmp_path: Path) -> None:
    hub.add_repo(REPO, {NAME: DATA})
    m, job, hold = _held_download(hub, tmp_path, 600_000, written=524_288)
    m.pause(job.id)
    assert m.job(job.id).state == PAUSED  # at once, even while the connection is stalled
    hold.release()  # bytes arrive again: the download stops at the next chunk
    paused = m.wait(job.id)
    assert paused.state == PAUSED
    have = sum(p.stat().st_size for p in m.partial_files(job.id))
    assert 0 < have < len(DATA)
    assert have == 524_288  # two whole chunks; the third was dropped when the pause was noticed

    # the app is closed while paused; a new manager (next start) finds the job and resumes on request
    m.shutdown()
    m2 = _manager(hub, tmp_path)
    [again] = m2.jobs()
    assert again.id == job.id and again.state == PAUSED and again.downloaded == have
    m2.resume(job.id)
    done = m2.wait(job.id)
    assert done.state == DONE, done.error
    assert hub.file_requests(REPO, NAME)[-1].range == f"bytes={have}-"
    assert (tmp_path / "models" / "TheOrg" / "Tiny-GGUF" / NAME).read_bytes() == DATA
    m2.shutdown()


def test_closing_the_app_mid_download_resumes_at_next_start(hub, tmp_path: Path) -> None:
    hub.add_repo(REPO, {NAME: DATA})
    m, job, hold = _held_download(hub, tmp_path, 800_000, written=524_288)
    stopper = threading.Thread(target=m.shutdown)
    stopper.start()
    hold.release()
    stopper.join(10)
    saved = json.loads((tmp_path / "state" / "downloads.json").read_text())
    assert saved["jobs"][0]["state"] == QUEUED  # picked up again automatically
    m2 = _manager(hub, tmp_path)
    done = m2.wait(job.id)
    assert done.state == DONE, done.error
    assert hub.file_requests(REPO, NAME)[-1].range is not None
    m2.shutdown()


def test_corrupted_download_is_detected_and_not_added(hub, tmp_path: Path) -> None:
    hub.add_repo(REPO, {NAME: DATA})
    hub.corrupt(REPO, NAME)
    m = _manager(hub, tmp_path)
    job = m.wait(m.enqueue(_file(hub)).id)
    assert job.state == FAILED
    assert "corrupted" in job.error and "not added" in job.error
    assert not (tmp_path / "models" / "TheOrg" / "Tiny-GGUF" / NAME).exists()
    assert m.partial_files(job.id) == []
    # the Hub serves the right bytes again: Retry downloads from scratch and succeeds
    hub.corrupt(REPO, NAME, enabled=False)
    m.retry(job.id)
    assert m.wait(job.id).state == DONE
    m.shutdown()


def test_cancel_removes_partial_files(hub, tmp_path: Path) -> None:
    hub.add_repo(REPO, {NAME: DATA})
    m, job, hold = _held_download(hub, tmp_path, 600_000)
    assert m.partial_files(job.id)
    m.cancel(job.id)
    hold.release()
    cancelled = m.wait(job.id)
    assert cancelled.state == CANCELLED
    assert m.partial_files(job.id) == []
    assert not (tmp_path / "state" / "partial" / job.id).exists()
    assert not (tmp_path / "models" / "TheOrg" / "Tiny-GGUF" / NAME).exists()
    m.shutdown()


def test_cancel_a_paused_download(hub, tmp_path: Path) -> None:
    hub.add_repo(REPO, {NAME: DATA})
    m, job, hold = _held_download(hub, tmp_path, 600_000)
    m.pause(job.id)
    hold.release()
    assert m.wait(job.id).state == PAUSED
    assert m.clear_finished() == []  # a paused download stays on the list
    m.cancel(job.id)
    assert m.job(job.id).state == CANCELLED
    assert m.partial_files(job.id) == []
    assert m.clear_finished() == [job.id] and m.job(job.id) is None
    m.shutdown()


def test_not_enough_disk_space_is_a_clear_error(hub, tmp_path: Path) -> None:
    hub.add_repo(REPO, {NAME: DATA})
    m = _manager(hub, tmp_path, disk_free=lambda _path: 1_000)
    with pytest.raises(DownloadError, match=r"not enough disk space .* needs 3.1 MB more, 1 kB free on .*free some space"):
        m.enqueue(_file(hub))
    assert m.jobs() == []
    m.shutdown()


def test_gated_repo_without_token_then_with_token(hub, tmp_path: Path, caplog) -> None:
    token = "hf_testtoken1234567890"
    hub.add_repo(REPO, {NAME: DATA}, gated=True)
    hub.add_token(token)
    current: dict[str, str | None] = {"token": None}
    m = _manager(hub, tmp_path, token=lambda: current["token"])
    job = m.wait(m.enqueue(_file(hub)).id)  # the listing works without a token, like on the real Hub
    assert job.state == FAILED
    assert "gated" in job.error and "access token" in job.error
    caplog.set_level(logging.DEBUG)
    current["token"] = token
    m.retry(job.id)
    done = m.wait(job.id)
    assert done.state == DONE, done.error
    assert token not in (tmp_path / "state" / "downloads.json").read_text()
    assert token not in caplog.text
    m.shutdown()


def test_offline_gives_a_clear_message(hub, tmp_path: Path) -> None:
    hub.add_repo(REPO, {NAME: DATA})
    f = _file(hub)
    hub.stop()
    m = _manager(hub, tmp_path)
    job = m.wait(m.enqueue(f).id, timeout=30)
    assert job.state == FAILED
    assert "can't reach the Hugging Face Hub" in job.error
    m.shutdown()


def test_split_model_downloads_every_part(hub, tmp_path: Path) -> None:
    a, b = b"1" * 70_000, b"2" * 30_000
    hub.add_repo(REPO, {"big-Q8_0-00001-of-00002.gguf": a, "big-Q8_0-00002-of-00002.gguf": b})
    m = _manager(hub, tmp_path)
    f = _file(hub, name="big-Q8_0-00001-of-00002.gguf")
    assert len(f.parts) == 2
    job = m.wait(m.enqueue(f).id)
    assert job.state == DONE, job.error
    folder = tmp_path / "models" / "TheOrg" / "Tiny-GGUF"
    assert (folder / "big-Q8_0-00001-of-00002.gguf").read_bytes() == a
    assert (folder / "big-Q8_0-00002-of-00002.gguf").read_bytes() == b
    m.shutdown()


def test_draft_is_checked_against_its_target_after_download(
    hub, tmp_path: Path, tiny_target: Path, tiny_draft: Path, tiny_other_vocab: Path
) -> None:
    hub.add_repo("TheOrg/Draft-GGUF", {"draft-Q8_0.gguf": tiny_draft.read_bytes(),
                                       "other-Q8_0.gguf": tiny_other_vocab.read_bytes()})  # fmt: skip
    m = _manager(hub, tmp_path)
    good = m.wait(m.enqueue(_file(hub, "TheOrg/Draft-GGUF", "draft-Q8_0.gguf"), purpose="draft",
                            target_path=tiny_target).id)  # fmt: skip
    assert good.state == DONE and good.compatible is True, good
    bad = m.wait(m.enqueue(_file(hub, "TheOrg/Draft-GGUF", "other-Q8_0.gguf"), purpose="draft",
                           target_path=tiny_target).id)  # fmt: skip
    assert bad.state == DONE and bad.compatible is False
    assert "vocab" in bad.compat_reason or "token" in bad.compat_reason
    m.shutdown()


def test_broken_state_file_is_set_aside(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "downloads.json").write_text("{not json")
    m = DownloadManager(tmp_path / "models", state, endpoint="http://127.0.0.1:9")
    assert m.jobs() == []
    assert m.load_error and "set aside" in m.load_error
    m.shutdown()
