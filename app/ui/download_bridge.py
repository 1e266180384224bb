"""The download queue seen from Qt: `DownloadManager` events become signals delivered in the GUI thread."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.library.downloads import DownloadJob, DownloadManager

__all__ = ["DownloadBridge"]


class DownloadBridge(QObject):
    """Owns the DownloadManager. `jobChanged(job)` fires for every change (progress ≤ 5/s per job),
    `jobDone(job)` once a download is verified and in the library. Both arrive in the GUI thread: the
    manager calls back from its worker threads and Qt queues signals across threads."""

    jobChanged = Signal(object)  # DownloadJob snapshot
    jobDone = Signal(object)  # DownloadJob snapshot, state "done"

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
        self.manager = DownloadManager(
            library_dir, state_dir, token=token, endpoint=endpoint,
            on_event=self._event, on_done=self._done, **manager_kwargs,
        )  # fmt: skip

    def _event(self, job: DownloadJob) -> None:  # worker thread
        self.jobChanged.emit(job)

    def _done(self, job: DownloadJob) -> None:  # worker thread
        self.jobDone.emit(job)

    def shutdown(self, timeout: float = 10.0) -> bool:
        return self.manager.shutdown(timeout)
