"""What the window tests share (their `env` fixture is in conftest.py): finding a model by name, closing a
window until its engine thread has stopped."""

from __future__ import annotations

from pathlib import Path

from app.ui.main_window import MainWindow


def model_named(w: MainWindow, stem: str):
    return next(m for m in w.browser.models() if Path(m.path).stem == stem)


def close_window(qtbot, w: MainWindow) -> None:
    w.close()
    qtbot.waitUntil(lambda: not w.bridge.is_running(), timeout=15000)
