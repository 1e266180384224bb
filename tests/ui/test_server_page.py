"""The Server page with a real bridge, a real server and the tiny models."""

from __future__ import annotations

import shutil
import socket

import httpx
import pytest

from app.store.db import open_database
from app.store.settings import SettingsStore
from app.ui.bridge import EngineBridge
from app.ui.server_page import SETTINGS_KEY, ServerPage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def page(qtbot, tmp_path, tiny_models):
    folder = tmp_path / "models" / "org" / "repo"
    folder.mkdir(parents=True)
    for p in tiny_models.values():
        shutil.copy(p, folder / p.name)
    bridge = EngineBridge()
    settings = SettingsStore(open_database(tmp_path / "db.sqlite3"))
    w = ServerPage(bridge, settings, lambda: [tmp_path / "models"])
    qtbot.addWidget(w)
    yield w
    assert bridge.shutdown()
    assert not w.running  # the bridge's shutdown stopped the server first


def test_start_serve_log_and_stop(qtbot, page):
    page.port.setValue(free_port())
    assert page.start()
    assert page.running and page.base_url.text().endswith("/v1") and "curl" in page.example.toPlainText()
    assert page.settings.get(SETTINGS_KEY)["port"] == page.port.value()
    r = httpx.post(f"{page.base_url.text()}/chat/completions", timeout=60,
                   json={"model": "org/repo/tiny-target", "messages": [{"role": "user", "content": "the value"}],
                         "max_tokens": 12, "temperature": 0})
    assert r.status_code == 200
    qtbot.waitUntil(lambda: "200" in page.log.toPlainText() and "tok/s" in page.log.toPlainText(), timeout=10000)
    assert not page.host.isEnabled()  # settings are locked while it runs
    page.stop()
    assert not page.running and page.start_button.text() == "Start server"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{page.port.value()}/health")


def test_another_address_needs_an_api_key(page):
    page.host.setCurrentText("0.0.0.0")
    page.port.setValue(free_port())
    assert not page.start()
    assert "API key" in page.status.text() and not page.running
    page.api_key.setText("k")
    page.host.setCurrentText("127.0.0.1")
    assert page.start() and "Bearer k" in page.example.toPlainText()
    page.stop()
