"""The download queue: one row per download with progress, speed, ETA and Pause/Resume/Cancel/Load."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.engine.units import format_bytes
from app.library.downloads import (
    CANCELLED,
    DONE,
    DOWNLOADING,
    FAILED,
    PAUSED,
    QUEUED,
    VERIFYING,
    DownloadError,
    DownloadJob,
    DownloadManager,
)

__all__ = ["DownloadQueue", "DownloadRow", "ElidedLabel", "format_duration"]

STALL_SECONDS = 5.0


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def describe(job: DownloadJob, now: float | None = None) -> str:
    """The row's status line: '312 MB of 1.1 GB · 8.4 MB/s · 1 min 35 s left'."""
    size = f"{format_bytes(job.downloaded)} of {format_bytes(job.total)}" if job.total else format_bytes(job.downloaded)
    if job.state == DOWNLOADING:
        stalled = job.stalled_for(now)
        if stalled >= STALL_SECONDS:
            return f"{size} · no data for {stalled:.0f} s — waiting for the server, will resume"
        parts = [size]
        if job.speed > 0:
            parts.append(f"{format_bytes(job.speed)}/s")
        eta = job.eta
        if eta is not None:
            parts.append(f"{format_duration(eta)} left")
        if job.message:
            parts.append(job.message)
        return " · ".join(parts)
    if job.state == QUEUED:
        return job.message or f"waiting · {size}"
    if job.state == VERIFYING:
        return job.message or "verifying checksum"
    if job.state == PAUSED:
        return f"paused · {size}"
    if job.state == FAILED:
        return job.error or "failed"
    if job.state == CANCELLED:
        return "cancelled — partial files deleted"
    if job.state == DONE:
        text = f"done · {format_bytes(job.total or job.downloaded)} · sha256 verified"
        if job.purpose == "draft":
            if job.compatible:
                text += " · compatible draft"
            elif job.compatible is False:
                text += f" · not usable as draft: {job.compat_reason}"
        elif job.compat_reason:
            text += f" · {job.compat_reason}"
        return text
    return job.state


