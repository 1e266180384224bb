"""Crash safety for a GUI-only user: uncaught exceptions go to a log file and a readable dialog.

:func:`install` replaces ``sys.excepthook`` and ``threading.excepthook``. Each uncaught exception is

* written with its traceback to ``platformdirs.user_log_dir("tandem")/tandem.log`` (rotating: 1 MB x 5),
* echoed to stderr (for whoever started Tandem from a terminal),
* shown, when a ``QApplication`` exists, as a dialog with the one-line message, a "Copy details"
  button and the log path. Exceptions from other threads are shown by the GUI thread.

The handler never recurses: an exception raised while a report is being shown (or by the dialog
itself) is only logged. The dialog function is injectable (``install(dialog=...)``) for tests.
Nothing here imports Qt at module level, so the CLI can install it too.
"""

from __future__ import annotations

import logging
import logging.handlers
import platform
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from app.engine.errors import error_message

__all__ = [
    "BACKUP_COUNT",
    "MAX_BYTES",
    "CrashHandler",
    "default_log_dir",
    "install",
    "install_into_gui",
    "show_crash_dialog",
    "uninstall",
]

MAX_BYTES = 1_000_000
BACKUP_COUNT = 5
LOG_NAME = "tandem.log"

# dialog(message, details, log_path) -> None; runs in the GUI thread
DialogFn = Callable[[str, str, Path], None]

_installed: CrashHandler | None = None


def default_log_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_log_dir("tandem", appauthor=False))


