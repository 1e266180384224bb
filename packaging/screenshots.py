"""Take the documentation screenshots from the real app (real models, real engine, offscreen or Xvfb).

    QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/screenshots.py docs/screenshots

Uses the reference models from the package index: SmolLM2-135M-Instruct F16 as target, its Q4_1 as draft,
Gemma-3-270M as the incompatible model the draft picker must refuse.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication


def wait(app: QApplication, cond, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not get there in time")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)


def pause(app: QApplication, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication(sys.argv[:1])
    from app.library import reference_models as rm
    from app.library.local import LocalLibrary
    from app.store.chats import ChatStore
    from app.store.db import open_database
    from app.store.settings import SettingsStore, model_key
    from app.ui.main_window import APP_DEFAULTS, MainWindow
    from app.ui.theme import apply_theme

    work = Path(tempfile.mkdtemp(prefix="tandem-shots-"))
    models = work / "models"
    for path, sub in ((rm.smollm2_f16(), "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"),
                      (rm.smollm2_q4_1(), "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"),
                      (rm.gemma3_270m(), "google/gemma-3-270m-GGUF")):
        (models / sub).mkdir(parents=True, exist_ok=True)
        (models / sub / path.name).symlink_to(path)
    target = models / "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF" / rm.smollm2_f16().name
    draft = models / "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF" / rm.smollm2_q4_1().name

    for theme in ("light", "dark"):
        apply_theme(app, theme)
        conn = open_database(work / f"{theme}.sqlite3")
        settings = SettingsStore(conn, defaults=APP_DEFAULTS)
        settings.set("model_folders", [str(models)])
        settings.set_model_settings(model_key(target), {"n_ctx": 4096, "temperature": 0.0, "max_tokens": 200,
                                                        "draft_source": "draft-model", "draft_path": str(draft)})
        w = MainWindow(ChatStore(conn), settings, LocalLibrary([models], cache_path=work / "lib.json"))
        w.confirm = lambda title, text: True
        w.resize(1500, 900)
        w.show()
        wait(app, lambda w=w: len(w.browser.models()) == 3 and not w.browser.is_busy())
        w.load_model(next(m for m in w.browser.models() if Path(m.path) == target))
        wait(app, lambda w=w: w.chat.model_ready() and w.speculation == "draft-model")
        w.chat.set_highlight_drafts(theme == "dark")
        w.highlight_action.setChecked(theme == "dark")
        w.chat.send("Write a Python function that checks whether a number is prime, with a docstring.")
        wait(app, lambda w=w: not w.chat.is_generating())
        pause(app, 1.5)  # the monitor and the final Markdown render
        w.grab().save(str(out / f"main-window-{theme}.png"))
        if theme == "dark":
            w.chat.grab().save(str(out / "streamed-reply-draft-tokens.png"))
            w.panel.grab().save(str(out / "settings-panel.png"))
        w.close()
        wait(app, lambda w=w: not w.bridge.is_running())
    QTimer.singleShot(0, app.quit)
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")))
