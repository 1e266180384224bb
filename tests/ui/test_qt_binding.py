"""Guard against a Qt binding that leaks references to None (PySide6 6.12.0 on Python 3.11 aborts the
process with 'none_dealloc' after a few thousand void calls — a streaming chat makes that many quickly)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
from PySide6.QtWidgets import QApplication, QLabel
app = QApplication([])
label = QLabel()
for _ in range(200_000):
    label.setText("x")
print("ok")
"""


def test_many_void_qt_calls_do_not_crash_the_process():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-500:]
