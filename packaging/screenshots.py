"""Take the documentation screenshots from the real app (real models, real engine) in a real X server:

    Xvfb :99 -screen 0 1920x1200x24 &
    DISPLAY=:99 QT_QPA_PLATFORM=xcb .venv/bin/python packaging/screenshots.py docs/screenshots

Uses the reference models from the package index: SmolLM2-135M-Instruct F16 as target, its Q4_1 as draft,
Gemma-3-270M as the incompatible model the draft picker must refuse. The replies are the models' own (greedy,
drafted by the Q4_1: accepted draft tokens are shaded); the demo model does not reason, so the reasoning-block
shot (``reply-code-think.png``) shows a stored reply written for it, under the real app's rendering.
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


THINK_REPLY = """<think>
The user wants the same task in two languages. Python has the built-in sum(); Rust sums an iterator.
A small table will make the difference clear.
</think>
In Python the built-in does it:

```python
def total(values: list[float]) -> float:
    \"\"\"The sum of the values (0 for an empty list).\"\"\"
    return sum(values)
```

In Rust, sum an iterator:

```rust
fn total(values: &[f64]) -> f64 {
    values.iter().sum()
}
```

| | Python | Rust |
|---|---|---|
| Typing | dynamic | static |
| Empty list | `0` | `0.0` |

- both are one line
- **Rust** checks the types at compile time
"""


def server_page_shot(app: QApplication, w, out: Path) -> None:
    """The Server page, running, after one real request from an OpenAI-style client (httpx)."""
    import socket
    import threading

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    page = w.server_page
    page.port.setValue(port)
    w.show_page("server")
    assert page.start(), page.status.text()
    wait(app, lambda: not page.busy)  # it starts in the background
    assert page.running, page.status.text()

    def ask() -> None:
        base = page.server.base_url
        ids = [m["id"] for m in httpx.get(f"{base}/models", timeout=30).json()["data"]]
        target = next(i for i in ids if i.endswith("F16"))
        httpx.post(f"{base}/chat/completions", timeout=120, json={
            "model": target, "max_tokens": 64, "temperature": 0,
            "messages": [{"role": "user", "content": "List three prime numbers."}]})

    t = threading.Thread(target=ask)
    t.start()
    wait(app, lambda: not t.is_alive())
    pause(app, 0.5)
    w.grab().save(str(out / "server-page.png"))
    page.stop()
    wait(app, lambda: not page.busy)
    w.show_page("chat")


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication(sys.argv[:1])
    from app.library import reference_models as rm
    from app.library.local import LocalLibrary
    from app.store.chats import ChatStore
    from app.store.db import open_database
    from app.store.settings import SettingsStore, model_key
    from app.ui.main_window import MainWindow
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
        settings = SettingsStore(conn)
        settings.set("load_last_model", False)
        settings.set("model_folders", [str(models)])
        settings.set_model_settings(model_key(target), {"n_ctx": 4096, "temperature": 0.0, "max_tokens": 200,
                                                        "draft_source": "draft-model", "draft_path": str(draft)})
        w = MainWindow(ChatStore(conn), settings, LocalLibrary([models], cache_path=work / "lib.json"))
        w.confirm = lambda title, text: True
        w.resize(1280, 800)
        w.show()
        wait(app, lambda w=w: len(w.browser.models()) == 3 and not w.browser.is_busy())
        w.load_model(next(m for m in w.browser.models() if Path(m.path) == target))
        wait(app, lambda w=w: w.chat.model_ready() and w.speculation == "draft-model")
        w.chat.set_highlight_drafts(True)
        w.chat.send("Write a Python function that checks whether a number is prime, with a docstring.")
        wait(app, lambda w=w: not w.chat.is_generating())
        pause(app, 1.5)  # the monitor and the final Markdown render
        w.grab().save(str(out / f"main-window-{theme}.png"))
        for size in ((1920, 1080), (1024, 640)):
            w.resize(*size)
            pause(app, 1.0)
            w.grab().save(str(out / f"main-window-{theme}-{size[0]}x{size[1]}.png"))
        w.resize(1280, 800)
        pause(app, 0.5)
        if theme == "dark":
            w.chat.message_view.grab().save(str(out / "streamed-reply-draft-tokens.png"))
            w.panel.grab().save(str(out / "settings-panel.png"))
        else:
            conv = w.chats.create_conversation("Reasoning and code")
            w.chats.append_message(conv.id, "user", "Sum a list in Python and in Rust; compare them in a table.")
            w.chats.append_message(conv.id, "assistant", THINK_REPLY)
            w.chat.conversation_list.refresh()
            w.chat.open_conversation(conv.id)
            pause(app, 1.0)
            w.chat.message_view.grab().save(str(out / "reply-code-think.png"))
            w.chat.message_view.blocks()[-1].think_button.click()
            pause(app, 0.5)
            w.chat.message_view.grab().save(str(out / "reply-think-expanded.png"))
            server_page_shot(app, w, out)
        w.close()
        wait(app, lambda w=w: not w.bridge.is_running())
    QTimer.singleShot(0, app.quit)
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")))
