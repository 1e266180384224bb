"""The settings dialog: loading, validating and saving the app settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from app.engine.session import ModelSettings
from app.store.db import open_database
from app.store.settings import DEFAULT_APP_SETTINGS, SettingsStore
from app.ui.settings_dialog import CONTEXT_MAX, CONTEXT_MIN, SettingsDialog, lmstudio_folders


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TANDEM_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def store(tmp_path: Path, data_dir: Path) -> Iterator[SettingsStore]:
    conn = open_database(tmp_path / "settings.sqlite3")
    yield SettingsStore(conn)
    conn.close()


class Picker:
    def __init__(self) -> None:
        self.answer: Path | None = None

    def __call__(self, parent: object) -> Path | None:
        return self.answer


def make(qtbot, store: SettingsStore, lmstudio: list[Path] | None = None, picker: Picker | None = None):
    dialog = SettingsDialog(
        store, folder_dialog=picker or Picker(), lmstudio_candidates=lambda: list(lmstudio or []), cpu_count=8
    )
    qtbot.addWidget(dialog)
    return dialog


def test_defaults(qtbot, store: SettingsStore, data_dir: Path) -> None:
    d = make(qtbot, store)
    assert d.values() == {k: DEFAULT_APP_SETTINGS[k] for k in d.values()}  # the store's one table of defaults
    assert d.values()["default_ctx"] == ModelSettings.n_ctx and d.values()["remember_past_chats"] is True
    assert d.folders() == [data_dir / "models"]  # Tandem's own folder, shown, never stored
    assert d.threads_spin.text() == "Automatic"
    assert not d.remove_button.isEnabled()
    assert not d.lmstudio_button.isEnabled() and "not found" in d.lmstudio_button.toolTip()


def test_loads_stored_values(qtbot, store: SettingsStore, tmp_path: Path) -> None:
    store.set("model_folders", [str(tmp_path), "/somewhere/else"])
    store.set("theme", "dark")
    store.set("default_ctx", 32768)
    store.set("threads", 6)
    store.set("load_last_model", False)
    store.set("workers", ["127.0.0.1:50052", "not an address"])
    d = make(qtbot, store)
    assert d.values() == {
        "model_folders": [str(tmp_path), "/somewhere/else"],
        "theme": "dark",
        "default_ctx": 32768,
        "threads": 6,
        "remember_past_chats": True,
        "load_last_model": False,
        "workers": ["127.0.0.1:50052"],
        "workers_enabled": True,
    }
    assert d.theme_combo.currentText() == "Dark"


def test_bad_stored_values_fall_back(qtbot, store: SettingsStore) -> None:
    store.set("model_folders", "not a list")
    store.set("theme", "purple")
    store.set("default_ctx", "big")
    store.set("threads", True)
    d = make(qtbot, store)
    assert d.values() == {k: DEFAULT_APP_SETTINGS[k] for k in d.values()}  # the store's one table of defaults
    assert d.values()["default_ctx"] == ModelSettings.n_ctx and d.values()["remember_past_chats"] is True


def test_numbers_stay_in_range(qtbot, store: SettingsStore) -> None:
    d = make(qtbot, store)
    assert (
        (d.context_spin.minimum(), d.context_spin.maximum()) == (CONTEXT_MIN, CONTEXT_MAX) == (256, 1_048_576)
    )
    d.context_spin.setValue(10)
    assert d.context_spin.value() == 256
    d.context_spin.setValue(10**9)
    assert d.context_spin.value() == 1_048_576
    d.context_spin.setValue(8192)
    d.context_spin.lineEdit().selectAll()
    qtbot.keyClicks(d.context_spin.lineEdit(), "abc")  # letters are refused
    assert d.context_spin.value() == 8192
    assert (d.threads_spin.minimum(), d.threads_spin.maximum()) == (0, 8)
    d.threads_spin.setValue(100)
    assert d.threads_spin.value() == 8
    assert [d.theme_combo.itemData(i) for i in range(d.theme_combo.count())] == ["system", "light", "dark"]
    assert not d.theme_combo.isEditable()


def test_add_and_remove_folders(qtbot, store: SettingsStore, tmp_path: Path, data_dir: Path) -> None:
    picker = Picker()
    d = make(qtbot, store, picker=picker)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()

    picker.answer = a
    qtbot.mouseClick(d.add_button, Qt.MouseButton.LeftButton)
    picker.answer = None  # cancelled
    d.add_folder()
    picker.answer = b
    d.add_folder()
    assert d.values()["model_folders"] == [str(a), str(b)]
    assert d.message() == ""

    picker.answer = a
    d.add_folder()  # twice
    assert "already in the list" in d.message()
    picker.answer = tmp_path / "missing"
    d.add_folder()
    assert d.message() == f"not a folder: {tmp_path / 'missing'}"
    assert d.values()["model_folders"] == [str(a), str(b)]

    d.folder_list.setCurrentRow(1)  # a
    assert d.remove_button.isEnabled()
    qtbot.mouseClick(d.remove_button, Qt.MouseButton.LeftButton)
    assert d.values()["model_folders"] == [str(b)]

    d.folder_list.setCurrentRow(0)  # Tandem's own folder cannot be removed
    d.folder_list.item(0).setSelected(True)
    d.remove_selected()
    assert d.folders() == [data_dir / "models", b]


def test_lm_studio_folder(qtbot, store: SettingsStore, tmp_path: Path) -> None:
    lms = tmp_path / "home" / ".lmstudio" / "models"
    lms.mkdir(parents=True)
    d = make(qtbot, store, lmstudio=[lms])
    assert d.lmstudio_button.isEnabled() and str(lms) in d.lmstudio_button.toolTip()
    qtbot.mouseClick(d.lmstudio_button, Qt.MouseButton.LeftButton)
    assert d.values()["model_folders"] == [str(lms)]
    assert not d.lmstudio_button.isEnabled() and "already" in d.lmstudio_button.toolTip()


def test_lmstudio_folders_finds_both_layouts(tmp_path: Path) -> None:
    assert lmstudio_folders(tmp_path) == []
    old = tmp_path / ".cache" / "lm-studio" / "models"
    old.mkdir(parents=True)
    assert lmstudio_folders(tmp_path) == [old]
    new = tmp_path / ".lmstudio" / "models"
    new.mkdir(parents=True)
    assert lmstudio_folders(tmp_path) == [new, old]


def test_ok_saves_cancel_does_not(qtbot, store: SettingsStore, tmp_path: Path) -> None:
    picker = Picker()
    d = make(qtbot, store, picker=picker)
    picker.answer = tmp_path
    d.add_folder()
    d.theme_combo.setCurrentIndex(d.theme_combo.findData("light"))
    d.context_spin.setValue(16384)
    d.threads_spin.setValue(4)
    d.reject()
    assert store.get("theme") == "system" and store.get("default_ctx", None) is None

    d = make(qtbot, store, picker=picker)
    d.add_folder()
    d.theme_combo.setCurrentIndex(d.theme_combo.findData("light"))
    d.context_spin.setValue(16384)
    d.threads_spin.setValue(4)
    qtbot.mouseClick(d.button_box.button(QDialogButtonBox.StandardButton.Ok), Qt.MouseButton.LeftButton)
    assert d.result() == SettingsDialog.DialogCode.Accepted
    assert store.get("model_folders") == [str(tmp_path)]
    assert (store.get("theme"), store.get("default_ctx"), store.get("threads")) == ("light", 16384, 4)


def test_save_failure_keeps_the_dialog_open(
    qtbot, store: SettingsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make(qtbot, store)

    def fail(key: str, value: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "set", fail)
    d.show()
    d.accept()
    assert "could not be saved: disk full" in d.message()
    assert d.isVisible()


def test_past_chats_switch_is_saved_and_forgetting_calls_the_engine(qtbot, store: SettingsStore) -> None:
    forgotten: list[bool] = []
    dialog = SettingsDialog(store, folder_dialog=Picker(), lmstudio_candidates=list, cpu_count=8,
                            past_chats_size=lambda: 2_500_000, clear_past_chats=lambda: forgotten.append(True))
    qtbot.addWidget(dialog)
    assert dialog.past_chats_check.isChecked() and "2.5 MB remembered" in dialog.past_chats_label.text()
    dialog.clear_past_button.click()
    assert forgotten == [True] and "forgotten" in dialog.past_chats_label.text()
    dialog.past_chats_check.setChecked(False)
    dialog.button_box.button(QDialogButtonBox.StandardButton.Ok).click()
    assert store.get("remember_past_chats") is False
