"""Chat → Presets…: the named presets (system prompt + sampling + speculation): save what is set now, apply,
delete, import and export as JSON. The model bar's preset menu chooses among them.

``current(name)`` gives a preset of what is set now (the main window's). File dialogs only pick paths:
:meth:`PresetsDialog.import_file` and :meth:`PresetsDialog.export_file` do the work (and tests call them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.store.presets import Preset, PresetError, PresetStore, export_json

__all__ = ["PresetsDialog"]


def _describe(p: Preset) -> str:
    v = p.values
    parts = []
    if "temperature" in v:
        parts.append(f"temperature {v['temperature']}")
    if "draft_source" in v:
        parts.append(f"speculation {v['draft_source']}")
    prompt = " ".join(p.system_prompt.split())
    parts.append(f"system prompt: {prompt[:60] + '…' if len(prompt) > 60 else prompt or 'none'}")
    return " · ".join(parts)


class PresetsDialog(QDialog):
    presetsChanged = Signal()
    applyRequested = Signal(str)

    def __init__(self, store: PresetStore, current: Callable[[str], Preset], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Presets")
        self.store = store
        self.current = current
        self.list = QListWidget()
        self.list.itemDoubleClicked.connect(lambda _i: self.apply_selected())
        self.list.currentItemChanged.connect(lambda *_: self._update())
        self.detail = QLabel()
        self.detail.setWordWrap(True)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.save_button = QPushButton("Save current as…")
        self.save_button.setToolTip("A preset of this chat's system prompt and the sampling and speculation settings")
        self.save_button.clicked.connect(self._save_dialog)
        self.apply_button = QPushButton("Apply")
        self.apply_button.clicked.connect(self.apply_selected)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self.delete_selected)
        self.import_button = QPushButton("Import…")
        self.import_button.clicked.connect(self._import_dialog)
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(self._export_dialog)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        side = QVBoxLayout()
        for b in (self.save_button, self.apply_button, self.delete_button, self.import_button, self.export_button):
            side.addWidget(b)
        side.addStretch(1)
        side.addWidget(close)
        row = QHBoxLayout()
        row.addWidget(self.list, 1)
        row.addLayout(side)
        col = QVBoxLayout(self)
        col.addLayout(row, 1)
        col.addWidget(self.detail)
        col.addWidget(self.status)
        self.resize(560, 380)
        self.refresh()

    def refresh(self) -> None:
        selected = self.selected_name()
        self.list.clear()
        for p in self.store.list():
            item = QListWidgetItem(p.name)
            item.setData(Qt.ItemDataRole.UserRole, p.name)
            item.setToolTip(_describe(p))
            self.list.addItem(item)
            if p.name == selected:
                self.list.setCurrentItem(item)
        self._update()

    def names(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def selected_name(self) -> str:
        item = self.list.currentItem()
        return str(item.data(Qt.ItemDataRole.UserRole)) if item is not None else ""

    def select(self, name: str) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).text().casefold() == name.casefold():
                self.list.setCurrentRow(i)

    # -- actions -------------------------------------------------------------------------------------
    def save_current(self, name: str) -> bool:
        try:
            saved = self.store.save(self.current(name))
        except PresetError as e:
            self._say(str(e), error=True)
            return False
        self.refresh()
        self.select(saved.name)
        self._say(f"Saved {saved.name}")
        self.presetsChanged.emit()
        return True

    def apply_selected(self) -> None:
        if self.selected_name():
            self.applyRequested.emit(self.selected_name())

    def delete_selected(self) -> bool:
        name = self.selected_name()
        if not name or not self.store.delete(name):
            return False
        self.refresh()
        self._say(f"Deleted {name}")
        self.presetsChanged.emit()
        return True

    def import_file(self, path: Path) -> bool:
        try:
            imported = self.store.import_json(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            self._say(f"Could not read {Path(path).name}: {e}", error=True)
            return False
        except PresetError as e:
            self._say(f"{Path(path).name}: {e}", error=True)
            return False
        self.refresh()
        self._say(f"Imported {len(imported)} preset(s): {', '.join(p.name for p in imported)}")
        self.presetsChanged.emit()
        return True

    def export_file(self, path: Path) -> bool:
        try:
            Path(path).write_text(export_json(self.store.list()), encoding="utf-8")
        except OSError as e:
            self._say(f"Could not write {Path(path).name}: {e}", error=True)
            return False
        self._say(f"Exported {self.list.count()} preset(s) to {path}")
        return True

    # -- dialogs ------------------------------------------------------------------------------------------
    def _save_dialog(self) -> None:
        name, ok = QInputDialog.getText(self, "Save preset", "Name:", text=self.selected_name())
        if ok and name.strip():
            self.save_current(name)

    def _import_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import presets", "", "Presets (*.json);;All files (*)")
        if path:
            self.import_file(Path(path))

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export presets", "tandem-presets.json", "Presets (*.json)")
        if path:
            self.export_file(Path(path))

    def _update(self) -> None:
        has = bool(self.selected_name())
        self.apply_button.setEnabled(has)
        self.delete_button.setEnabled(has)
        self.export_button.setEnabled(self.list.count() > 0)
        preset = self.store.get(self.selected_name()) if has else None
        self.detail.setText(_describe(preset) if preset else "Save the current settings to make a preset.")

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setText(("⚠ " if error else "") + text)
