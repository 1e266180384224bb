"""Single-instance guard: a second launch activates the running window and exits."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from app.ui.single_instance import SingleInstanceGuard, claim_single_instance, default_key

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def key():
    return f"tandem-test-{uuid.uuid4().hex[:10]}"


def test_default_key_is_per_user_and_stable():
    assert default_key() == default_key() and default_key().startswith("tandem-")


def test_second_launch_activates_first(qtbot, key):
    first = claim_single_instance(key)
    assert first is not None and first.is_listening
    try:
        with qtbot.waitSignal(first.activated, timeout=3000):
            assert claim_single_instance(key) is None  # the second launch: delivered, so it exits
    finally:
        first.close()


def test_second_process_activates_first(qtbot, key):
    first = claim_single_instance(key)
    assert first is not None
    code = textwrap.dedent(f"""
        import sys
        from PySide6.QtCore import QCoreApplication
        app = QCoreApplication([])
        from app.ui.single_instance import claim_single_instance
        sys.exit(0 if claim_single_instance({key!r}) is None else 5)
    """)
    try:
        with qtbot.waitSignal(first.activated, timeout=10000):
            proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
            qtbot.waitUntil(lambda: proc.poll() is not None, timeout=10000)
        assert proc.returncode == 0
    finally:
        first.close()


def test_attach_raises_minimized_window(qtbot, key):
    window = QWidget()
    qtbot.addWidget(window)
    window.show()
    window.setWindowState(Qt.WindowState.WindowMinimized)
    window.hide()
    guard = claim_single_instance(key)
    assert guard is not None
    guard.attach(window)
    try:
        with qtbot.waitSignal(guard.activated, timeout=3000):
            assert SingleInstanceGuard(key).notify_running()
        assert window.isVisible()
        assert not window.windowState() & Qt.WindowState.WindowMinimized
    finally:
        guard.close()


def test_nobody_running(key):
    assert SingleInstanceGuard(key).notify_running(timeout_ms=200) is False


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="Unix sockets only")
def test_stale_socket_is_taken_over(qtbot, tmp_path):
    path = str(tmp_path / "tandem.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a socket file nobody listens on: what a crashed Tandem leaves behind
    stale.close()
    assert Path(path).exists()
    guard = claim_single_instance(path)
    assert guard is not None and guard.is_listening
    try:
        with qtbot.waitSignal(guard.activated, timeout=3000):
            assert SingleInstanceGuard(path).notify_running()
    finally:
        guard.close()
