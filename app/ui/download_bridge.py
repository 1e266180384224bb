"""The download queue seen from Qt: `DownloadManager` events become signals delivered in the GUI thread."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.library.downloads import DownloadJob, DownloadManager

__all__ = ["DownloadBridge"]


class DownloadBridge(QObject):
    """Owns the DownloadManager. `jobChanged(job)` fires for every change (progress ≤ 5/s per job),
    `jobDone(job)` once a download is verified and in the library. Both are emitted in the GUI thread: the
    manager calls back from its worker threads, which only hand the job to this object's `_deliver` (a slot
    of a GUI-thread object, so Qt queues it), and `_deliver` emits them. A callable with no QObject receiver
    connected directly to a signal emitted in a worker thread would run in that thread."""

    jobChanged = Signal(object)  # DownloadJob snapshot
    jobDone = Signal(object)  # DownloadJob snapshot, state "done"
    _relay = Signal(bool, object)  # (done, job) from the manager's thread, delivered to `_deliver`

    def __init__(
        self,
        library_dir: Path,
        state_dir: Path,
        token=None,
        endpoint: str | None = None,
        parent: QObject | None = None,
        **manager_kwargs,
    ) -> None:
        super().__init__(parent)
        self._relay.connect(self._deliver)  # a bound method of this GUI-thread object: queued from other threads
        self.manager = DownloadManager(
            library_dir, state_dir, token=token, endpoint=endpoint,
            on_event=self._event, on_done=self._done, **manager_kwargs,
        )  # fmt: skip

    def _event(self, job: DownloadJob) -> None:  # worker thread
        self._relay.emit(False, job)

    def _done(self, job: DownloadJob) -> None:  # worker thread
        self._relay.emit(True, job)

    def _deliver(self, done: bool, job: DownloadJob) -> None:  # GUI thread
        (self.jobDone if done else self.jobChanged).emit(job)

    def shutdown(self, timeout: float = 10.0) -> bool:
        return self.manager.shutdown(timeout)
