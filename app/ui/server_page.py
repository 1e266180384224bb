"""The Server page: start and stop the local OpenAI-compatible server (app.server) from the app.

The server runs on the window's engine service (`EngineBridge.service`), so a chat turn and a server
request queue behind each other instead of competing for the engine. The page sets the address, port,
API key, CORS origins and idle TTL (the same rules as `tandem serve`: another address than this computer
needs an API key), shows the live request log (tok/s, draft acceptance) and the queue depth, and offers the
base URL and curl / Python examples to copy. Address, port, CORS and TTL are remembered (the API key is not).
Starting (a library scan, binding the port) and stopping (closing open streams) run on the page's own thread
pool, the page showing "Starting…" / "Stopping…" with its buttons disabled meanwhile; when the window closes,
`EngineBridge.aboutToShutdown` makes the page wait for them and stop the server before the engine stops.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from PySide6.QtCore import Qt, QThreadPool, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.engine.errors import error_message
from app.library.local import LocalLibrary
from app.server.api import RequestRecord
from app.server.config import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_TTL_SECONDS, ServerConfig, ServerError
from app.server.models import ModelCatalog, PresetSource
from app.server.runner import LocalServer
from app.store.settings import SettingsStore
from app.ui.background import Relay, run_in_pool
from app.ui.bridge import EngineBridge
from app.ui.workers_editor import workers_for_target

__all__ = ["ServerPage", "SETTINGS_KEY", "examples"]

SETTINGS_KEY = "server"
LOG_LINES = 500
#: At the window's close, how long to wait for a start or a stop still under way (then the server is stopped).
SHUTDOWN_WAIT_MS = 30_000


def _reason(e: Exception) -> str:
    """A start's or stop's failure in one line: the server's own words, or the class name and message."""
    return str(e) if isinstance(e, (ServerError, OSError, ValueError)) else error_message(e)


def examples(base_url: str, model: str, api_key: str | None) -> str:
    """curl and Python (openai client) examples for `base_url`."""
    auth = f' -H "Authorization: Bearer {api_key}"' if api_key else ""
    key = repr(api_key) if api_key else '"not-needed"'
    return (
        f"curl {base_url}/chat/completions -H \"Content-Type: application/json\"{auth} \\\n"
        f"  -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'\n\n"
        "from openai import OpenAI\n"
        f"client = OpenAI(base_url=\"{base_url}\", api_key={key})\n"
        f"reply = client.chat.completions.create(model=\"{model}\", messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}])\n"
        "print(reply.choices[0].message.content)\n"
    )


