"""The Discover tab: search GGUF models on the Hugging Face Hub, pick a quantization, download it.

Every Hub request runs on a thread pool (the UI never waits on the network); results come back through
queued signals. Errors (offline, gated, not found) are one line in the tab, never a dialog with a
traceback. Downloads go to `DownloadBridge`; the queue below the lists shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QThreadPool, Signal, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.engine.gguf_info import ModelInfo
from app.engine.units import format_bytes, format_count
from app.hardware.monitor import Resources
from app.library.credentials import TokenError, TokenStore, mask_token
from app.library.downloads import DownloadError
from app.library.hub import (
    DraftSuggestion,
    Fit,
    HubClient,
    HubError,
    HubFile,
    HubRepo,
    RepoFiles,
    fit_for_machine,
    hub_error,
    parameter_billions,
)
from app.library.local import LocalLibrary, LocalModel
from app.ui.background import Relay, run_in_pool
from app.ui.download_bridge import DownloadBridge
from app.ui.download_queue import DownloadQueue

__all__ = ["DiscoverView"]

SORT_LABELS = [("Most downloaded", "downloads"), ("Most liked", "likes"), ("Recently updated", "recent"),
               ("Trending", "trending")]  # fmt: skip
REPO_COLUMNS = ["Model", "Params", "Downloads", "Likes", "Updated", "Note"]
FILE_COLUMNS = ["Quantization", "File", "Size", "This machine"]
FIT_COLORS = {"fits": "#1e8449", "tight": "#b9770e", "too-big": "#c0392b", "unknown": "#7f8c8d"}


def _describe_error(e: Exception) -> str:
    return str(hub_error(e))


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


class _NumberItem(QTableWidgetItem):
    """Sorts by the number in UserRole, shows the text."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = self.data(Qt.ItemDataRole.UserRole), other.data(Qt.ItemDataRole.UserRole)
        try:
            return float(a or 0) < float(b or 0)
        except (TypeError, ValueError):
            return super().__lt__(other)


def _default_ask_token(parent: QWidget, where: str, current: str) -> str | None:
    text, ok = QInputDialog.getText(
        parent, "Hugging Face access token",
        "Access token for gated and private models (huggingface.co → Settings → Access Tokens).\n"
        f"It is kept in {where}.{(' Saved now: ' + current + '.') if current else ''}\n"
        "Leave empty to remove the saved token.",
        QLineEdit.EchoMode.Password,
    )  # fmt: skip
    return text if ok else None


