"""The model browser: the local library as a sortable, filterable table.

``ModelBrowser`` shows the chat models of a :class:`~app.library.local.LocalLibrary` (name, architecture,
parameters, quantization, size, context length) and, once a target model is set, whether each one can
draft for it. Scans and compatibility checks run on a worker thread (a private ``QThreadPool``); the GUI
only ever receives finished results through queued signals, with a busy indicator meanwhile.

Broken files (truncated, corrupt, split GGUFs with a missing part) are listed greyed out, with the error
as tooltip; they can be revealed in the file manager or deleted, not loaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelectionModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QThreadPool,
    Signal,
    Slot,
)
from PySide6.QtGui import QAction, QColor, QFont, QGuiApplication, QKeySequence, QPalette, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QStyle,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.engine.compat import Verdict
from app.engine.units import format_bytes, format_count
from app.library.local import LocalLibrary, LocalModel
from app.ui.background import Relay, run_in_pool

__all__ = ["COLUMNS", "LibraryTableModel", "ModelBrowser", "ModelFilterProxy"]

MODEL_ROLE = Qt.ItemDataRole.UserRole
SORT_ROLE = Qt.ItemDataRole.UserRole + 1

NAME, ARCH, PARAMS, QUANT, SIZE, CONTEXT, DRAFT = range(7)
COLUMNS = ("Name", "Arch", "Params", "Quant", "Size", "Ctx", "Draft")

_OK_COLOR = QColor("#2e9d5b")
_BAD_COLOR = QColor("#c0504d")

FolderDialog = Callable[[QWidget], "Path | str | None"]
ConfirmDelete = Callable[[QWidget, LocalModel], bool]


def _same(a: LocalModel | None, b: LocalModel | None) -> bool:
    return a is not None and b is not None and a.path == b.path


def _context_text(n: int | None) -> str:
    if not n:
        return "—"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}K"
    return f"{n:,}"


# ---------------------------------------------------------------------------------------------------------
# the table model


class LibraryTableModel(QAbstractTableModel):
    """Rows of LocalModel; the Draft column shows the verdict against the current target."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[LocalModel] = []
        self._verdicts: dict[Path, Verdict] = {}
        self._target: LocalModel | None = None
        self._pending = False

    # -- data updates ---------------------------------------------------------------------------------

    def set_models(self, models: list[LocalModel]) -> None:
        self.beginResetModel()
        self._rows = list(models)
        self.endResetModel()

    def models(self) -> list[LocalModel]:
        return list(self._rows)

    def set_target(self, target: LocalModel | None, pending: bool) -> None:
        self._target = target
        self._pending = pending
        self._verdicts = {}
        self._changed_column(DRAFT)

    def set_verdicts(self, verdicts: dict[Path, Verdict]) -> None:
        self._verdicts = dict(verdicts)
        self._pending = False
        self._changed_column(DRAFT)

    def verdict(self, model: LocalModel) -> Verdict | None:
        return self._verdicts.get(model.path)

    @property
    def pending(self) -> bool:
        return self._pending

    def _changed_column(self, column: int) -> None:
        if self._rows:
            self.dataChanged.emit(self.index(0, column), self.index(len(self._rows) - 1, column))

    # -- Qt model interface ---------------------------------------------------------------------------

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal:
            if role == Qt.ItemDataRole.DisplayRole:
                return COLUMNS[section]
            if role == Qt.ItemDataRole.TextAlignmentRole and section in (PARAMS, SIZE, CONTEXT):
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        m = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(m, col)
        if role == MODEL_ROLE:
            return m
        if role == SORT_ROLE:
            return self._sort_key(m, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(m, col)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (PARAMS, SIZE, CONTEXT):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole:
            if m.broken:
                return QGuiApplication.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
            if col == DRAFT:
                v = self._verdicts.get(m.path)
                if v is not None:
                    return _OK_COLOR if v.compatible else _BAD_COLOR
        if role == Qt.ItemDataRole.FontRole:
            if _same(m, self._target) or (m.broken and col == NAME):
                font = QFont()
                font.setBold(_same(m, self._target))
                font.setItalic(m.broken)
                return font
        if role == Qt.ItemDataRole.DecorationRole and col == NAME and m.broken:
            return QApplication.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        return None

    def _text(self, m: LocalModel, col: int) -> str:
        if col == NAME:
            return m.file_name
        if m.broken:
            return {ARCH: "unreadable", SIZE: format_bytes(m.file_size)}.get(col, "")
        if col == ARCH:
            return m.architecture or "—"
        if col == PARAMS:
            return format_count(m.parameter_count)
        if col == QUANT:
            return m.quantization or "—"
        if col == SIZE:
            return format_bytes(m.file_size)
        if col == CONTEXT:
            return _context_text(m.context_length)
        if col == DRAFT:
            if self._target is None:
                return ""
            if _same(m, self._target):
                return "loaded target"
            v = self._verdicts.get(m.path)
            if v is None:
                return "checking…" if self._pending else ""
            return "✓ compatible" if v.compatible else "✗ incompatible"
        return ""

    @staticmethod
    def _sort_key(m: LocalModel, col: int) -> Any:
        if col == NAME:
            return m.name.casefold()
        if col == ARCH:
            return (m.architecture or "~").casefold()
        if col == PARAMS:
            return m.parameter_count or 0
        if col == QUANT:
            return (m.quantization or "~").casefold()
        if col == SIZE:
            return m.file_size
        if col == CONTEXT:
            return m.context_length or 0
        return ""

    def _tooltip(self, m: LocalModel, col: int) -> str:
        if m.broken:
            return f"{m.error}"
        if col == DRAFT and self._target is not None:
            v = self._verdicts.get(m.path)
            if v is not None:
                return v.reason
        lines = [str(m.path)]
        if len(m.files) > 1:
            lines.append(f"split into {len(m.files)} files")
        if m.block_count:
            lines.append(f"{m.block_count} layers")
        return "\n".join(lines)


class ModelFilterProxy(QSortFilterProxyModel):
    """Keeps rows whose name, architecture, quantization or file name contain every word of the query."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._words: list[str] = []
        self.setSortRole(SORT_ROLE)
        self.setSortCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)

    def set_query(self, text: str) -> None:
        words = text.casefold().split()
        if words == self._words:
            return
        if hasattr(self, "endFilterChange"):  # Qt >= 6.10
            self.beginFilterChange()
            self._words = words
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:  # pragma: no cover - older Qt
            self._words = words
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        if not self._words:
            return True
        m = self.sourceModel().index(source_row, 0, source_parent).data(MODEL_ROLE)
        if m is None:
            return True
        hay = " ".join(
            [
                m.name,
                m.architecture or "",
                m.quantization or "",
                m.path.name,
                format_count(m.parameter_count),
            ]
        ).casefold()
        return all(w in hay for w in self._words)


# ---------------------------------------------------------------------------------------------------------
# background jobs


# ---------------------------------------------------------------------------------------------------------
# the widget


def _default_folder_dialog(parent: QWidget) -> str | None:
    folder = QFileDialog.getExistingDirectory(parent, "Add a models folder", str(Path.home()))
    return folder or None


def _default_confirm_delete(parent: QWidget, model: LocalModel) -> bool:
    files = "\n".join(str(p) for p in model.files)
    answer = QMessageBox.question(
        parent,
        "Delete model",
        f"Delete {model.name} from disk?\n\n{files}\n\nThis cannot be undone.",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
        QMessageBox.StandardButton.Cancel,
    )
    return answer == QMessageBox.StandardButton.Yes


class ModelBrowser(QWidget):
    """The local model library, with Load / Use as draft actions."""

    loadRequested = Signal(object)  # LocalModel
    useAsDraftRequested = Signal(object)  # LocalModel
    foldersChanged = Signal(list)  # list[Path], after the user added a folder
    scanFinished = Signal(list)  # list[LocalModel]
    compatibilityChanged = Signal()  # the Draft column has verdicts for the current target

    def __init__(
        self,
        library: LocalLibrary | None = None,
        parent: QWidget | None = None,
        *,
        folder_dialog: FolderDialog | None = None,
        confirm_delete: ConfirmDelete | None = None,
    ) -> None:
        super().__init__(parent)
        if library is None:
            from app.library.local import default_cache_path, default_models_folder

            library = LocalLibrary([default_models_folder()], default_cache_path())
        self.library = library
        self.folder_dialog: FolderDialog = folder_dialog or _default_folder_dialog
        self.confirm_delete: ConfirmDelete = confirm_delete or _default_confirm_delete
        self._target: LocalModel | None = None
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(2)
        self._scanning = False
        self._rescan = False
        self._scanned_once = False
        self._compat_generation = 0
        self._message = ""

        self._model = LibraryTableModel(self)
        self._proxy = ModelFilterProxy(self)
        self._proxy.setSourceModel(self._model)
        self._build_ui()
        self._update_buttons()
        self._update_status()

    # -- construction ---------------------------------------------------------------------------------

    def _build_ui(self) -> None:
        style = self.style()
        self.filter_edit = QLineEdit(self)
        self.filter_edit.setPlaceholderText("Filter models (name, architecture, quantization)…")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self._on_filter)

        self.busy = QProgressBar(self)
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        self.busy.setMaximumWidth(120)
        self.busy.setMaximumHeight(14)
        self.busy.setVisible(False)
        self.busy_label = QLabel(self)
        self.busy_label.setVisible(False)

        self.refresh_button = QPushButton(
            style.standardIcon(QStyle.StandardPixmap.SP_BrowserReload), "Refresh"
        )
        self.refresh_button.setToolTip("Scan the model folders again (F5)")
        self.refresh_button.clicked.connect(self.refresh)
        QShortcut(QKeySequence(QKeySequence.StandardKey.Refresh), self, activated=self.refresh)
        self.add_folder_button = QPushButton(
            style.standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon), "Add folder…"
        )
        self.add_folder_button.setToolTip("Add a folder with GGUF models (searched recursively)")
        self.add_folder_button.clicked.connect(self.add_folder)

        top = QHBoxLayout()
        top.addWidget(self.filter_edit, 1)
        top.addWidget(self.busy_label)
        top.addWidget(self.busy)
        top.addWidget(self.refresh_button)
        top.addWidget(self.add_folder_button)

        self.table = QTableView(self)
        self.table.setModel(self._proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(NAME, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 12)
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(NAME, QHeaderView.ResizeMode.ResizeToContents)  # names are what users read
        header.setStretchLastSection(True)
        header.setMinimumSectionSize(60)
        fm = self.fontMetrics()
        for col, sample in (
            (ARCH, "gemma3"),
            (PARAMS, "135M"),
            (QUANT, "Q4_K_M"),
            (SIZE, "1000 MB"),
            (CONTEXT, "128K"),
            (DRAFT, "✗ incompatible"),
        ):
            header.resizeSection(col, fm.horizontalAdvance(sample) + 14)
        self.table.setColumnHidden(DRAFT, True)
        self.table.setColumnHidden(ARCH, True)  # shown in the row's tooltip and searchable; the name needs the room
        self.table.selectionModel().selectionChanged.connect(self._on_selection)
        self.table.doubleClicked.connect(lambda _index: self._request_load())
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.installEventFilter(self)

        self.empty_label = QLabel(self)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.empty_label.setTextFormat(Qt.TextFormat.RichText)
        self.empty_label.setContentsMargins(24, 24, 24, 24)
        self.stack = QStackedWidget(self)
        self.stack.addWidget(self.table)
        self.stack.addWidget(self.empty_label)

        self.detail_label = QLabel(self)
        self.detail_label.setWordWrap(True)
        self.detail_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detail_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.message_label = QLabel(self)
        self.message_label.setWordWrap(True)
        self.message_label.setVisible(False)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        self.status_label = QLabel(self)
        self.status_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.draft_button = QPushButton("Use as draft", self)
        self.draft_button.clicked.connect(self._request_draft)
        self.load_button = QPushButton("Load", self)
        self.load_button.setDefault(True)
        self.load_button.clicked.connect(self._request_load)

        bottom = QHBoxLayout()
        bottom.addWidget(self.status_label, 1)
        bottom.addWidget(self.draft_button)
        bottom.addWidget(self.load_button)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.detail_label)
        layout.addWidget(self.message_label)
        layout.addLayout(bottom)

    def eventFilter(self, obj: QObject, event: Any) -> bool:
        from PySide6.QtCore import QEvent

        if obj is self.table and event.type() == QEvent.Type.KeyPress:
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self._request_load()
                return True
            if event.key() == Qt.Key.Key_Delete:
                self.delete_selected()
                return True
        return super().eventFilter(obj, event)

    # -- public API -----------------------------------------------------------------------------------

    def set_folders(self, folders: list[Path]) -> None:
        """Show the models of these folders (rescans)."""
        self.library.folders = [Path(f) for f in folders]
        self.refresh()

    def folders(self) -> list[Path]:
        return self.library.folders

    def refresh(self) -> None:
        """Rescan the folders in the background (a scan already running is followed by another)."""
        if self._scanning:
            self._rescan = True
            return
        self._scanning = True
        self._rescan = False
        self.busy.setRange(0, 0)
        self.busy.setVisible(True)
        self.busy_label.setText("Scanning…")
        self.busy_label.setVisible(True)
        library = self.library

        def work(relay: Relay) -> list[LocalModel]:
            last = [0.0]

            def progress(done: int, total: int, path: Path) -> None:
                now = time.monotonic()
                if done == total or now - last[0] >= 0.05:
                    last[0] = now
                    relay.progress.emit(done, total, path.name)

            return library.scan(progress)

        self._start(work, self._on_scan_progress, self._on_scan_done, self._on_scan_failed)

    def is_busy(self) -> bool:
        """True while a scan or a compatibility check runs."""
        return self._scanning or self._model.pending

    def models(self) -> list[LocalModel]:
        """The chat models listed (all of them, whatever the filter)."""
        return self._model.models()

    def set_target(self, target: LocalModel | None) -> None:
        """The loaded target model: drafts are checked against it (in the background)."""
        self._target = target
        self._compat_generation += 1
        self.table.setColumnHidden(DRAFT, target is None)
        self._model.set_target(target, pending=target is not None)
        if target is not None:
            self._check_compatibility()
        self._update_buttons()

    def target(self) -> LocalModel | None:
        return self._target

    def verdict(self, model: LocalModel) -> Verdict | None:
        """The draft verdict of `model` against the current target (None: no target or not known yet)."""
        return self._model.verdict(model)

    def selected_model(self) -> LocalModel | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return rows[0].data(MODEL_ROLE)

    def select_model(self, model_or_path: LocalModel | Path | str | None) -> bool:
        """Select the row of a model (or of a path); False when it is not shown."""
        if model_or_path is None:
            self.table.clearSelection()
            return False
        path = model_or_path.path if isinstance(model_or_path, LocalModel) else Path(model_or_path)
        for row in range(self._proxy.rowCount()):
            index = self._proxy.index(row, 0)
            m = index.data(MODEL_ROLE)
            if m is not None and (m.path == path or path in m.files):
                self.table.selectionModel().select(
                    index,
                    QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
                )
                self.table.setCurrentIndex(index)
                self.table.scrollTo(index)
                return True
        return False

    def message(self) -> str:
        """The message shown under the table ("" when none)."""
        return self._message

    def add_folder(self) -> None:
        """Ask for a folder (through `folder_dialog`), add it and rescan; emits `foldersChanged`."""
        chosen = self.folder_dialog(self)
        if not chosen:
            return
        folder = Path(chosen).expanduser()
        if not folder.is_dir():
            self._show_message(f"not a folder: {folder}", error=True)
            return
        folders = self.library.folders
        if any(_resolved(folder) == _resolved(f) for f in folders):
            self._show_message(f"{folder} is already in the library", error=False)
            return
        folders.append(folder)
        self.library.folders = folders
        self._show_message(f"added {folder}", error=False)
        self.foldersChanged.emit(list(folders))
        self.refresh()

    def reveal_selected(self) -> None:
        m = self.selected_model()
        if m is None:
            return
        outcome = self.library.reveal_in_file_manager(m.path)
        if not outcome:
            self._show_message(outcome.reason, error=True)

    def delete_selected(self) -> None:
        """Delete the selected model's files after `confirm_delete` agrees."""
        m = self.selected_model()
        if m is None or not self.confirm_delete(self, m):
            return
        try:
            self.library.delete(m)
        except OSError as e:
            self._show_message(str(e), error=True)
        else:
            self._show_message(f"deleted {m.name}", error=False)
        if _same(m, self._target):
            self.set_target(None)
        self._model.set_models(self.library.models())
        self._after_models_changed()

    # -- actions --------------------------------------------------------------------------------------

    def _gone(self, m: LocalModel) -> bool:
        """Is a listed file gone? Then say so and rescan."""
        missing = m.missing_files()
        if not missing:
            return False
        self._show_message(f"file no longer exists: {missing[0]}", error=True)
        self.refresh()
        return True

    def _request_load(self) -> None:
        m = self.selected_model()
        if m is None or m.broken or not self.load_button.isEnabled():
            return
        self._show_message("")
        if self._gone(m):
            return
        self.loadRequested.emit(m)

    def _request_draft(self) -> None:
        m = self.selected_model()
        if m is None or m.broken or not self.draft_button.isEnabled():
            return
        self._show_message("")
        if self._gone(m):
            return
        self.useAsDraftRequested.emit(m)

    def _context_menu(self, pos: Any) -> None:
        index = self.table.indexAt(pos)
        if not index.isValid():
            return
        m = index.data(MODEL_ROLE)
        menu = QMenu(self)
        load = QAction("Load", menu, enabled=self.load_button.isEnabled())
        load.triggered.connect(self._request_load)
        draft = QAction("Use as draft", menu, enabled=self.draft_button.isEnabled())
        draft.triggered.connect(self._request_draft)
        reveal = QAction("Show in file manager", menu)
        reveal.triggered.connect(self.reveal_selected)
        copy = QAction("Copy path", menu)
        copy.triggered.connect(lambda: QGuiApplication.clipboard().setText(str(m.path)))
        delete = QAction("Delete from disk…", menu)
        delete.triggered.connect(self.delete_selected)
        for action in (load, draft, None, reveal, copy, None, delete):
            if action is None:
                menu.addSeparator()
            else:
                menu.addAction(action)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    # -- background work ------------------------------------------------------------------------------

    def _start(
        self,
        fn: Callable[[Relay], object],
        on_progress: Callable[[int, int, str], None] | None,
        on_done: Callable[[object], None],
        on_failed: Callable[[str], None],
    ) -> None:
        run_in_pool(self._pool, self, fn, on_done, on_failed, on_progress)

    @Slot(int, int, str)
    def _on_scan_progress(self, done: int, total: int, name: str) -> None:
        self.busy.setRange(0, max(total, 1))
        self.busy.setValue(done)
        self.busy_label.setText(f"Scanning {done}/{total}")

    @Slot(object)
    def _on_scan_done(self, models: object) -> None:
        self._scan_ended()
        selected = self.selected_model()
        self._model.set_models(list(models))  # type: ignore[call-overload]
        if selected is not None:
            self.select_model(selected.path)
        self._after_models_changed()
        self.scanFinished.emit(self.models())
        if self._target is not None:
            self._check_compatibility()
        if self._rescan:
            self.refresh()

    @Slot(str)
    def _on_scan_failed(self, message: str) -> None:
        self._scan_ended()
        self._show_message(f"scanning the model folders failed: {message}", error=True)
        self.scanFinished.emit(self.models())
        if self._rescan:
            self.refresh()

    def _scan_ended(self) -> None:
        self._scanning = False
        self._scanned_once = True
        self.busy.setVisible(self._model.pending)
        self.busy.setRange(0, 0)
        self.busy_label.setVisible(False)

    def _check_compatibility(self) -> None:
        target = self._target
        if target is None:
            return
        self._compat_generation += 1
        generation = self._compat_generation
        self._model.set_target(target, pending=True)
        self.busy.setVisible(True)
        library = self.library

        def work(_relay: Relay) -> tuple[int, dict[Path, Verdict]]:
            return generation, {m.path: v for m, v in library.compatible_drafts(target)}

        self._start(work, None, self._on_compat_done, self._on_compat_failed)
        self._update_buttons()

    @Slot(object)
    def _on_compat_done(self, result: object) -> None:
        generation, verdicts = result  # type: ignore[misc]
        if generation != self._compat_generation:
            return  # an older target's answer
        self._model.set_verdicts(verdicts)
        self.busy.setVisible(self._scanning)
        self._update_buttons()
        self.compatibilityChanged.emit()

    @Slot(str)
    def _on_compat_failed(self, message: str) -> None:
        self._model.set_verdicts({})
        self.busy.setVisible(self._scanning)
        self._show_message(f"checking draft compatibility failed: {message}", error=True)
        self._update_buttons()
        self.compatibilityChanged.emit()

    # -- view updates ---------------------------------------------------------------------------------

    def _on_filter(self, text: str) -> None:
        self._proxy.set_query(text)
        self._update_status()

    def _on_selection(self, *_args: object) -> None:
        self._update_buttons()

    def _after_models_changed(self) -> None:
        models = self._model.models()
        if models:
            self.stack.setCurrentWidget(self.table)
        else:
            folders = self.library.folders
            listed = "<br>".join(f"<code>{_html(str(f))}</code>" for f in folders) or "(no folders)"
            self.empty_label.setText(
                "<p style='font-size:13pt'><b>No models found</b></p>"
                f"<p>Tandem looks for <code>.gguf</code> files in:<br>{listed}</p>"
                "<p>Use <b>Add folder…</b> to point it at your models "
                "(LM Studio's models folder works as it is).</p>"
            )
            self.stack.setCurrentWidget(self.empty_label)
        self._update_buttons()
        self._update_status()

    def _update_status(self) -> None:
        models = self._model.models()
        shown = self._proxy.rowCount()
        broken = sum(1 for m in models if m.broken)
        n_folders = len(self.library.folders)
        parts = [f"{len(models)} model{'s' if len(models) != 1 else ''}"]
        if shown != len(models):
            parts[0] = f"{shown} of {len(models)} models"
        if broken:
            parts.append(f"{broken} unreadable")
        parts.append(f"{n_folders} folder{'s' if n_folders != 1 else ''}")
        skipped = len(self.library.non_models())
        if skipped:
            parts.append(f"{skipped} non-model file{'s' if skipped != 1 else ''} skipped")
        text = " · ".join(parts)
        if self.library.folder_errors:
            text += " · " + "; ".join(self.library.folder_errors[:2])
        self.status_label.setText(text if self._scanned_once or models else "")

    def _update_buttons(self) -> None:
        m = self.selected_model()
        if m is None:
            for b in (self.load_button, self.draft_button):
                b.setEnabled(False)
                b.setToolTip("Select a model first")
            self.detail_label.setText("")
            return
        if m.broken:
            for b in (self.load_button, self.draft_button):
                b.setEnabled(False)
                b.setToolTip(f"This file cannot be used: {m.error}")
            self.detail_label.setText(
                f"<span style='color:{_BAD_COLOR.name()}'>{_html(m.error or '')}</span>"
            )
            return
        self.load_button.setEnabled(True)
        self.load_button.setToolTip(f"Load {m.name} as the model to chat with")
        detail = f"<code>{_html(str(m.path))}</code>"
        target = self._target
        if target is None:
            self.draft_button.setEnabled(True)
            self.draft_button.setToolTip(f"Use {m.name} to draft tokens for the target model")
        elif _same(m, target):
            self.draft_button.setEnabled(False)
            self.draft_button.setToolTip("This is the loaded target model")
        else:
            v = self._model.verdict(m)
            if v is None:
                self.draft_button.setEnabled(False)
                self.draft_button.setToolTip(f"Checking whether {m.name} can draft for {target.name}…")
            elif v.compatible:
                self.draft_button.setEnabled(True)
                self.draft_button.setToolTip(f"Draft for {target.name}: {v.reason}")
                detail += (
                    f"<br><span style='color:{_OK_COLOR.name()}'>✓ can draft for {_html(target.name)}</span>"
                )
            else:
                self.draft_button.setEnabled(False)
                self.draft_button.setToolTip(f"Cannot draft for {target.name}: {v.reason}")
                detail += (
                    f"<br><span style='color:{_BAD_COLOR.name()}'>✗ cannot draft for "
                    f"{_html(target.name)}: {_html(v.reason)}</span>"
                )
        self.detail_label.setText(detail)

    def _show_message(self, text: str, *, error: bool = True) -> None:
        self._message = text
        self.message_label.setVisible(bool(text))
        if not text:
            self.message_label.setText("")
            return
        color = _BAD_COLOR if error else _OK_COLOR
        bg = QColor(color)
        bg.setAlpha(28)
        self.message_label.setStyleSheet(
            f"QLabel {{ color: {color.name()};"
            f" background: rgba({bg.red()},{bg.green()},{bg.blue()},{bg.alpha()});"
            f" border: 1px solid {color.name()}; border-radius: 4px; padding: 4px 8px; }}"
        )
        self.message_label.setText(text)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _resolved(p: Path) -> Path:
    try:
        return p.resolve()
    except OSError:
        return p