class ServerPage(QWidget):
    """Start/stop, settings, log and examples of the local server."""

    runningChanged = Signal(bool)
    _record = Signal(object)  # a RequestRecord from the server's thread (delivered queued)

    def __init__(self, bridge: EngineBridge, settings: SettingsStore, library_folders: Callable[[], list],
                 parent: QWidget | None = None) -> None:
        """`library_folders()`: the folders whose models the server offers (the window's library)."""
        super().__init__(parent)
        self.bridge = bridge
        self.settings = settings
        self.library_folders = library_folders
        # the remembered presets, read by the engine's worker thread on its own connection to the same file
        self.presets = PresetSource(settings.opener())
        self.server: LocalServer | None = None
        # starting (a library scan, binding, waiting for uvicorn) and stopping (closing open streams) block for
        # seconds: they run on this pool, one at a time, never on the GUI thread
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._busy = ""  # "starting" / "stopping" while a job runs, else ""
        self._launched: LocalServer | None = None  # the server a start job made (set there, before it binds)
        self._closing = False
        self._record.connect(self._on_record, Qt.ConnectionType.QueuedConnection)
        bridge.events.queueDepth.connect(self._on_queue_depth)
        bridge.aboutToShutdown.connect(self.shutdown)
        stored = settings.get(SETTINGS_KEY, {})
        stored = stored if isinstance(stored, dict) else {}

        form = QFormLayout()
        self.host = QComboBox()
        self.host.setEditable(True)
        self.host.addItems([DEFAULT_HOST, "0.0.0.0"])
        self.host.setCurrentText(str(stored.get("host", DEFAULT_HOST)))
        self.host.setToolTip("127.0.0.1: this computer only. Any other address needs an API key.")
        form.addRow("Address", self.host)
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(int(stored.get("port", DEFAULT_PORT)))
        form.addRow("Port", self.port)
        key_row = QHBoxLayout()
        self.api_key = QLineEdit()
        self.api_key.setEchoMode(QLineEdit.EchoMode.PasswordEchoOnEdit)
        self.api_key.setPlaceholderText("none (only allowed on 127.0.0.1)")
        self.generate_key = QPushButton("Generate")
        self.generate_key.clicked.connect(lambda: self.api_key.setText(secrets.token_urlsafe(24)))
        key_row.addWidget(self.api_key, 1)
        key_row.addWidget(self.generate_key)
        form.addRow("API key", key_row)
        self.cors = QLineEdit(", ".join(stored.get("cors", [])))
        self.cors.setPlaceholderText("off — or origins allowed to call from a browser, e.g. http://localhost:3000")
        form.addRow("CORS", self.cors)
        self.ttl = QSpinBox()
        self.ttl.setRange(0, 24 * 3600)
        self.ttl.setSuffix(" s")
        self.ttl.setSpecialValueText("never")
        self.ttl.setValue(int(stored.get("ttl", DEFAULT_TTL_SECONDS)))
        self.ttl.setToolTip("Unload a model the server loaded after it was idle this long")
        form.addRow("Idle unload", self.ttl)

        self.start_button = QPushButton("Start server")
        self.start_button.clicked.connect(self.toggle)
        self.status = QLabel("Stopped")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        url_row = QHBoxLayout()
        self.base_url = QLineEdit()
        self.base_url.setReadOnly(True)
        self.copy_url = QPushButton("Copy")
        self.copy_url.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.base_url.text()))
        url_row.addWidget(QLabel("base_url"))
        url_row.addWidget(self.base_url, 1)
        url_row.addWidget(self.copy_url)
        self.example = QPlainTextEdit()
        self.example.setReadOnly(True)
        self.example.setMaximumHeight(130)
        self.copy_example = QPushButton("Copy example")
        self.copy_example.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.example.toPlainText()))
        self.queue_label = QLabel("Queue: empty")
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_LINES)
        self.log.setPlaceholderText("Requests appear here: endpoint, status, model, tok/s, draft acceptance")

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.status, 1)
        layout.addLayout(buttons)
        layout.addLayout(url_row)
        layout.addWidget(self.example)
        layout.addWidget(self.copy_example, 0, Qt.AlignmentFlag.AlignRight)
        layout.addWidget(self.queue_label)
        layout.addWidget(self.log, 1)
        self._update()

    # -- state --------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.server is not None and self.server.running

    def config(self) -> ServerConfig:
        cors = tuple(o.strip() for o in self.cors.text().split(",") if o.strip())
        return ServerConfig(host=self.host.currentText().strip(), port=self.port.value(),
                            api_key=self.api_key.text().strip() or None, cors_origins=cors,
                            ttl_seconds=self.ttl.value())

    @property
    def busy(self) -> bool:
        """A start or a stop is under way (the buttons wait for it)."""
        return bool(self._busy)

    # -- start / stop -------------------------------------------------------------------------------------
    def toggle(self) -> None:
        if self.running:
            self.stop()
        else:
            self.start()

    def start(self) -> bool:
        """Start with the page's settings in the background: True once under way (`runningChanged(True)` when it
        serves), False (the reason shown) when the settings are refused."""
        if self.running or self._busy or self._closing:
            return self.running or self._busy == "starting"
        config = self.config()
        try:
            config.validate()
        except ServerError as e:
            self.status.setText(f"⚠ {e}")
            return False
        folders = list(self.library_folders())
        workers = workers_for_target(self.settings.get)  # Settings → Workers, as the chat's target uses
        self._launched = None

        def launch(_relay: Relay) -> tuple[LocalServer, int, str]:
            catalog = ModelCatalog(LocalLibrary(folders, cache_path=None))
            catalog.refresh()
            server = LocalServer(self.bridge.service, catalog, config, presets=self.presets,
                                 on_record=self._record.emit, workers=workers)
            self._launched = server  # the window's close stops it even before the result arrives
            server.start()
            models = catalog.models()
            return server, len(models), models[0][0] if models else "MODEL-ID"

        self._set_busy("starting", "Starting…")
        run_in_pool(self._pool, self, launch, self._on_started, self._on_start_failed, describe=_reason)
        return True

    def stop(self) -> None:
        """Stop in the background (`runningChanged(False)` once it has stopped)."""
        if self.server is None or self._busy:
            return
        server = self.server
        self._set_busy("stopping", "Stopping…")
        run_in_pool(self._pool, self, lambda _relay: server.stop(), self._on_stopped, self._on_stop_failed,
                    describe=_reason)

    def shutdown(self) -> None:
        """The window closes: wait for a start or stop under way, then stop the server (before the engine)."""
        self._closing = True
        self._pool.waitForDone(SHUTDOWN_WAIT_MS)
        for server in {id(s): s for s in (self.server, self._launched) if s is not None}.values():
            server.stop()
        self.server = self._launched = None

    def _set_busy(self, busy: str, text: str) -> None:
        self._busy = busy
        self.status.setText(text)
        self._update()

    def _on_started(self, result: object) -> None:
        server, count, first = result  # type: ignore[misc]
        self._busy = ""
        self._launched = None
        if self._closing:
            server.stop()
            return
        self.server = server
        config = server.config
        self.settings.set(SETTINGS_KEY, {"host": config.host, "port": config.port, "cors": list(config.cors_origins),
                                         "ttl": int(config.ttl_seconds)})
        self.status.setText(f"Running at {server.base_url} · {count} models")
        self.base_url.setText(server.base_url)
        self.example.setPlainText(examples(server.base_url, first, config.api_key))
        self._update()
        self.runningChanged.emit(True)

    def _on_start_failed(self, message: str) -> None:
        self._busy = ""
        self._launched = None
        self.status.setText(f"⚠ {message}")
        self._update()

    def _on_stopped(self, stopped: object) -> None:
        self._busy = ""
        self.server = None
        self.status.setText("Stopped" if stopped else "Stopped (a request was still closing)")
        self._update()
        self.runningChanged.emit(False)

    def _on_stop_failed(self, message: str) -> None:
        self._busy = ""
        self.status.setText(f"⚠ could not stop the server: {message}")
        self._update()

    # -- events ---------------------------------------------------------------------------------------------
    def _on_record(self, record: RequestRecord) -> None:
        self.log.appendPlainText(record.summary())

    def _on_queue_depth(self, depth: int) -> None:
        self.queue_label.setText(f"Queue: {depth} waiting" if depth else "Queue: empty")

    def _update(self) -> None:
        running = self.running
        self.start_button.setText({"starting": "Starting…", "stopping": "Stopping…"}.get(
            self._busy, "Stop server" if running else "Start server"))
        self.start_button.setEnabled(not self._busy)
        for w in (self.host, self.port, self.api_key, self.generate_key, self.cors, self.ttl):
            w.setEnabled(not running and not self._busy)
        self.copy_url.setEnabled(running)
        self.copy_example.setEnabled(running)
        if not running:
            self.base_url.clear()
            self.example.clear()