class DiscoverView(QWidget):
    loadRequested = Signal(object)  # Path of a downloaded model
    useAsDraftRequested = Signal(object)  # LocalModel or Path
    libraryChanged = Signal()  # a download finished: rescan the library
    searchFinished = Signal(int)  # number of results (tests wait on it)
    filesListed = Signal(int)  # number of files listed
    suggestionsReady = Signal(int)

    def __init__(
        self,
        downloads: DownloadBridge,
        token_store: TokenStore | None = None,
        library: LocalLibrary | None = None,
        *,
        endpoint: str | None = None,
        resources: Callable[[], Resources] = Resources.current,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.downloads = downloads
        self.token_store = token_store
        self.library = library
        self.endpoint = endpoint
        self.resources = resources
        self.ask_token: Callable[[QWidget, str, str], str | None] = _default_ask_token
        self.n_ctx = 4096
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(3)
        self._search_gen = 0
        self._files_gen = 0
        self._repos: list[HubRepo] = []
        self._local_drafts: list[LocalModel] = []
        self._notes: dict[str, str] = {}
        self._files: RepoFiles | None = None
        self._target: LocalModel | None = None
        self._target_info: ModelInfo | None = None
        self._suggest_mode = False
        self._message = ""
        self._build_ui()
        downloads.jobChanged.connect(self.queue.update_job)
        downloads.jobDone.connect(self._on_download_done)
        self._update_buttons()

    # -- construction ---------------------------------------------------------------------------------

    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        bar = QHBoxLayout()
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search GGUF models on Hugging Face, e.g. qwen2.5 7b instruct")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.returnPressed.connect(self.search)
        bar.addWidget(self.search_edit, 1)
        self.sort_combo = QComboBox()
        for label, key in SORT_LABELS:
            self.sort_combo.addItem(label, key)
        self.sort_combo.currentIndexChanged.connect(self._sort_changed)
        bar.addWidget(self.sort_combo)
        self.search_button = QPushButton("Search")
        self.search_button.setAutoDefault(False)
        self.search_button.clicked.connect(self.search)
        bar.addWidget(self.search_button)
        layout.addLayout(bar)

        bar2 = QHBoxLayout()
        self.suggest_button = QPushButton("Suggest drafts")
        self.suggest_button.setToolTip("Load a target model first: drafts of its family, much smaller, with "
                                       "compatible models from your library first")  # fmt: skip
        self.suggest_button.setAutoDefault(False)
        self.suggest_button.clicked.connect(self.suggest_drafts)
        bar2.addWidget(self.suggest_button)
        bar2.addStretch(1)
        self.token_button = QPushButton("Access token…")
        self.token_button.setAutoDefault(False)
        self.token_button.clicked.connect(self.edit_token)
        bar2.addWidget(self.token_button)
        layout.addLayout(bar2)

        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.message_label)

        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.repo_table = QTableWidget(0, len(REPO_COLUMNS))
        self.repo_table.setHorizontalHeaderLabels(REPO_COLUMNS)
        self._setup_table(self.repo_table)
        self.repo_table.itemSelectionChanged.connect(self._repo_selected)
        self.splitter.addWidget(self.repo_table)

        files_box = QWidget()
        fl = QVBoxLayout(files_box)
        fl.setContentsMargins(0, 0, 0, 0)
        self.files_label = QLabel("Select a model to see its files.")
        self.files_label.setWordWrap(True)
        fl.addWidget(self.files_label)
        self.file_table = QTableWidget(0, len(FILE_COLUMNS))
        self.file_table.setHorizontalHeaderLabels(FILE_COLUMNS)
        self._setup_table(self.file_table)
        self.file_table.itemSelectionChanged.connect(self._update_buttons)
        self.file_table.doubleClicked.connect(self._download_clicked)
        fl.addWidget(self.file_table)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.use_local_button = QPushButton("Use as draft")
        self.use_local_button.setAutoDefault(False)
        self.use_local_button.clicked.connect(self._use_local_clicked)
        self.download_button = QPushButton("Download")
        self.download_button.setAutoDefault(False)
        self.download_button.setDefault(False)
        self.download_button.clicked.connect(self._download_clicked)
        self.download_draft_button = QPushButton("Download as draft")
        self.download_draft_button.setAutoDefault(False)
        self.download_draft_button.clicked.connect(self._download_draft_clicked)
        for b in (self.use_local_button, self.download_draft_button, self.download_button):
            buttons.addWidget(b)
        fl.addLayout(buttons)
        self.splitter.addWidget(files_box)

        self.queue = DownloadQueue(self.downloads.manager)
        self.queue.loadRequested.connect(self.loadRequested)
        self.queue.useAsDraftRequested.connect(self.useAsDraftRequested)
        self.splitter.addWidget(self.queue)
        self.splitter.setSizes([260, 220, 200])
        layout.addWidget(self.splitter, 1)

    @staticmethod
    def _setup_table(table: QTableWidget) -> None:
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.verticalHeader().setVisible(False)
        table.setAlternatingRowColors(True)
        table.setWordWrap(False)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)

    # -- state from the main window -------------------------------------------------------------------

    def set_target(self, target: LocalModel | None, info: ModelInfo | None = None) -> None:
        self._target, self._target_info = target, info
        # the file name, as the Library tab shows it (general.name is often the same for every quantization)
        self.suggest_button.setText(f"Suggest drafts for {target.file_name}" if target else "Suggest drafts")
        self._update_buttons()

    def client(self) -> HubClient:
        token = self.token_store.get() if self.token_store is not None else None
        return HubClient(token=token, endpoint=self.endpoint)

    @property
    def message(self) -> str:
        return self._message

    def show_message(self, text: str, error: bool = False) -> None:
        self._message = text
        self.message_label.setText(text)
        self.message_label.setStyleSheet("color: #c0392b;" if error else "")

    # -- search ---------------------------------------------------------------------------------------

    @Slot()
    def search(self) -> None:
        query = self.search_edit.text().strip()
        self._search_gen += 1
        gen = self._search_gen
        sort = self.sort_combo.currentData()
        client = self.client()
        self._suggest_mode = False
        self.show_message(f"Searching for “{query}”…" if query else "Loading popular GGUF models…")
        self.search_button.setEnabled(False)

        def work(_relay: Relay) -> tuple[int, list[HubRepo]]:
            return gen, client.search(query, sort=sort, limit=50)

        run_in_pool(self._pool, self, work, self._on_search_done, self._on_search_failed, describe=_describe_error)

    @Slot(int)
    def _sort_changed(self, _index: int) -> None:
        if self._repos and not self._suggest_mode:
            self.search()

    @Slot(object)
    def _on_search_done(self, result: object) -> None:
        gen, repos = result  # type: ignore[misc]
        if gen != self._search_gen:
            return
        self.search_button.setEnabled(True)
        self._local_drafts = []
        self._notes = {}
        self._show_repos(repos)
        query = self.search_edit.text().strip()
        found = _plural(len(repos), "GGUF repository", "GGUF repositories")
        found += f" for “{query}”" if query else ""
        self.show_message(found if repos else f"No GGUF models found for “{query}”. Try fewer words.")
        self.searchFinished.emit(len(repos))

    @Slot(str)
    def _on_search_failed(self, message: str) -> None:
        self.search_button.setEnabled(True)
        self.show_message(message, error=True)
        self.searchFinished.emit(-1)

    def _show_repos(self, repos: list[HubRepo]) -> None:
        self._repos = list(repos)
        t = self.repo_table
        t.setSortingEnabled(False)
        t.clearContents()
        t.setRowCount(len(self._local_drafts) + len(repos))
        row = 0
        for m in self._local_drafts:
            items = self._set_row(t, row, [m.file_name, format_count(m.parameter_count), "", "", "",
                                           "in your library · compatible"], key=f"local:{m.path}")  # fmt: skip
            items[0].setToolTip(str(m.path))
            row += 1
        for r in repos:
            name = ("🔒 " if r.gated else "") + r.repo_id
            updated = r.last_modified.strftime("%Y-%m-%d") if r.last_modified else ""
            params = format_count(r.parameters * 1e9 if r.parameters is not None else None)
            items = self._set_row(t, row, [name, params, format_count(r.downloads), format_count(r.likes),
                                           updated, self._notes.get(r.repo_id, "")], key=r.repo_id)  # fmt: skip
            items[2].setData(Qt.ItemDataRole.UserRole, r.downloads)
            items[3].setData(Qt.ItemDataRole.UserRole, r.likes)
            items[1].setData(Qt.ItemDataRole.UserRole, r.parameters or 0)
            if r.gated:
                items[0].setToolTip("Gated: accept the licence on the Hub and set an access token to download")
            row += 1
        self.file_table.setRowCount(0)
        self._files = None
        self.files_label.setText("Select a model to see its files.")
        self._update_buttons()

    @staticmethod
    def _set_row(t: QTableWidget, row: int, texts: list[str], key: str) -> list[QTableWidgetItem]:
        items = []
        for col, text in enumerate(texts):
            item = _NumberItem(text) if col in (1, 2, 3) else QTableWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole + 1, key)
            t.setItem(row, col, item)
            items.append(item)
        return items

    def repo_ids(self) -> list[str]:
        """What the results table shows, top to bottom (keys: repo ids, 'local:<path>' for library drafts)."""
        t = self.repo_table
        return [str(t.item(r, 0).data(Qt.ItemDataRole.UserRole + 1)) for r in range(t.rowCount()) if t.item(r, 0)]

    def select_repo(self, repo_id: str) -> bool:
        for r, key in enumerate(self.repo_ids()):
            if key == repo_id:
                self.repo_table.selectRow(r)
                return True
        return False

    def _selected_key(self) -> str | None:
        rows = self.repo_table.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.repo_table.item(rows[0].row(), 0)
        return str(item.data(Qt.ItemDataRole.UserRole + 1)) if item else None

    # -- files ----------------------------------------------------------------------------------------

    @Slot()
    def _repo_selected(self) -> None:
        key = self._selected_key()
        self._update_buttons()
        if key is None or key.startswith("local:"):
            self.file_table.setRowCount(0)
            self._files = None
            if key:
                self.files_label.setText("Already in your library and compatible with the loaded model: "
                                         "press “Use as draft”.")  # fmt: skip
            return
        self._files_gen += 1
        gen = self._files_gen
        client = self.client()
        self.files_label.setText(f"Listing the files of {key}…")
        self.file_table.setRowCount(0)
        self._files = None

        def work(_relay: Relay) -> tuple[int, RepoFiles]:
            return gen, client.files(key)

        run_in_pool(self._pool, self, work, self._on_files_done, self._on_files_failed, describe=_describe_error)

    @Slot(object)
    def _on_files_done(self, result: object) -> None:
        gen, files = result  # type: ignore[misc]
        if gen != self._files_gen:
            return
        self._files = files
        res = self.resources()
        fits = [fit_for_machine(f.size, available_ram=res.available_ram, free_vram=res.free_vram, n_ctx=self.n_ctx)
                for f in files.files]  # fmt: skip
        t = self.file_table
        t.setSortingEnabled(False)
        t.setRowCount(len(files.files))
        for row, (f, fit) in enumerate(zip(files.files, fits, strict=True)):
            quant = f.quant or ("projector" if f.is_projector else "?")
            texts = [quant, f.display_name, format_bytes(f.size) if f.size else "?", self._fit_text(fit)]
            for col, text in enumerate(texts):
                item = _NumberItem(text) if col == 2 else QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole + 1, f.filename)
                if col == 2:
                    item.setData(Qt.ItemDataRole.UserRole, f.size or 0)
                if col == 3:
                    item.setForeground(QColor(FIT_COLORS[fit.level]))
                    item.setToolTip(fit.detail)
                if f.is_projector:
                    item.setToolTip("vision projector: goes with a vision model, not a chat model by itself")
                t.setItem(row, col, item)
        repo = files.repo
        gated = " 🔒 Gated: accept its licence on the Hub, then set an access token." if repo.gated else ""
        if files.files:
            count = _plural(len(files.files), "GGUF file", "GGUF files")
            self.files_label.setText(f"{repo.repo_id}: {count}, pinned to commit {files.revision[:10]}.{gated}")
            self.file_table.selectRow(self._recommended_row(files, fits))
        else:
            self.files_label.setText(f"{repo.repo_id} has no GGUF files.")
        self._update_buttons()
        self.filesListed.emit(len(files.files))

    @staticmethod
    def _recommended_row(files: RepoFiles, fits: list[Fit]) -> int:
        """Preselect the largest quantization of Q4_K_M quality or better that fits; else the first."""
        best = 0
        for row, (f, fit) in enumerate(zip(files.files, fits, strict=True)):
            if f.is_projector:
                continue
            if (f.quant or "").upper().startswith(("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")) and fit.level == "fits":
                best = row
        return best

    @staticmethod
    def _fit_text(fit: Fit) -> str:
        return {"fits": "✓ fits", "tight": "≈ tight", "too-big": "✗ too big", "unknown": "?"}[fit.level]

    @Slot(str)
    def _on_files_failed(self, message: str) -> None:
        self.files_label.setText(message)
        self.show_message(message, error=True)
        self.filesListed.emit(-1)

    def selected_file(self) -> HubFile | None:
        if self._files is None:
            return None
        rows = self.file_table.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.file_table.item(rows[0].row(), 0)
        return self._files.find(str(item.data(Qt.ItemDataRole.UserRole + 1))) if item else None

    def select_file(self, quant_or_name: str) -> bool:
        if self._files is None:
            return False
        for row in range(self.file_table.rowCount()):
            q, name = self.file_table.item(row, 0).text(), self.file_table.item(row, 1).text()
            if quant_or_name in (q, name):
                self.file_table.selectRow(row)
                return True
        return False

    # -- downloads ------------------------------------------------------------------------------------

    @Slot()
    def _download_clicked(self) -> None:
        self.download_selected("model")

    @Slot()
    def _download_draft_clicked(self) -> None:
        self.download_selected("draft")

    def download_selected(self, purpose: str = "model") -> bool:
        f = self.selected_file()
        if f is None:
            self.show_message("Select a file first.", error=True)
            return False
        target = self._target.path if purpose == "draft" and self._target is not None else None
        if purpose == "draft" and target is None:
            self.show_message("Load the target model first: a draft is checked against it.", error=True)
            return False
        try:
            self.downloads.manager.enqueue(f, purpose=purpose, target_path=target)
        except DownloadError as e:
            self.show_message(str(e), error=True)
            return False
        self.show_message(f"Downloading {f.display_name} ({format_bytes(f.size) if f.size else 'size unknown'}).")
        return True

    @Slot(object)
    def _on_download_done(self, job) -> None:
        self.libraryChanged.emit()
        if job.purpose == "draft" and job.compatible is False:
            self.show_message(f"{job.name} downloaded, but it cannot draft for the loaded model: {job.compat_reason}",
                              error=True)  # fmt: skip
        else:
            self.show_message(f"{job.name} downloaded and verified — it is in your library now.")

    # -- draft suggestions ----------------------------------------------------------------------------

    @Slot()
    def suggest_drafts(self) -> None:
        target = self._target
        if target is None:
            self.show_message("Load a target model first, then ask for drafts.", error=True)
            return
        self._search_gen += 1
        gen = self._search_gen
        client = self.client()
        library = self.library
        info = self._target_info
        # the file name follows the Hub's naming (family, size, quantization); general.name often does not
        basename = str(info.metadata.get("general.basename") or "") if info is not None else ""
        name = target.file_name if parameter_billions(target.file_name) else (basename or target.name or target.file_name)
        billions = parameter_billions(name) or (target.parameter_count / 1e9 if target.parameter_count else None)
        author = target.path.parent.parent.name if target.path.parent.parent != target.path.parent else None
        self._suggest_mode = True
        self.show_message(f"Looking for drafts for {name}…")

        def work(_relay: Relay) -> tuple[int, list[LocalModel], list[DraftSuggestion], str]:
            local: list[LocalModel] = []
            if library is not None:
                for m, verdict in library.compatible_drafts(target):
                    if verdict and (m.file_size < target.file_size):
                        local.append(m)
            try:
                hub = client.suggest_drafts(name, billions, author)
                hub_msg = ""
            except HubError as e:
                hub, hub_msg = [], str(e)
            return gen, local, hub, hub_msg

        run_in_pool(self._pool, self, work, self._on_suggestions, self._on_search_failed, describe=_describe_error)

    @Slot(object)
    def _on_suggestions(self, result: object) -> None:
        gen, local, hub, hub_msg = result  # type: ignore[misc]
        if gen != self._search_gen:
            return
        self._local_drafts = list(local)
        self._notes = {s.repo.repo_id: s.reason for s in hub}
        self._show_repos([s.repo for s in hub])
        parts = []
        if local:
            parts.append(f"{_plural(len(local), 'compatible draft', 'compatible drafts')} already in your library "
                         "(listed first)")  # fmt: skip
        if hub:
            parts.append(f"{_plural(len(hub), 'candidate', 'candidates')} on the Hub — a downloaded draft is "
                         "checked against the target before it is offered")  # fmt: skip
        if hub_msg:
            parts.append(hub_msg)
        if not parts:
            parts.append("No suitable draft found: a draft must share the target's tokenizer (same family) and be "
                         "much smaller")  # fmt: skip
        self.show_message("; ".join(parts) + ".", error=bool(hub_msg) and not local and not hub)
        self.suggestionsReady.emit(len(local) + len(hub))

    @Slot()
    def _use_local_clicked(self) -> None:
        key = self._selected_key()
        if key and key.startswith("local:"):
            path = Path(key.removeprefix("local:"))
            model = next((m for m in self._local_drafts if m.path == path), None)
            self.useAsDraftRequested.emit(model or path)

    # -- token ----------------------------------------------------------------------------------------

    @Slot()
    def edit_token(self) -> None:
        if self.token_store is None:
            return
        current = mask_token(self.token_store.get())
        text = self.ask_token(self, self.token_store.where, current)
        if text is None:
            return
        if not text.strip():
            self.token_store.clear()
            self.show_message("Access token removed.")
            return
        try:
            where = self.token_store.set(text)
        except TokenError as e:
            self.show_message(str(e), error=True)
            return
        self.show_message(f"Access token saved in {where}. Gated models you have accepted can be downloaded now.")

    # -- buttons --------------------------------------------------------------------------------------

    def _update_buttons(self) -> None:
        key = self._selected_key()
        local = bool(key and key.startswith("local:"))
        has_file = self.selected_file() is not None
        self.download_button.setEnabled(has_file)
        self.download_draft_button.setEnabled(has_file and self._target is not None)
        self.download_draft_button.setToolTip(
            "" if self._target is not None else "Load a target model first: a draft is checked against it"
        )
        self.use_local_button.setVisible(local)
        self.suggest_button.setEnabled(self._target is not None)
        self.token_button.setEnabled(self.token_store is not None)