class CrashHandler:
    def __init__(
        self,
        log_dir: Path | None = None,
        dialog: DialogFn | None = None,
        max_bytes: int = MAX_BYTES,
        backup_count: int = BACKUP_COUNT,
        echo: bool = True,
    ) -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else default_log_dir()
        self.log_path = self.log_dir / LOG_NAME
        self.dialog: DialogFn = dialog or show_crash_dialog
        self.echo = echo
        self._lock = threading.RLock()
        self._busy = threading.local()  # per-thread: "this thread is inside handle()"
        self._dialog_open = False
        self._shown: set[str] = set()
        self._relay = None  # QObject in the GUI thread that shows dialogs for other threads
        self.logger = logging.getLogger(f"tandem.crash.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self._handler: logging.Handler | None = None
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(
                self.log_path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", delay=True
            )
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            self.logger.addHandler(handler)
            self._handler = handler
        except OSError as e:  # no log folder: still show dialogs
            print(f"tandem: cannot write the crash log in {self.log_dir}: {e}", file=sys.stderr)
        self._prev_sys = sys.excepthook
        self._prev_thread = threading.excepthook

    # -- hooks ------------------------------------------------------------------------------------
    def install(self) -> CrashHandler:
        sys.excepthook = self.handle
        threading.excepthook = self._thread_hook
        return self

    def uninstall(self) -> None:
        if sys.excepthook == self.handle:
            sys.excepthook = self._prev_sys
        if threading.excepthook == self._thread_hook:
            threading.excepthook = self._prev_thread
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def _thread_hook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        name = args.thread.name if args.thread is not None else "?"
        self.handle(args.exc_type, args.exc_value, args.exc_traceback, thread_name=name)

    # -- the work ---------------------------------------------------------------------------------
    def handle(
        self,
        exc_type: type[BaseException],
        exc: BaseException,
        tb: TracebackType | None,
        thread_name: str | None = None,
    ) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            self._prev_sys(exc_type, exc, tb)
            return
        if getattr(self._busy, "active", False):  # raised while a report is shown: log it, no dialog
            try:
                details = "".join(traceback.format_exception(exc_type, exc, tb))
                self._log(f"uncaught exception while reporting another: {error_message(exc)}\n{details.rstrip()}")
                sys.__excepthook__(exc_type, exc, tb)
            except Exception:
                pass
            return
        self._busy.active = True
        try:
            details = "".join(traceback.format_exception(exc_type, exc, tb))
            message = error_message(exc)
            where = f" in thread {thread_name}" if thread_name else ""
            self._log(f"uncaught exception{where}: {message}\n{_environment()}\n{details.rstrip()}")
            if self.echo:
                try:
                    sys.stderr.write(f"tandem: uncaught exception{where} (logged to {self.log_path})\n{details}")
                except Exception:
                    pass
            self._show(message, details)
        except Exception:  # the handler itself must never raise
            try:
                sys.__excepthook__(exc_type, exc, tb)
            except Exception:
                pass
        finally:
            self._busy.active = False

    def _log(self, text: str) -> None:
        with self._lock:
            try:
                self.logger.error(text)
                if self._handler is not None:
                    self._handler.flush()
            except Exception:
                pass

    def _show(self, message: str, details: str) -> None:
        try:
            from PySide6.QtCore import QThread
            from PySide6.QtWidgets import QApplication
        except ImportError:
            return
        app = QApplication.instance()
        if app is None:
            return
        if QThread.currentThread() is not app.thread():
            if self._relay is not None:
                self._relay.show.emit(message, details)  # queued to the GUI thread
            return
        self.show_now(message, details)

    def show_now(self, message: str, details: str) -> None:
        """Show the dialog (GUI thread): at most one at a time, once per distinct message."""
        if self._dialog_open or message in self._shown:
            return
        self._shown.add(message)
        self._dialog_open = True
        try:
            self.dialog(message, details, self.log_path)
        except Exception as e:
            self._log(f"the crash dialog failed: {error_message(e)}")
        finally:
            self._dialog_open = False

    def attach_gui(self) -> None:
        """Create the relay that lets worker threads show dialogs; call in the GUI thread."""
        if self._relay is not None:
            return
        from PySide6.QtCore import QObject, Signal
        from PySide6.QtWidgets import QApplication

        class _Relay(QObject):
            show = Signal(str, str)

        relay = _Relay()
        app = QApplication.instance()
        if app is not None:
            relay.moveToThread(app.thread())
        relay.show.connect(self.show_now)
        self._relay = relay


def _environment() -> str:
    try:
        from importlib.metadata import version

        tandem = version("tandem")
    except Exception:
        tandem = "?"
    frozen = " (bundle)" if getattr(sys, "frozen", False) else ""
    return f"tandem {tandem}{frozen}, Python {platform.python_version()}, {platform.platform()}"


def show_crash_dialog(message: str, details: str, log_path: Path, parent=None, modal: bool = True):
    """The default dialog: what went wrong in one line, the details, "Copy details" and the log path."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import (
        QDialog,
        QDialogButtonBox,
        QLabel,
        QPlainTextEdit,
        QPushButton,
        QVBoxLayout,
    )

    if parent is None:
        from PySide6.QtWidgets import QApplication

        parent = QApplication.activeWindow()
    dlg = QDialog(parent)
    dlg.setObjectName("crashDialog")
    dlg.setWindowTitle("Tandem — unexpected error")
    layout = QVBoxLayout(dlg)
    head = QLabel("<b>Tandem ran into an unexpected problem.</b> Your chats are saved; you can keep working "
                  "or restart Tandem.")
    head.setWordWrap(True)
    msg = QLabel(message)
    msg.setObjectName("crashMessage")
    msg.setWordWrap(True)
    msg.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    text = QPlainTextEdit(details)
    text.setObjectName("crashDetails")
    text.setReadOnly(True)
    text.setMinimumHeight(160)
    where = QLabel(f"The details were saved to {log_path}")
    where.setObjectName("crashLogPath")
    where.setWordWrap(True)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    copy = QPushButton("Copy details")
    copy.setObjectName("copyDetails")
    buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
    copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(f"{message}\n\n{details}"))
    buttons.rejected.connect(dlg.reject)
    for w in (head, msg, text, where, buttons):
        layout.addWidget(w)
    dlg.resize(640, 420)
    if modal:
        dlg.exec()
    else:
        dlg.show()
    return dlg


def install(log_dir: Path | None = None, dialog: DialogFn | None = None, **kwargs) -> CrashHandler:
    """Install the process-wide handler (replacing one installed before); returns it."""
    global _installed
    if _installed is not None:
        _installed.uninstall()
    _installed = CrashHandler(log_dir=log_dir, dialog=dialog, **kwargs).install()
    return _installed


def uninstall() -> None:
    global _installed
    if _installed is not None:
        _installed.uninstall()
        _installed = None


def install_into_gui(app=None, window=None) -> CrashHandler:
    """For the GUI entry point, after the QApplication exists: install (if needed) and enable dialogs
    for exceptions from worker threads. ``app``/``window`` are accepted for symmetry and not needed."""
    handler = _installed if _installed is not None else install()
    handler.attach_gui()
    return handler
