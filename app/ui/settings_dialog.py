"""The settings dialog: model folders, theme, default context length, threads, past chats for drafting,
workers (other machines for the target, `app.ui.workers_editor`).

Edits the app settings of a :class:`~app.store.settings.SettingsStore` and writes them when the dialog
is accepted (OK); Cancel leaves the store untouched. Every field only accepts valid values: spin boxes
bound the numbers, the theme is a fixed choice, and folders are added through a folder picker (and
checked to be folders) rather than typed.

Keys written: ``model_folders`` (list of path strings: the user's own folders), ``theme`` ("system" |
"light" | "dark"), ``default_ctx`` (default context length, int 256..1048576), ``threads`` (int,
0 = automatic), ``remember_past_chats`` (bool: draft from past chats; "Forget past chats" deletes what is
remembered at once, through the window's callback), ``load_last_model`` (bool: load the model used last when
the app starts; the first time, the demo model), ``workers`` (list of "HOST:PORT") and ``workers_enabled``
(bool). Defaults: ``DEFAULT_APP_SETTINGS``. Tandem's own models folder (:func:`~app.library.local.default_models_folder`) is always
searched: the dialog shows it first, greyed, and never stores or removes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from app.engine.units import format_bytes
from app.library.local import default_models_folder
from app.store.settings import DEFAULT_APP_SETTINGS, SettingsStore
from app.ui.workers_editor import WorkersEditor

__all__ = [
    "CONTEXT_MAX",
    "CONTEXT_MIN",
    "THEMES",
    "SettingsDialog",
    "lmstudio_folders",
]

CONTEXT_MIN = 256
CONTEXT_MAX = 1_048_576
THEMES = (("system", "Follow the system"), ("light", "Light"), ("dark", "Dark"))

_BUILTIN_ROLE = Qt.ItemDataRole.UserRole + 1

FolderDialog = Callable[[QWidget], "Path | str | None"]


def lmstudio_folders(home: Path | None = None) -> list[Path]:
    """LM Studio's model folders that exist: ``~/.lmstudio/models`` (current) and
    ``~/.cache/lm-studio/models`` (older versions)."""
    home = home if home is not None else Path.home()
    candidates = [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]
    return [p for p in candidates if p.is_dir()]


def _default_folder_dialog(parent: QWidget) -> str | None:
    folder = QFileDialog.getExistingDirectory(parent, "Add a models folder", str(Path.home()))
    return folder or None


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


class SettingsDialog(QDialog):
    """Edits the app settings in `store`; `accept()` saves them."""

    def __init__(
        self,
        store: SettingsStore,
        parent: QWidget | None = None,
        *,
        folder_dialog: FolderDialog | None = None,
        lmstudio_candidates: Callable[[], Sequence[Path]] | None = None,
        cpu_count: int | None = None,
        past_chats_size: Callable[[], int] | None = None,
        clear_past_chats: Callable[[], None] | None = None,
    ) -> None:
        """`past_chats_size` (bytes remembered) and `clear_past_chats` come from the engine's side (the window)."""
        super().__init__(parent)
        self._past_chats_size = past_chats_size
        self._clear_past_chats_cb = clear_past_chats
        self.setWindowTitle("Settings")
        self.setModal(True)
        self.store = store
        self.folder_dialog: FolderDialog = folder_dialog or _default_folder_dialog
        self._lmstudio = lmstudio_candidates or lmstudio_folders
        self._cpu_count = max(1, cpu_count or os.cpu_count() or 1)
        self._build_ui()
        self._load()

    # -- construction ---------------------------------------------------------------------------------

    def _build_ui(self) -> None:
        style = self.style()

        # models folders
        self.folder_list = QListWidget(self)
        self.folder_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.folder_list.setMinimumHeight(110)
        self.folder_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.folder_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.folder_list.itemSelectionChanged.connect(self._update_folder_buttons)
        self.add_button = QPushButton(style.standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon), "Add…")
        self.add_button.setToolTip("Add a folder with GGUF models (searched recursively)")
        self.add_button.clicked.connect(self.add_folder)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Stop looking in the selected folders (no files are deleted)")
        self.remove_button.clicked.connect(self.remove_selected)
        self.lmstudio_button = QPushButton("Add LM Studio folder")
        self.lmstudio_button.clicked.connect(self.add_lmstudio_folder)
        buttons = QVBoxLayout()
        for b in (self.add_button, self.remove_button, self.lmstudio_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        folders_row = QHBoxLayout()
        folders_row.addWidget(self.folder_list, 1)
        folders_row.addLayout(buttons)
        folders_hint = QLabel(
            "Tandem lists every <code>.gguf</code> file in these folders and their sub-folders.", self
        )
        folders_hint.setWordWrap(True)
        folders_hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        folders_box = QGroupBox("Model folders", self)
        fl = QVBoxLayout(folders_box)
        fl.addLayout(folders_row)
        fl.addWidget(folders_hint)

        # general
        self.theme_combo = QComboBox(self)
        for value, label in THEMES:
            self.theme_combo.addItem(label, value)
        self.context_spin = QSpinBox(self)
        self.context_spin.setRange(CONTEXT_MIN, CONTEXT_MAX)
        self.context_spin.setSingleStep(1024)
        self.context_spin.setGroupSeparatorShown(True)
        self.context_spin.setSuffix(" tokens")
        self.context_spin.setAccelerated(True)
        self.context_spin.setToolTip(
            f"Context window for newly loaded models ({CONTEXT_MIN:,}–{CONTEXT_MAX:,} tokens); "
            "a model's own maximum still applies. Larger contexts need more memory."
        )
        self.threads_spin = QSpinBox(self)
        self.threads_spin.setRange(0, self._cpu_count)
        self.threads_spin.setSpecialValueText("Automatic")
        self.threads_spin.setToolTip(f"CPU threads for generation: Automatic, or 1–{self._cpu_count}")
        general_box = QGroupBox("General", self)
        form = QFormLayout(general_box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        form.addRow("Theme:", self.theme_combo)
        form.addRow("Default context length:", self.context_spin)
        form.addRow("CPU threads:", self.threads_spin)
        self.load_last_check = QCheckBox("Load the last model at start (the first time: the demo model)", self)
        form.addRow("Start:", self.load_last_check)

        # past chats (drafting from history)
        self.past_chats_check = QCheckBox("Draft from past chats", self)
        self.past_chats_check.setToolTip(
            "With \u201cThis chat + past chats\u201d as the draft source, replies that repeat something earlier chats "
            "said are written faster. The tokens of past chats are kept in Tandem's data folder on this computer "
            "only; off, nothing is read or written."
        )
        self.clear_past_button = QPushButton("Forget past chats", self)
        self.clear_past_button.setToolTip("Delete what Tandem remembers of past chats for drafting (not the chats)")
        self.clear_past_button.clicked.connect(self._clear_past_chats)
        self.past_chats_label = QLabel(self)
        self.past_chats_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        past_row = QHBoxLayout()
        past_row.addWidget(self.past_chats_check, 1)
        past_row.addWidget(self.clear_past_button)
        form.addRow("Speculation:", past_row)
        form.addRow("", self.past_chats_label)

        self.workers_editor = WorkersEditor(self)

        self.message_label = QLabel(self)
        self.message_label.setWordWrap(True)
        self.message_label.setVisible(False)
        self.message_label.setStyleSheet("QLabel { color: #c0504d; }")

        self.button_box = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        self.button_box.accepted.connect(self.accept)
        self.button_box.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(folders_box, 1)
        layout.addWidget(general_box)
        layout.addWidget(self.workers_editor)
        layout.addWidget(self.message_label)
        layout.addWidget(self.button_box)
        self.resize(560, 600)

    def _load(self) -> None:
        builtin = self._append_folder(default_models_folder())
        builtin.setData(_BUILTIN_ROLE, True)
        builtin.setFlags(builtin.flags() & ~Qt.ItemFlag.ItemIsSelectable)
        builtin.setForeground(self.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text))
        builtin.setText(f"{default_models_folder()}  (always searched)")
        builtin.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_DirIcon))
        builtin.setToolTip(f"{default_models_folder()}\nTandem's own models folder is always searched.")
        folders = self.store.get("model_folders", [])
        if not isinstance(folders, list):
            folders = []
        for f in folders:
            if isinstance(f, str) and f.strip() and not any(_same_folder(Path(f), g) for g in self.folders()):
                self._append_folder(Path(f))

        theme = self.store.get("theme")
        i = self.theme_combo.findData(theme)
        self.theme_combo.setCurrentIndex(i if i >= 0 else 0)
        self.context_spin.setValue(self._int_setting("default_ctx"))
        self.threads_spin.setValue(self._int_setting("threads"))
        self.past_chats_check.setChecked(bool(self.store.get("remember_past_chats")))
        self.load_last_check.setChecked(bool(self.store.get("load_last_model")))
        workers = self.store.get("workers")
        self.workers_editor.set_workers(workers if isinstance(workers, list) else [],
                                        bool(self.store.get("workers_enabled")))
        self._show_past_chats_size()
        self._update_folder_buttons()

    def _int_setting(self, key: str) -> int:
        value = self.store.get(key)
        default = DEFAULT_APP_SETTINGS[key]
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    def _show_past_chats_size(self) -> None:
        size = self._past_chats_size() if self._past_chats_size is not None else None
        self.past_chats_label.setText(
            "" if size is None else ("Nothing remembered yet." if size == 0 else f"{format_bytes(size)} remembered.")
        )

    def _clear_past_chats(self) -> None:
        if self._clear_past_chats_cb is not None:
            self._clear_past_chats_cb()
        self._show_past_chats_size()
        self.past_chats_label.setText("Past chats forgotten.")

    # -- folders --------------------------------------------------------------------------------------

    def folders(self, *, include_builtin: bool = True) -> list[Path]:
        """The folders listed (with Tandem's own models folder first, unless `include_builtin` is False)."""
        items = [self.folder_list.item(i) for i in range(self.folder_list.count())]
        return [
            Path(item.data(Qt.ItemDataRole.UserRole))
            for item in items
            if include_builtin or not item.data(_BUILTIN_ROLE)
        ]

    def _append_folder(self, folder: Path) -> QListWidgetItem:
        item = QListWidgetItem(str(folder))
        item.setData(Qt.ItemDataRole.UserRole, str(folder))
        if folder.is_dir():
            item.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_DirIcon))
            item.setToolTip(str(folder))
        else:
            item.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning))
            item.setToolTip(f"{folder} does not exist (yet): it is searched once it does")
        self.folder_list.addItem(item)
        return item

    def add_folder_path(self, folder: Path | str) -> bool:
        """Add `folder` to the list; False (and a message) if it is not a folder or already listed."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            self._say(f"not a folder: {folder}")
            return False
        if any(_same_folder(folder, f) for f in self.folders()):
            self._say(f"already in the list: {folder}")
            return False
        item = self._append_folder(folder)
        self.folder_list.setCurrentItem(item)
        self._say("")
        self._update_folder_buttons()
        return True

    def add_folder(self) -> None:
        chosen = self.folder_dialog(self)
        if chosen:
            self.add_folder_path(chosen)

    def add_lmstudio_folder(self) -> None:
        found = list(self._lmstudio())
        if not found:
            self._say("no LM Studio models folder found (~/.lmstudio/models or ~/.cache/lm-studio/models)")
            return
        new = [f for f in found if not any(_same_folder(f, g) for g in self.folders())]
        if not new:
            self._say(f"already in the list: {found[0]}")
            return
        self.add_folder_path(new[0])

    def remove_selected(self) -> None:
        for item in self.folder_list.selectedItems():
            if not item.data(_BUILTIN_ROLE):
                self.folder_list.takeItem(self.folder_list.row(item))
        self._update_folder_buttons()

    def _update_folder_buttons(self) -> None:
        self.remove_button.setEnabled(
            any(not item.data(_BUILTIN_ROLE) for item in self.folder_list.selectedItems())
        )
        found = list(self._lmstudio())
        new = [f for f in found if not any(_same_folder(f, g) for g in self.folders())]
        self.lmstudio_button.setEnabled(bool(new))
        if new:
            self.lmstudio_button.setToolTip(f"Add {new[0]}")
        elif found:
            self.lmstudio_button.setToolTip(f"{found[0]} is already in the list")
        else:
            self.lmstudio_button.setToolTip("LM Studio's models folder was not found on this computer")

    # -- values ---------------------------------------------------------------------------------------

    def values(self) -> dict[str, Any]:
        """The settings as edited (not yet saved)."""
        return {
            "model_folders": [str(p) for p in self.folders(include_builtin=False)],
            "theme": self.theme_combo.currentData(),
            "default_ctx": self.context_spin.value(),
            "threads": self.threads_spin.value(),
            "remember_past_chats": self.past_chats_check.isChecked(),
            "load_last_model": self.load_last_check.isChecked(),
            "workers": self.workers_editor.workers(),
            "workers_enabled": self.workers_editor.enabled_check.isChecked(),
        }

    def save(self) -> None:
        for key, value in self.values().items():
            self.store.set(key, value)

    def accept(self) -> None:
        try:
            self.save()
        except Exception as e:  # noqa: BLE001 - the store may be unwritable (disk full, locked)
            self._say(f"the settings could not be saved: {e}")
            return
        super().accept()

    def message(self) -> str:
        return self.message_label.text()

    def _say(self, text: str) -> None:
        self.message_label.setText(text)
        self.message_label.setVisible(bool(text))
