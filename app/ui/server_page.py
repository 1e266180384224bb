"""The Server page: start and stop the local OpenAI-compatible server (app.server) from the app.

The server runs on the window's engine service (`EngineBridge.service`), so a chat turn and a server
request queue behind each other instead of competing for the engine. The page sets the address, port,
API key, CORS origins and idle TTL (the same rules as `tandem serve`: another address than this computer
needs an API key), shows the live request log (tok/s, draft acceptance) and the queue depth, and offers the
base URL and curl / Python examples to copy. Address, port, CORS and TTL are remembered (the API key is not).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
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

from app.library.local import LocalLibrary
from app.server.api import RequestRecord
from app.server.config import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_TTL_SECONDS, ServerConfig, ServerError
from app.server.models import ModelCatalog, PresetSource
from app.server.runner import LocalServer
from app.store.db import database_file, open_database
from app.store.settings import SettingsStore
from app.ui.bridge import EngineBridge
from app.ui.workers_editor import workers_for_target

__all__ = ["ServerPage", "SETTINGS_KEY", "examples"]

SETTINGS_KEY = "server"
LOG_LINES = 500


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
        db = database_file(settings.conn)
        self.presets = PresetSource((lambda: SettingsStore(open_database(db))) if db is not None else None)
        self.server: LocalServer | None = None
        self._record.connect(self._on_record, Qt.ConnectionType.QueuedConnection)
        bridge.events.queueDepth.connect(self._on_queue_depth)
        bridge.aboutToShutdown.connect(self.stop)
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

    # -- start / stop -------------------------------------------------------------------------------------
    def toggle(self) -> None:
        if self.running:
            self.stop()
        else:
            self.start()

    def start(self) -> bool:
        """Start with the page's settings; False (the reason shown) when it cannot."""
        if self.running:
            return True
        config = self.config()
        try:
            catalog = ModelCatalog(LocalLibrary(self.library_folders(), cache_path=None))
            catalog.refresh()
            workers = workers_for_target(self.settings.get)  # Settings → Workers, as the chat's target uses
            server = LocalServer(self.bridge.service, catalog, config, presets=self.presets,
                                 on_record=self._record.emit, workers=workers)
            server.start()
        except (ServerError, OSError, ValueError) as e:
            self.status.setText(f"⚠ {e}")
            return False
        self.server = server
        self.settings.set(SETTINGS_KEY, {"host": config.host, "port": config.port, "cors": list(config.cors_origins),
                                         "ttl": int(config.ttl_seconds)})
        models = catalog.models()
        self.status.setText(f"Running at {server.base_url} · {len(models)} models")
        self.base_url.setText(server.base_url)
        self.example.setPlainText(examples(server.base_url, models[0][0] if models else "MODEL-ID", config.api_key))
        self._update()
        self.runningChanged.emit(True)
        return True

    def stop(self) -> None:
        if self.server is None:
            return
        self.server.stop()
        self.server = None
        self.status.setText("Stopped")
        self._update()
        self.runningChanged.emit(False)

    # -- events ---------------------------------------------------------------------------------------------
    def _on_record(self, record: RequestRecord) -> None:
        self.log.appendPlainText(record.summary())

    def _on_queue_depth(self, depth: int) -> None:
        self.queue_label.setText(f"Queue: {depth} waiting" if depth else "Queue: empty")

    def _update(self) -> None:
        running = self.running
        self.start_button.setText("Stop server" if running else "Start server")
        for w in (self.host, self.port, self.api_key, self.generate_key, self.cors, self.ttl):
            w.setEnabled(not running)
        self.copy_url.setEnabled(running)
        self.copy_example.setEnabled(running)
        if not running:
            self.base_url.clear()
            self.example.clear()
