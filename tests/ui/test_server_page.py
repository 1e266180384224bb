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


def start(qtbot, page) -> None:
    with qtbot.waitSignal(page.runningChanged, timeout=30000, check_params_cb=lambda on: on):
        assert page.start()


def stop(qtbot, page) -> None:
    with qtbot.waitSignal(page.runningChanged, timeout=30000, check_params_cb=lambda on: not on):
        page.stop()


def test_start_serve_log_and_stop(qtbot, page):
    page.port.setValue(free_port())
    start(qtbot, page)
    assert page.running and page.base_url.text().endswith("/v1") and "curl" in page.example.toPlainText()
    assert page.settings.get(SETTINGS_KEY)["port"] == page.port.value()
    r = httpx.post(f"{page.base_url.text()}/chat/completions", timeout=60,
                   json={"model": "org/repo/tiny-target", "messages": [{"role": "user", "content": "the value"}],
                         "max_tokens": 12, "temperature": 0})
    assert r.status_code == 200
    qtbot.waitUntil(lambda: "200" in page.log.toPlainText() and "tok/s" in page.log.toPlainText(), timeout=10000)
    assert not page.host.isEnabled()  # settings are locked while it runs
    stop(qtbot, page)
    assert not page.running and page.start_button.text() == "Start server"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{page.port.value()}/health")


def test_another_address_needs_an_api_key(qtbot, page):
    page.host.setCurrentText("0.0.0.0")
    page.port.setValue(free_port())
    assert not page.start()
    assert "API key" in page.status.text() and not page.running
    page.api_key.setText("k")
    page.host.setCurrentText("127.0.0.1")
    start(qtbot, page)
    assert "Bearer k" in page.example.toPlainText()
    stop(qtbot, page)


def test_start_and_stop_run_off_the_gui_thread(qtbot, page):
    # the page answers at once and shows what is under way, its buttons disabled; the result comes later
    page.port.setValue(free_port())
    assert page.start()
    assert page.busy and page.status.text() == "Starting…" and not page.running
    assert not page.start_button.isEnabled() and not page.host.isEnabled()
    assert page.start()  # a second click while starting changes nothing
    qtbot.waitUntil(lambda: page.running and not page.busy, timeout=30000)
    assert page.start_button.isEnabled() and page.start_button.text() == "Stop server"
    page.stop()
    assert page.busy and page.status.text() == "Stopping…" and not page.start_button.isEnabled()
    qtbot.waitUntil(lambda: not page.busy, timeout=30000)
    assert not page.running and page.status.text() == "Stopped" and page.start_button.text() == "Start server"


def test_a_port_in_use_is_one_line_after_starting(qtbot, page):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        page.port.setValue(taken.getsockname()[1])
        assert page.start()
        qtbot.waitUntil(lambda: not page.busy, timeout=30000)
    assert not page.running and page.status.text().startswith("⚠ cannot listen on 127.0.0.1:")
    assert "port is in use" in page.status.text() and page.start_button.isEnabled()


def test_closing_while_it_starts_still_stops_the_server_first(qtbot, tmp_path, tiny_models):
    folder = tmp_path / "models" / "org" / "repo"
    folder.mkdir(parents=True)
    shutil.copy(tiny_models["target"], folder / tiny_models["target"].name)
    bridge = EngineBridge()
    w = ServerPage(bridge, SettingsStore(open_database(tmp_path / "db.sqlite3")), lambda: [tmp_path / "models"])
    qtbot.addWidget(w)
    port = free_port()
    w.port.setValue(port)
    assert w.start() and w.busy
    assert bridge.shutdown()  # what the window's close does: the page waits for the start, then stops it
    assert not w.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
