"""The settings dialog's workers list: addresses checked as typed, Check asks real workers, saved settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.engine.workers import Endpoint
from app.store.db import open_database
from app.store.settings import SettingsStore
from app.ui.settings_dialog import SettingsDialog
from app.ui.workers_editor import WorkersEditor, workers_for_target
from tests.fixtures_workers import free_port


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SettingsStore]:
    monkeypatch.setenv("TANDEM_DATA_DIR", str(tmp_path / "data"))
    conn = open_database(tmp_path / "settings.sqlite3")
    yield SettingsStore(conn)
    conn.close()


def test_bad_addresses_are_refused_with_the_reason(qtbot):
    editor = WorkersEditor()
    qtbot.addWidget(editor)
    assert not editor.check_button.isEnabled()  # nothing to check yet
    for text, needle in (("nohost", "not HOST:PORT"), ("box:0", "1 to 65535"), ("[::1]:1", "IPv6")):
        editor.address_edit.setText(text)
        editor.add_from_edit()
        assert needle in editor.message() and editor.workers() == []
        assert editor.address_edit.text() == text  # what was typed stays, to be fixed
    editor.address_edit.setText("Box.lan:50052")
    editor.add_from_edit()
    assert editor.workers() == ["box.lan:50052"] and editor.message() == "" and editor.address_edit.text() == ""
    assert not editor.add("box.lan:50052") and "already" in editor.message()
    editor.list.setCurrentRow(0)
    editor.remove_selected()
    assert editor.workers() == []


def test_check_shows_each_workers_memory_or_why_it_cannot_be_used(qtbot, two_workers):
    editor = WorkersEditor()
    qtbot.addWidget(editor)
    dead = f"127.0.0.1:{free_port()}"
    editor.set_workers([str(two_workers[0].endpoint), dead], enabled=True)
    with qtbot.waitSignal(editor.checked, timeout=30_000):
        editor.check()
    live, gone = (editor.list.item(i).text() for i in range(2))
    assert live.startswith(f"{two_workers[0].endpoint}  —  RPC 7.0.0, 1 device") and "free of" in live
    assert gone.startswith(f"{dead}  —  ") and "unreachable" in gone
    assert editor.workers() == [str(two_workers[0].endpoint), dead]  # the list itself is unchanged
    assert editor.check_button.isEnabled()


def test_the_dialog_saves_the_workers_and_the_target_gets_them(qtbot, store):
    d = SettingsDialog(store, lmstudio_candidates=lambda: [], past_chats_size=lambda: 0)
    qtbot.addWidget(d)
    assert d.values()["workers"] == [] and d.values()["workers_enabled"] is True
    assert workers_for_target(store.get) == ()
    d.workers_editor.add("10.0.0.2:50052")
    d.workers_editor.add("10.0.0.3:50053")
    d.accept()
    assert store.get("workers") == ["10.0.0.2:50052", "10.0.0.3:50053"]
    assert workers_for_target(store.get) == (Endpoint("10.0.0.2", 50052), Endpoint("10.0.0.3", 50053))
    store.set("workers_enabled", False)  # off: the target loads here, the list is kept
    assert workers_for_target(store.get) == ()
    d2 = SettingsDialog(store, lmstudio_candidates=lambda: [], past_chats_size=lambda: 0)
    qtbot.addWidget(d2)
    assert not d2.workers_editor.enabled_check.isChecked() and d2.workers_editor.workers() == store.get("workers")