class ElidedLabel(QLabel):
    """A one-line label that shortens its text with "…" in the middle when it is too narrow, instead of
    widening the row (long repository and file names would push the buttons out of sight)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    def set_full_text(self, text: str) -> None:
        self._full = text
        self._elide()

    def minimumSizeHint(self) -> QSize:
        return QSize(self.fontMetrics().horizontalAdvance("……") * 2, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:
        return QSize(self.fontMetrics().horizontalAdvance(self._full) + 4, super().sizeHint().height())

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        text = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideMiddle, max(self.width(), 0))
        if text != self.text():
            self.setText(text)


class DownloadRow(QFrame):
    """One download; the buttons shown depend on its state."""

    def __init__(self, queue: DownloadQueue, job: DownloadJob) -> None:
        super().__init__(queue.rows_host)
        self.queue = queue
        self.job = job
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setObjectName("downloadRow")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        top = QHBoxLayout()
        self.title = ElidedLabel()
        top.addWidget(self.title, 1)
        self.pause_button = QPushButton("Pause")
        self.resume_button = QPushButton("Resume")
        self.cancel_button = QPushButton("Cancel")
        self.load_button = QPushButton("Load")
        self.draft_button = QPushButton("Use as draft")
        self.remove_button = QPushButton("Remove")
        for b in (self.pause_button, self.resume_button, self.cancel_button, self.load_button, self.draft_button,
                  self.remove_button):  # fmt: skip
            b.setAutoDefault(False)
            top.addWidget(b)
        layout.addLayout(top)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(10)
        layout.addWidget(self.bar)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)
        self.pause_button.clicked.connect(self._pause)
        self.resume_button.clicked.connect(self._resume)
        self.cancel_button.clicked.connect(self._cancel)
        self.remove_button.clicked.connect(self._remove)
        self.load_button.clicked.connect(self._load)
        self.draft_button.clicked.connect(self._draft)
        self.update_job(job)

    def update_job(self, job: DownloadJob, now: float | None = None) -> None:
        self.job = job
        label = f"{job.repo_id} · {job.name}"
        if job.purpose == "draft":
            label += " (draft)"
        self.title.set_full_text(label)
        self.title.setToolTip(f"{label}\n{job.repo_id}@{job.revision[:10]}\n→ {job.dest_dir}")
        self.bar.setValue(int(job.fraction * 1000) if job.state != DONE else 1000)
        self.bar.setEnabled(job.state in (DOWNLOADING, VERIFYING, DONE))
        self.status.setText(describe(job, now))
        error = job.state == FAILED or (job.state == DONE and job.compatible is False)
        self.status.setProperty("error", error)
        self.status.setStyleSheet("color: #c0392b;" if error else "")
        running = job.state in (QUEUED, DOWNLOADING, VERIFYING)
        self.pause_button.setVisible(running)
        self.resume_button.setVisible(job.state in (PAUSED, FAILED))
        self.resume_button.setText("Retry" if job.state == FAILED else "Resume")
        self.cancel_button.setVisible(job.state in (QUEUED, DOWNLOADING, VERIFYING, PAUSED, FAILED))
        self.remove_button.setVisible(job.state in (DONE, CANCELLED))
        usable = job.state == DONE and bool(job.result_path) and job.compatible is not False
        self.load_button.setVisible(usable and job.purpose == "model")
        self.draft_button.setVisible(usable and job.purpose == "draft")

    def _act(self, fn) -> None:
        try:
            fn(self.job.id)
        except DownloadError as e:
            self.queue.show_error(str(e))

    @Slot()
    def _pause(self) -> None:
        self._act(self.queue.manager.pause)

    @Slot()
    def _resume(self) -> None:
        self._act(self.queue.manager.resume)

    @Slot()
    def _cancel(self) -> None:
        self._act(self.queue.manager.cancel)

    @Slot()
    def _remove(self) -> None:
        self._act(self.queue.manager.remove)
        self.queue.drop_row(self.job.id)

    @Slot()
    def _load(self) -> None:
        if self.job.result_path:
            self.queue.loadRequested.emit(Path(self.job.result_path))

    @Slot()
    def _draft(self) -> None:
        if self.job.result_path:
            self.queue.useAsDraftRequested.emit(Path(self.job.result_path))


class DownloadQueue(QWidget):
    """All downloads, newest last. Fed by `DownloadBridge.jobChanged` (connect it to `update_job`)."""

    loadRequested = Signal(object)  # Path of a downloaded model
    useAsDraftRequested = Signal(object)  # Path of a downloaded draft
    errorShown = Signal(str)

    def __init__(self, manager: DownloadManager, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.manager = manager
        self.rows: dict[str, DownloadRow] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        self.heading = QLabel("<b>Downloads</b>")
        head.addWidget(self.heading, 1)
        self.clear_button = QPushButton("Clear finished")
        self.clear_button.setAutoDefault(False)
        self.clear_button.clicked.connect(self._clear_finished)
        head.addWidget(self.clear_button)
        layout.addLayout(head)
        self.scroll = QScrollArea(self)
        self.scroll.setWidgetResizable(True)
        self.rows_host = QWidget()
        self.rows_layout = QVBoxLayout(self.rows_host)
        self.rows_layout.setContentsMargins(0, 0, 0, 0)
        self.rows_layout.setSpacing(4)
        self.empty = QLabel("Nothing downloading. Pick a file above and press Download.")
        self.empty.setEnabled(False)
        self.rows_layout.addWidget(self.empty)
        self.rows_layout.addStretch(1)
        self.scroll.setWidget(self.rows_host)
        layout.addWidget(self.scroll)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c0392b;")
        self.error_label.hide()
        layout.addWidget(self.error_label)
        for job in manager.jobs():
            self.update_job(job)
        # stall detection and ETA need a clock even when no event arrives
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        if manager.load_error:
            self.show_error(manager.load_error)

    @Slot(object)
    def update_job(self, job: DownloadJob) -> None:
        row = self.rows.get(job.id)
        if row is None:
            if self.manager.job(job.id) is None:
                return  # removed meanwhile
            row = DownloadRow(self, job)
            self.rows[job.id] = row
            self.rows_layout.insertWidget(self.rows_layout.count() - 1, row)
        else:
            row.update_job(job)
        self._update_heading()

    def drop_row(self, job_id: str) -> None:
        row = self.rows.pop(job_id, None)
        if row is not None:
            row.hide()
            row.deleteLater()
        self._update_heading()

    def show_error(self, text: str) -> None:
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))
        self.errorShown.emit(text)

    def _update_heading(self) -> None:
        self.empty.setVisible(not self.rows)
        active = sum(1 for r in self.rows.values() if r.job.state in (QUEUED, DOWNLOADING, VERIFYING))
        self.heading.setText(f"<b>Downloads</b> ({active} active)" if active else "<b>Downloads</b>")

    @Slot()
    def _tick(self) -> None:
        now = time.monotonic()
        for job_id, row in self.rows.items():
            if row.job.state == DOWNLOADING:
                fresh = self.manager.job(job_id)
                if fresh is not None:
                    row.update_job(fresh, now)

    @Slot()
    def _clear_finished(self) -> None:
        for job_id in self.manager.clear_finished():
            self.drop_row(job_id)
