"""Crash handler: uncaught exceptions are logged (rotating) and shown once, never recursively."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from app import crash


def _raise(exc: BaseException):
    try:
        raise exc
    except BaseException as e:  # noqa: B036 (the test wants the traceback object)
        return type(e), e, e.__traceback__


@pytest.fixture
def handler(tmp_path):
    shown: list[tuple[str, str, Path]] = []
    h = crash.install(log_dir=tmp_path / "logs", dialog=lambda m, d, p: shown.append((m, d, p)), echo=False)
    h.shown = shown
    yield h
    crash.uninstall()


def test_hooks_installed_and_restored(tmp_path):
    before_sys, before_thread = sys.excepthook, threading.excepthook
    h = crash.install(log_dir=tmp_path, dialog=lambda *a: None, echo=False)
    assert sys.excepthook == h.handle and threading.excepthook == h._thread_hook
    crash.uninstall()
    assert sys.excepthook is before_sys and threading.excepthook is before_thread


def test_logs_traceback_and_shows_dialog(handler, qapp):
    handler.handle(*_raise(ValueError("the model file is truncated\nsecond line")))
    log = handler.log_path.read_text(encoding="utf-8")
    assert "ValueError: the model file is truncated" in log and "Traceback (most recent call last)" in log
    assert "_raise" in log  # the frame is there
    [(message, details, path)] = handler.shown
    assert message == "ValueError: the model file is truncated"
    assert "Traceback" in details and path == handler.log_path


def test_same_message_is_shown_once(handler, qapp):
    for _ in range(3):
        handler.handle(*_raise(RuntimeError("boom")))
    assert len(handler.shown) == 1
    assert handler.log_path.read_text().count("RuntimeError: boom") >= 3  # every one is logged


def test_never_recursive(tmp_path, qapp):
    calls = []

    def dialog(message, details, path):
        calls.append(message)
        # an exception while the dialog is up (its own event loop, a paint error...) goes to the hook
        h.handle(*_raise(KeyError("inside the dialog")))
        raise OSError("the dialog itself failed")

    h = crash.install(log_dir=tmp_path, dialog=dialog, echo=False)
    try:
        h.handle(*_raise(ZeroDivisionError("division by zero")))
    finally:
        crash.uninstall()
    assert calls == ["ZeroDivisionError: division by zero"]
    log = h.log_path.read_text()
    assert "KeyError" in log and "the crash dialog failed: OSError" in log


def test_thread_exception_shown_by_gui_thread(handler, qtbot):
    handler.attach_gui()
    seen_thread = []
    handler.dialog = lambda m, d, p: (seen_thread.append(threading.current_thread()), handler.shown.append((m, d, p)))
    t = threading.Thread(target=lambda: 1 / 0, name="engine-worker")
    t.start()
    t.join()
    qtbot.waitUntil(lambda: len(handler.shown) == 1, timeout=3000)
    assert seen_thread == [threading.main_thread()]
    assert "in thread engine-worker" in handler.log_path.read_text()


def test_keyboard_interrupt_is_not_a_crash(handler, monkeypatch):
    passed = []
    monkeypatch.setattr(handler, "_prev_sys", lambda *a: passed.append(a[0]))
    handler.handle(*_raise(KeyboardInterrupt()))
    assert passed == [KeyboardInterrupt] and handler.shown == []


def test_log_rotates(tmp_path, qapp):
    h = crash.CrashHandler(log_dir=tmp_path, dialog=lambda *a: None, max_bytes=2000, backup_count=2, echo=False)
    for i in range(40):
        h.handle(*_raise(RuntimeError(f"failure {i} " + "x" * 200)))
    h.uninstall()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["tandem.log", "tandem.log.1", "tandem.log.2"]
    assert all(p.stat().st_size < 5000 for p in tmp_path.iterdir())


def test_no_dialog_without_qapplication(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from app import crash
        shown = []
        crash.install(log_dir={str(tmp_path)!r}, dialog=lambda *a: shown.append(a), echo=False)
        sys.excepthook(*(lambda e: (type(e), e, e.__traceback__))(RuntimeError("headless")))
        assert shown == [], shown
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert "RuntimeError: headless" in (tmp_path / "tandem.log").read_text()


def test_default_log_dir_is_platform_log_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert crash.default_log_dir().is_relative_to(tmp_path)
    assert "tandem" in str(crash.default_log_dir())


def test_real_dialog_copy_details(qtbot, tmp_path):
    from PySide6.QtWidgets import QApplication, QLabel, QPlainTextEdit, QPushButton

    dlg = crash.show_crash_dialog("ValueError: bad", "Traceback...\nValueError: bad", tmp_path / "tandem.log",
                                  modal=False)
    qtbot.addWidget(dlg)
    assert dlg.findChild(QLabel, "crashMessage").text() == "ValueError: bad"
    assert str(tmp_path / "tandem.log") in dlg.findChild(QLabel, "crashLogPath").text()
    assert "Traceback" in dlg.findChild(QPlainTextEdit, "crashDetails").toPlainText()
    dlg.findChild(QPushButton, "copyDetails").click()
    assert dlg.isVisible()  # copying does not close the dialog
    assert "Traceback" in QApplication.clipboard().text()
    dlg.close()


def test_exception_in_a_qt_slot_reaches_the_handler(handler, qtbot):
    from PySide6.QtCore import QTimer

    def slot():
        raise LookupError("raised in a Qt slot")

    QTimer.singleShot(0, slot)
    qtbot.waitUntil(lambda: len(handler.shown) == 1, timeout=3000)
    assert handler.shown[0][0] == "LookupError: raised in a Qt slot"
