"""SIGKILL the real app mid-reply; on restart the chat and the partial reply are there."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from app.store.chats import ChatStore
from app.store.db import open_database

CHILD = r"""
import sys
from pathlib import Path
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.library.local import LocalLibrary
from app.store.chats import ChatStore
from app.store.db import open_database
from app.store.settings import SettingsStore, model_key
from app.ui.main_window import MainWindow

db, models = Path(sys.argv[1]), Path(sys.argv[2])
conn = open_database(db)
chats = ChatStore(conn)
chats.recover_interrupted()
settings = SettingsStore(conn)
settings.set("model_folders", [str(models)])
target = models / "tiny-target.gguf"
settings.set_model_settings(model_key(target), {"n_ctx": 8192, "threads": 1, "temperature": 0.0,
                                                "max_tokens": 100000})
w = MainWindow(chats, settings, LocalLibrary([models], cache_path=None))
w.confirm = lambda title, text: True
w.show()

def send_when_ready():
    if w.chat.model_ready():
        print("SENT", w.chat.send("print the list of items"), flush=True)
    else:
        QTimer.singleShot(50, send_when_ready)

QTimer.singleShot(50, send_when_ready)
w.browser.scanFinished.connect(lambda models: w.target is None and w.load_model(
    next(m for m in models if Path(m.path).name == "tiny-target.gguf")))
app.exec()
"""


def test_sigkill_mid_reply_keeps_chat_and_partial_reply(tmp_path, tiny_models):
    models = tmp_path / "models"
    models.mkdir()
    for p in tiny_models.values():
        shutil.copy(p, models / p.name)
    db = tmp_path / "chats.sqlite3"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", TANDEM_DATA_DIR=str(tmp_path / "data"))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(models)], env=env,
                             cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = ""
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            if db.exists():
                try:
                    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as ro:
                        row = ro.execute("SELECT content, status FROM messages WHERE role='assistant'").fetchone()
                except sqlite3.OperationalError:
                    row = None
                if row and row[1] == "streaming" and len(row[0]) > 200:
                    seen = row[0]
                    break
            time.sleep(0.1)
        assert seen, "the reply never reached the database while streaming"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)

    store = ChatStore(open_database(db))
    assert store.recover_interrupted() == 1
    convs = store.list_conversations()
    assert len(convs) == 1
    msgs = store.get_messages(convs[0].id)
    assert [m.role for m in msgs] == ["user", "assistant"]
    assert msgs[0].content == "print the list of items"
    assert msgs[1].status == "stopped"
    assert msgs[1].content.startswith(seen)  # nothing that was saved got lost
