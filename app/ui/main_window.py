"""The main window: a navigation rail with pages (Chat, Models, Discover, Benchmark; :meth:`MainWindow.add_page`
adds more), the chat page with its model bar, conversation list, transcript and settings sidebar.

It wires widgets to the worker bridge and the stores; it computes nothing heavy itself.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QByteArray, QEvent, QEventLoop, QObject, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.engine import sources
from app.engine.advisor import advise
from app.engine.gguf_info import GGUFError, ModelInfo, inspect_gguf
from app.engine.llama_backend import backend_info, default_threads
from app.engine.memory import ModelLoad, estimate_load
from app.engine.session import ModelSettings
from app.engine.speculative import GenerationStats
from app.hardware import monitor
from app.library.credentials import TokenStore
from app.library.local import LocalLibrary, LocalModel
from app.store.chats import ChatStore
from app.store.db import default_data_dir, default_history_dir
from app.store.presets import Preset, PresetStore
from app.store.settings import HISTORY_KEY, SettingsStore, model_key
from app.ui.benchmark_dialog import BenchmarkDialog, BenchTarget, apply_preset, summary_line
from app.ui.bridge import EngineBridge
from app.ui.chat_view import ChatView
from app.ui.discover_view import DiscoverView
from app.ui.download_bridge import DownloadBridge
from app.ui.model_bar import ModelBar, ModelEntry
from app.ui.model_browser import ModelBrowser
from app.ui.nav_rail import NavRail
from app.ui.onboarding import OnboardingPage
from app.ui.presets_dialog import PresetsDialog
from app.ui.resource_monitor import ResourceMonitor
from app.ui.server_page import ServerPage
from app.ui.settings_dialog import SettingsDialog
from app.ui.settings_panel import DraftChoice, PanelValues, SettingsPanel
from app.ui.shortcuts_dialog import ShortcutsDialog, with_shortcut
from app.ui.theme import apply_theme
from app.ui.workers_editor import workers_for_target

__all__ = ["MainWindow", "DEFAULT_SIZE"]

#: the first-run size (clamped to the screen): a 1280×800 laptop screen shows the whole window
DEFAULT_SIZE = (1280, 800)
#: the transcript's narrowest comfortable width: a window too narrow for it beside the chat list and the
#: settings sidebar folds the sidebar away (and shows it again when wide enough), unless the user showed it there
TRANSCRIPT_MIN_WIDTH = 480
#: the chat page's splitter at its first run: transcript | settings sidebar
_CHAT_SPLIT = (880, 330)


def past_chats_bytes() -> int:
    """What the engine remembers of past chats for drafting, on disk (read from its folder: no engine call)."""
    folder = default_history_dir()
    try:
        return sum(f.stat().st_size for f in folder.glob("*.tokens"))
    except OSError:
        return 0


class MainWindow(QMainWindow):
    def __init__(
        self,
        chats: ChatStore,
        settings: SettingsStore,
        library: LocalLibrary,
        extra_folders: list[Path] | None = None,
    ) -> None:
        super().__init__()
        self.setWindowTitle("Tandem")
        self._resize_to_screen()
        self.chats = chats
        self.settings = settings
        self.presets = PresetStore(settings)
        self.library = library
        self.extra_folders = list(extra_folders or [])
        self.bridge = EngineBridge(self, history_folder=default_history_dir(),
                                   history_enabled=bool(self.settings.get("remember_past_chats")))
        self.target: LocalModel | None = None
        self.target_info: ModelInfo | None = None
        self._target_on_workers = False  # the target being loaded / loaded has layers on workers
        self.local_load_box: QMessageBox | None = None  # the open "load on this machine" question, if any
        self.speculation = "off"
        self._wanted_draft = ""
        self._last_pair_keys: tuple[str, str] | None = None
        self._auto_load_tried = False
        # the settings sidebar: the user's choice (View → Settings sidebar, the bar's Settings button), whether
        # they showed it while the window was too narrow for it (it then stays), and its width when shown
        self._panel_choice = True
        self._panel_even_narrow = False
        self._panel_width = _CHAT_SPLIT[1]
        self._fitting_panel = False  # the window, not the user, is showing / hiding it
        self.has_gpu_offload = bool(backend_info().get("gpu_offload"))
        # dialogs that tests replace: (title, text) -> bool
        self.confirm: Callable[[str, str], bool] = self._confirm_dialog
        self.last_message = ""

        # -- widgets --------------------------------------------------------------------------------
        self.browser = ModelBrowser(library)
        # the Hub: searches and downloads (downloads land in Tandem's own models folder and resume next start)
        data_dir = default_data_dir()
        self.token_store = TokenStore(data_dir)
        endpoint = os.environ.get("HF_ENDPOINT") or None
        self.downloads = DownloadBridge(self.library_default_folder(), data_dir / "downloads",
                                        token=self.token_store.get, endpoint=endpoint, parent=self)  # fmt: skip
        self.discover = DiscoverView(self.downloads, self.token_store, library, endpoint=endpoint)
        self.discover.n_ctx = int(self.settings.get("default_ctx"))  # for the fit badge
        self.panel = SettingsPanel()
        self.chat = ChatView(chats, self.bridge, self.panel.request_settings)
        self.onboarding = OnboardingPage()
        self.centre = QStackedWidget()
        self.centre.addWidget(self.chat)
        self.centre.addWidget(self.onboarding)
        self.model_bar = ModelBar()

        # the chat page: the model bar over [transcript (with its conversation list) | settings sidebar]
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.centre)
        self.splitter.addWidget(self.panel)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 0)
        self.splitter.setCollapsible(0, False)
        self.splitter.setSizes(list(_CHAT_SPLIT))
        self.chat_page = QWidget()
        chat_col = QVBoxLayout(self.chat_page)
        chat_col.setContentsMargins(0, 0, 0, 0)
        chat_col.setSpacing(0)
        chat_col.addWidget(self.model_bar)
        chat_col.addWidget(self.splitter, 1)

        # the rail and its pages
        self.rail = NavRail()
        self.pages = QStackedWidget()
        self._page_keys: dict[str, QWidget] = {}
        self.page_actions: dict[str, QAction] = {}
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self.rail)
        row.addWidget(self.pages, 1)
        self.setCentralWidget(central)
        self.rail.pageSelected.connect(self.show_page)
        self.benchmark_dialog = BenchmarkDialog(self.bridge, self.settings, self._benchmark_target, embedded=True)

        # status bar: load progress + cancel, resource monitor
        self.monitor = ResourceMonitor()
        self.load_box = QWidget()
        lb = QHBoxLayout(self.load_box)
        lb.setContentsMargins(0, 0, 0, 0)
        self.load_label = QLabel()
        self.load_progress = QProgressBar()
        self.load_progress.setRange(0, 1000)
        self.load_progress.setMaximumWidth(180)
        self.load_cancel = QPushButton("Cancel")
        for w in (self.load_label, self.load_progress, self.load_cancel):
            lb.addWidget(w)
        self.load_box.hide()
        self.statusBar().addWidget(self.load_box)
        self.statusBar().addPermanentWidget(self.monitor)

        self._build_actions()
        self.add_page("chat", "Chat", self.chat_page, shortcut="Ctrl+1")
        self.add_page("models", "Models", self.browser, shortcut="Ctrl+2")
        self.add_page("discover", "Discover", self.discover, shortcut="Ctrl+3")
        self.add_page("benchmark", "Benchmark", self.benchmark_dialog, shortcut="Ctrl+4")
        self._add_server_page()
        self.show_page("chat")
        self._connect()
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(400)
        self._save_timer.timeout.connect(self._save_model_settings)

        self.chat.set_model_ready(False)
        self.chat.set_highlight_drafts(bool(self.settings.get("highlight_draft_tokens")))
        self.highlight_action.setChecked(bool(self.settings.get("highlight_draft_tokens")))
        self._refresh_presets()
        self._restore_layout()
        self.splitter.installEventFilter(self)  # its resizes decide whether the sidebar fits (_fit_panel)
        self.splitter.splitterMoved.connect(self._fit_panel)
        self.chat.splitter.splitterMoved.connect(self._fit_panel)
        try:  # Tandem's own models folder (downloads land there) exists from the first launch on
            self.library_default_folder().mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self.show_message(f"cannot create the models folder: {e}", error=True)
        self.browser.set_folders(self.model_folders())
        self._update_centre()

    def _add_server_page(self) -> None:
        """The Server page (the local OpenAI-compatible server on this window's engine service)."""
        self.server_page = ServerPage(self.bridge, self.settings, self.model_folders)
        self.add_page("server", "Server", self.server_page, shortcut="Ctrl+5")

    # -- pages ------------------------------------------------------------------------------------------
    def add_page(self, key: str, title: str, widget: QWidget, icon: QIcon | None = None,
                 shortcut: str | None = None) -> QAction:
        """Add a page to the rail (and View menu); returns the action that shows it."""
        if key in self._page_keys:
            raise ValueError(f"a page {key!r} exists already")
        self._page_keys[key] = widget
        self.pages.addWidget(widget)
        action = QAction(title, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(lambda _checked=False, k=key: self.show_page(k))
        self.addAction(action)
        self.pages_menu.addAction(action)
        self.page_actions[key] = action
        self.rail.add_page(key, title, icon, with_shortcut(f"{title} page", action))
        return action

    def show_page(self, key: str) -> None:
        widget = self._page_keys.get(key)
        if widget is None:
            return
        self.pages.setCurrentWidget(widget)
        self.rail.set_current(key)

    def current_page(self) -> str | None:
        current = self.pages.currentWidget()
        return next((k for k, w in self._page_keys.items() if w is current), None)

    def page(self, key: str) -> QWidget | None:
        return self._page_keys.get(key)

    def _resize_to_screen(self) -> None:
        screen = QGuiApplication.primaryScreen()
        w, h = DEFAULT_SIZE
        if screen is not None:
            avail = screen.availableGeometry()
            w, h = min(w, avail.width()), min(h, avail.height())
        self.resize(w, h)

    # -- setup ------------------------------------------------------------------------------------------
    def _action(self, text: str, slot: Callable[[], object], shortcut: str | QKeySequence | None = None,
                tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setToolTip(tip)
        action.triggered.connect(lambda _checked=False: slot())
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        self.new_chat_action = self.chat.conversation_list.new_action  # Ctrl+N (one action: one shortcut)
        file_menu.addAction(self.new_chat_action)
        self.import_action = self._action("&Import chat…", self.chat.conversation_list.import_dialog)
        self.export_md_action = self._action("Export chat as &Markdown…",
                                             lambda: self.chat.conversation_list.export_dialog("md"))
        self.export_json_action = self._action("Export chat as &JSON…",
                                               lambda: self.chat.conversation_list.export_dialog("json"))
        for a in (self.import_action, self.export_md_action, self.export_json_action):
            file_menu.addAction(a)
        file_menu.addSeparator()
        self.settings_action = self._action("&Settings…", self.open_settings, "Ctrl+,")
        file_menu.addAction(self.settings_action)
        file_menu.addSeparator()
        quit_action = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        file_menu.addAction(quit_action)

        chat_menu = menu.addMenu("&Chat")
        self.focus_input_action = self._action("Focus the message box", self.focus_input, "Ctrl+L")
        self.search_action = self._action("&Search chats and messages", self.focus_search, "Ctrl+F")
        self.stop_action = self._action("S&top the reply", self.chat.stop, "Esc")
        self.stop_action.setEnabled(False)  # only while a reply runs (Esc stays free for dialogs and edits)
        self.copy_reply_action = self._action("&Copy the last reply", self.chat.copy_last_reply, "Ctrl+Shift+C")
        self.presets_action = self._action("&Presets…", self.open_presets)
        for a in (self.focus_input_action, self.search_action, self.stop_action, self.copy_reply_action):
            chat_menu.addAction(a)
        chat_menu.addSeparator()
        chat_menu.addAction(self.presets_action)

        view = menu.addMenu("&View")
        self.pages_menu = view.addMenu("&Pages")
        self.chats_action = QAction("Conversation list", self, checkable=True, checked=True)
        self.chats_action.setShortcut("Ctrl+Shift+L")
        self.chats_action.toggled.connect(self._set_chats_visible)
        view.addAction(self.chats_action)
        self.panel_action = QAction("Settings sidebar", self, checkable=True, checked=True)
        self.panel_action.setShortcut("Ctrl+Shift+A")
        self.panel_action.toggled.connect(self._set_panel_visible)
        view.addAction(self.panel_action)
        self.highlight_action = QAction("Visualize accepted draft tokens", self, checkable=True)
        self.highlight_action.toggled.connect(self._toggle_highlight)
        view.addAction(self.highlight_action)
        for a in (self.chats_action, self.panel_action):
            self.addAction(a)

        tools = menu.addMenu("&Tools")
        self.benchmark_action = QAction("&Benchmark…", self, enabled=False)
        self.benchmark_action.setToolTip("Measure speculation for the loaded model on this machine; auto-tune it")
        self.benchmark_action.triggered.connect(self.open_benchmark)
        tools.addAction(self.benchmark_action)

        help_menu = menu.addMenu("&Help")
        self.shortcuts_action = self._action("&Keyboard shortcuts", self.open_shortcuts, "F1")
        help_menu.addAction(self.shortcuts_action)

    def shortcut_actions(self) -> list[QAction]:
        """Every action with a keyboard shortcut (the Help → Keyboard shortcuts dialog lists them)."""
        actions = [self.new_chat_action, self.focus_input_action, self.search_action, self.stop_action,
                   self.copy_reply_action, self.settings_action, self.chats_action, self.panel_action,
                   *self.page_actions.values(), self.shortcuts_action]
        return [a for a in actions if not a.shortcut().isEmpty()]

    def _connect(self) -> None:
        ev = self.bridge.events
        ev.loadProgress.connect(self._on_load_progress)
        ev.loaded.connect(self._on_loaded)
        ev.loadFailed.connect(self._on_load_failed)
        ev.unloaded.connect(self._on_unloaded)
        ev.targetLost.connect(self._on_target_lost)
        ev.speculationChanged.connect(self._on_speculation)
        # worker signals go to bound methods of GUI-thread objects only: a plain lambda would run in the
        # worker thread (PySide connects receiver-less callables directly)
        ev.liveStats.connect(self._on_live_stats)
        ev.error.connect(self._on_engine_error)
        for event in (ev.loaded, ev.loadFailed, ev.unloaded):
            event.connect(self._update_benchmark_action)
        self.load_cancel.clicked.connect(self.bridge.cancel_load)
        self.browser.loadRequested.connect(self._load_from_browser)
        self.browser.useAsDraftRequested.connect(self.use_as_draft)
        self.browser.foldersChanged.connect(self._folders_changed)
        self.browser.scanFinished.connect(self._on_scan_finished)  # models found (or a download landed)
        self.discover.loadRequested.connect(self._load_downloaded)
        self.discover.useAsDraftRequested.connect(self._use_downloaded_as_draft)
        self.discover.libraryChanged.connect(self.browser.refresh)
        self.panel.changed.connect(self._panel_changed)
        self.panel.loadRequested.connect(lambda: self.target and self.load_model(self.target))
        self.panel.applyDraftRequested.connect(self.apply_speculation)
        self.panel.resetRequested.connect(self.reset_settings)
        self.model_bar.loadRequested.connect(self._load_path)
        self.model_bar.ejectRequested.connect(self.eject)
        self.model_bar.sourceChosen.connect(self._bar_source_chosen)
        self.model_bar.draftChosen.connect(self._bar_draft_chosen)
        self.model_bar.presetChosen.connect(self.apply_preset_named)
        self.model_bar.managePresetsRequested.connect(self.open_presets)
        self.model_bar.chatsToggled.connect(self.chats_action.setChecked)
        self.model_bar.settingsToggled.connect(self.panel_action.setChecked)
        self.chat.generationStarted.connect(self._on_generation_started)
        self.chat.generationFinished.connect(self._on_generation_finished)
        self.chat.statusMessage.connect(lambda m: self.statusBar().showMessage(m, 6000))
        self.chat.highlightDraftsChanged.connect(self.highlight_action.setChecked)
        self.onboarding.demoModelReady.connect(self._demo_ready)
        self.onboarding.folderChosen.connect(self._folder_chosen)
        self.benchmark_dialog.runningChanged.connect(self._on_benchmark_running)
        self.benchmark_dialog.presetApplied.connect(self._apply_benchmark_preset)

    def _set_chats_visible(self, on: bool) -> None:
        self.chat.set_conversations_visible(on)
        self.model_bar.chats_button.setChecked(on)
        self._fit_panel()  # the list's width is the sidebar's room

    def _set_panel_visible(self, on: bool) -> None:
        if not self._fitting_panel:  # the user's choice: it wins, and is remembered
            self._panel_choice = on
            self._panel_even_narrow = on and not self._room_for_panel()
        self.panel.setVisible(on)
        self.model_bar.settings_button.setChecked(on)

    def _room_for_panel(self) -> bool:
        """Whether the transcript keeps TRANSCRIPT_MIN_WIDTH beside the chat list (when shown) and the sidebar."""
        beside = self._panel_width + self.splitter.handleWidth()
        if self.chat.conversation_list.isVisibleTo(self.chat):
            beside += self.chat.conversation_list.width() + self.chat.splitter.handleWidth()
        return self.splitter.width() - beside >= TRANSCRIPT_MIN_WIDTH

    def _fit_panel(self) -> None:
        """Fold the sidebar away when the window is too narrow for it, bring it back when it is wide enough."""
        if self.panel.isVisible() and self.splitter.sizes()[1] > 0:
            self._panel_width = self.splitter.sizes()[1]
        if not self._panel_choice:
            return
        show = self._panel_even_narrow or self._room_for_panel()
        if show != self.panel_action.isChecked():
            self._fitting_panel = True
            try:
                self.panel_action.setChecked(show)
            finally:
                self._fitting_panel = False

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if watched is self.splitter and event.type() == QEvent.Type.Resize:
            self._fit_panel()
        return super().eventFilter(watched, event)

    def focus_input(self) -> None:
        self.show_page("chat")
        self.chat.focus_input()

    def focus_search(self) -> None:
        self.show_page("chat")
        self.chats_action.setChecked(True)
        self.chat.focus_search()

    def open_shortcuts(self) -> ShortcutsDialog:
        dialog = ShortcutsDialog(self.shortcut_actions(), self)
        dialog.show()
        return dialog

    def _on_generation_started(self) -> None:
        self.monitor.show_live(0.0, 0, 0)
        self.stop_action.setEnabled(True)

    def _on_generation_finished(self, stats: GenerationStats | None) -> None:
        self.stop_action.setEnabled(False)
        self.monitor.show_stats(stats)
        if stats is not None:
            self.model_bar.set_speculation(self.speculation, stats)

    # -- folders / library ----------------------------------------------------------------------------
    def model_folders(self) -> list[Path]:
        folders = [Path(p) for p in self.settings.get("model_folders") or []]
        for extra in [self.library_default_folder(), *self.extra_folders]:
            if extra not in folders:
                folders.append(extra)
        return folders

    def library_default_folder(self) -> Path:
        from app.library.local import default_models_folder

        return default_models_folder()

    def _folders_changed(self, folders: list) -> None:
        own = [str(f) for f in folders if Path(f) not in (self.library_default_folder(), *self.extra_folders)]
        self.settings.set("model_folders", own)
        self._update_centre()

    def _folder_chosen(self, folder: Path) -> None:
        own = list(self.settings.get("model_folders") or [])
        if str(folder) not in own:
            own.append(str(folder))
        self.settings.set("model_folders", own)
        self.browser.set_folders(self.model_folders())
        QTimer.singleShot(0, self._update_centre)

    def _demo_ready(self, path: Path) -> None:
        if path.parent not in self.extra_folders:
            self.extra_folders.append(path.parent)
        self.browser.set_folders(self.model_folders())
        QTimer.singleShot(0, self._update_centre)

    def _on_scan_finished(self, _models: list) -> None:
        self.model_bar.set_models([ModelEntry(str(m.path), m.file_name, tooltip=str(m.path))
                                   for m in self.browser.models() if not m.broken])
        self._update_centre()
        self._auto_load()

    def _auto_load(self) -> None:
        """First scan: load the model used last time, else the bundled demo model (first run)."""
        if self._auto_load_tried or self.target is not None or not self.settings.get("load_last_model"):
            return
        models = [m for m in self.browser.models() if not m.broken]
        if not models:
            return  # the onboarding page is shown; the demo model's download scans again
        self._auto_load_tried = True
        from app.library.reference_models import demo_model_path

        wanted = [Path(p) for p in (self.settings.get("last_model_path", None), demo_model_path()) if p]
        for path in wanted:
            model = next((m for m in models if Path(m.path) == path), None)
            if model is not None:
                self.load_model(model)
                return

    def _update_centre(self) -> None:
        has_models = bool(self.browser.models()) or self.target is not None
        self.centre.setCurrentWidget(self.chat if has_models else self.onboarding)

    # -- loading --------------------------------------------------------------------------------------
    def _values_for(self, model: LocalModel) -> PanelValues:
        stored = self.settings.get_model_settings(model_key(model.path))
        v = PanelValues.from_dict(stored)
        if not stored:
            v.n_ctx = int(self.settings.get("default_ctx"))
            v.threads = int(self.settings.get("threads") or 0)
        return v

    def load_model(self, model: LocalModel, *, local_only: bool = False) -> None:
        """Load `model` as the target with the panel's (or its remembered) settings — its layers on the
        workers of Settings → Workers when there are any, unless `local_only`."""
        if not Path(model.path).exists():
            self.show_message(f"file no longer exists: {model.path}", error=True)
            self.browser.refresh()
            return
        if self.target is None or Path(self.target.path) != Path(model.path):
            values = self._values_for(model)
            self.panel.set_values(values)
            # the draft list is only known once the target is loaded: remember which draft to select then
            self._wanted_draft = values.draft_path
        values = self.panel.values()
        try:
            info = inspect_gguf(model.path)
        except GGUFError as e:
            self.show_message(str(e), error=True)
            return
        workers = () if local_only else workers_for_target(self.settings.get)
        if not workers:  # on workers, the engine checks each one's share against its free memory before loading
            estimate = estimate_load([ModelLoad(info, values.gpu_layers, values.n_ctx)])
            res = monitor.resources()
            fits, message = estimate.fits(available_ram=res.available_ram, free_vram=res.free_vram,
                                          gpu_count=res.gpu_count)
            if not fits and not self.confirm("Not enough memory", f"{info.display_name}: {message}.\n\nLoad anyway?"):
                return
        self.target = model
        self._target_on_workers = bool(workers)
        self.target_info = None
        self.chat.set_model_ready(False)
        self.model_bar.set_loaded(str(model.path), loading=True)
        where = f" on {', '.join(map(str, workers))}" if workers else ""
        self.load_label.setText(f"Loading {model.name}{where}…")
        self.load_progress.setValue(0)
        self.load_box.show()
        # with workers, this machine's share of the layers runs on its CPU (ModelSettings.validate)
        self.bridge.load_target(ModelSettings(Path(model.path), n_gpu_layers=0 if workers else values.gpu_layers,
                                              n_ctx=values.n_ctx, workers=workers,
                                              n_threads=values.threads or default_threads(leave_one_free=True)))

    def _on_load_progress(self, which: str, fraction: float) -> None:
        self.load_box.show()
        self.load_progress.setValue(int(fraction * 1000))

    def _on_loaded(self, which: str, info: ModelInfo) -> None:
        self.load_box.hide()
        if which == "target":
            self.target_info = info
            name = self.target.file_name if self.target is not None else info.display_name
            self.panel.set_target(name, info.block_count or 0, info.context_length or 0)
            self.chat.set_model_ready(True)
            self.statusBar().showMessage(f"Loaded {info.display_name}", 5000)
            self.browser.set_target(self.target)
            self.discover.set_target(self.target, info)
            self._refresh_draft_choices()
            self.bridge.set_spec(self.panel.values().spec())
            self.settings.set("last_model_path", str(self.target.path) if self.target else None)
            self.model_bar.set_loaded(str(self.target.path) if self.target else None)
            if self.panel.values().draft_source != "off":
                self.apply_speculation()
            self._update_centre()
        else:
            self.statusBar().showMessage(f"Draft ready: {info.display_name}", 5000)
        self._update_estimate()

    def _on_load_failed(self, which: str, message: str) -> None:
        self.load_box.hide()
        model = self.target
        if which == "target":
            self.target = None
            self.target_info = None
            self.panel.set_target(None)
            self.chat.set_model_ready(False)
            self.model_bar.set_loaded(None)
        self.show_message(message, error=True)
        if which == "target" and model is not None and self._target_on_workers:
            self._offer_local_load(model, "Cannot load on the workers", message)

    def _on_target_lost(self, message: str) -> None:
        """A worker holding part of the target was lost mid-reply: the engine unloaded the target (the reply
        so far is kept by the chat); offer to load it again on this machine."""
        model = self.target
        self._on_unloaded("target")
        self.chat.set_model_ready(False)
        self.show_message(message, error=True)
        if model is not None:
            self._offer_local_load(model, "A worker was lost", message)

    def _offer_local_load(self, model: LocalModel, title: str, message: str) -> None:
        """A non-blocking question: load `model` on this machine only (one click), or leave it."""
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, parent=self)
        local = box.addButton("Load on this machine", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Close)
        box.setInformativeText(f"{model.name} can run here without the workers (Settings → Workers keeps the list).")
        box.buttonClicked.connect(lambda b: self.load_model(model, local_only=True) if b is local else None)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.local_load_box = box
        box.open()

    def _on_unloaded(self, which: str) -> None:
        if which != "target":
            return
        self.target = None
        self.target_info = None
        self.panel.set_target(None)
        self.model_bar.set_loaded(None)
        self.browser.set_target(None)
        self._refresh_draft_choices()
        self._update_estimate()

    def eject(self) -> None:
        """Unload the target (its memory is freed); the chat says to load one."""
        if self.chat.is_generating():
            self.show_message("Stop the reply first, then eject the model.", error=True)
            return
        self.bridge.unload()

    def _load_path(self, path: str) -> None:
        model = next((m for m in self.browser.models() if str(m.path) == path), None)
        if model is None:
            model = self.library.describe(Path(path))
        if model.error is not None:
            self.show_message(f"cannot load {Path(path).name}: {model.error}", error=True)
            return
        self.load_model(model)

    def _load_from_browser(self, model: LocalModel) -> None:
        """Load from the Models page, then go to the chat."""
        self.load_model(model)
        if self.target is not None and Path(self.target.path) == Path(model.path):
            self.show_page("chat")

    def _refresh_draft_choices(self) -> None:
        if self.target is None:
            self.panel.set_draft_choices([])
            self.model_bar.set_draft_choices([])
            return
        try:
            pairs = self.library.compatible_drafts(self.target)
        except Exception as e:  # a broken library entry must not break loading
            self.show_message(f"could not check drafts: {e}", error=True)
            pairs = []
        self.panel.set_draft_choices([DraftChoice(Path(m.path), m.file_name, verdict, m.block_count or 0)
                                      for m, verdict in pairs])
        self.model_bar.set_draft_choices(
            [ModelEntry(str(m.path), m.file_name if verdict.compatible else f"{m.file_name} (incompatible)",
                        verdict.compatible, verdict.reason) for m, verdict in pairs],
            self.panel.values().draft_path)
        wanted, self._wanted_draft = self._wanted_draft, ""
        if wanted and self.panel.values().draft_path != wanted:
            item = self.panel.draft_item(wanted)
            if item is not None and item.isEnabled():
                v = self.panel.values()
                v.draft_path = wanted
                self.panel.set_values(v)
        self._apply_pair_settings()

    # -- speculation ---------------------------------------------------------------------------------
    def _load_downloaded(self, path: object) -> None:
        """Load a model the Discover tab downloaded (it is in the library folder now)."""
        model = self.library.describe(Path(str(path)))
        if model.error is not None:
            self.show_message(f"cannot load {Path(str(path)).name}: {model.error}", error=True)
            return
        self.browser.refresh()
        self.load_model(model)

    def _use_downloaded_as_draft(self, model_or_path: object) -> None:
        model = model_or_path if isinstance(model_or_path, LocalModel) else self.library.describe(Path(str(model_or_path)))
        try:
            self.library.scan()  # the new file joins the draft list (the scan is cached: instant for known files)
        except Exception as e:  # a broken folder must not stop the user
            self.show_message(f"could not rescan the library: {e}", error=True)
        self._refresh_draft_choices()
        self.browser.refresh()
        self.use_as_draft(model)

    def use_as_draft(self, model: LocalModel) -> None:
        if self.target is None:
            self.show_message("Load a target model first, then choose its draft.", error=True)
            return
        values = self.panel.values()
        values.draft_source = sources.DRAFT_MODEL
        values.draft_path = str(model.path)
        self.panel.set_values(values)
        item = self.panel.draft_item(str(model.path))
        if item is None or not item.isEnabled():
            reason = item.toolTip() if item is not None else "not in the library"
            self.show_message(f"{model.name} cannot draft for {self.target.name}: {reason}", error=True)
            return
        self.apply_speculation()

    def apply_speculation(self) -> None:
        if self.target_info is None:
            return
        v = self.panel.values()
        self.bridge.set_spec(v.spec())
        if v.draft_source == "off":
            self.bridge.disable_speculation()
        elif v.draft_source == sources.HISTORY:
            self.bridge.use_history()
        elif v.draft_source == sources.DRAFT_MODEL:
            if not v.draft_path:
                self.show_message("Choose a draft model first.", error=True)
                return
            self.load_label.setText(f"Loading draft {Path(v.draft_path).name}…")
            self.load_progress.setValue(0)
            self.load_box.show()
            self.bridge.load_draft(ModelSettings(Path(v.draft_path), n_gpu_layers=v.draft_gpu_layers, n_ctx=v.n_ctx,
                                                 n_threads=v.threads or default_threads(leave_one_free=True)))

    def _on_live_stats(self, _request_id: int, rate: float, accepted: int, drafted: int) -> None:
        self.monitor.show_live(rate, accepted, drafted)

    def _on_engine_error(self, message: str) -> None:
        self.show_message(message, error=True)

    def _on_speculation(self, mode: str) -> None:
        self.speculation = mode
        self.model_bar.set_speculation(mode)

    def _bar_source_chosen(self, source: str) -> None:
        self.panel.choose_source(source)
        if source == sources.DRAFT_MODEL and not self.panel.values().draft_path:
            self.show_message("Choose the draft model in the menu beside it.")
            return
        self.apply_speculation()

    def _bar_draft_chosen(self, path: str) -> None:
        if not path:
            return
        self.panel.choose_draft(path)
        self.apply_speculation()

    # -- settings ---------------------------------------------------------------------------------------
    def _panel_changed(self) -> None:
        v = self.panel.values()
        self.model_bar.set_source(v.draft_source)
        self.model_bar.set_draft(v.draft_path)
        if self._pair_keys() != self._last_pair_keys:
            # another draft (or the chat history) was chosen: its own remembered settings, not the last pair's
            self._apply_pair_settings()
        if self.target_info is not None:
            self.bridge.set_spec(self.panel.values().spec())
        self._update_estimate()
        self._save_timer.start()

    def _pair_keys(self) -> tuple[str, str] | None:
        v = self.panel.values()
        if self.target is not None and v.draft_source == sources.HISTORY:
            return model_key(self.target.path), HISTORY_KEY
        if self.target is None or not v.draft_path or not Path(v.draft_path).exists():
            return None
        return model_key(self.target.path), model_key(v.draft_path)

    def _save_model_settings(self) -> None:
        if self.target is None:
            return
        data = self.panel.values().to_dict()
        self.settings.set_model_settings(model_key(self.target.path), {k: data[k] for k in PanelValues.MODEL_KEYS})
        keys = self._pair_keys()
        if keys:
            # update, not replace: the pair's preset also holds the benchmark's pick
            self.settings.update_pair_settings(*keys, {k: data[k] for k in PanelValues.PAIR_KEYS})

    def _apply_pair_settings(self) -> None:
        keys = self._pair_keys()
        self._last_pair_keys = keys
        if not keys:
            return
        stored = self.settings.get_pair_settings(*keys)
        if stored:
            v = self.panel.values().to_dict()
            v.update({k: stored[k] for k in PanelValues.PAIR_KEYS if k in stored})
            self.panel.set_values(PanelValues.from_dict(v))

    def reset_settings(self) -> None:
        if self.target is not None:
            self.settings.reset_model_settings(model_key(self.target.path))
            keys = self._pair_keys()
            if keys:
                self.settings.reset_pair_settings(*keys)
        v = PanelValues()
        v.n_ctx = int(self.settings.get("default_ctx"))
        self.panel.set_values(v)
        self.statusBar().showMessage("Settings reset to defaults", 4000)

    def _update_estimate(self) -> None:
        """Memory estimate + advice for what the panel describes (before anything is loaded)."""
        v = self.panel.values()
        if self.target is None:
            self.panel.memory_bar.show_estimate(None, None)
            self.panel.set_advice([])
            return
        try:
            info = self.target_info or inspect_gguf(self.target.path)
            loads = [ModelLoad(info, v.gpu_layers, v.n_ctx, n_outputs=1 + (v.draft_max if v.draft_source != "off" else 0))]
            draft = None
            if v.draft_source == sources.DRAFT_MODEL and v.draft_path:
                draft = inspect_gguf(v.draft_path)
                loads.append(ModelLoad(draft, v.draft_gpu_layers, v.n_ctx))
            estimate = estimate_load(loads)
            res = monitor.resources()
        except (GGUFError, OSError, ValueError) as e:
            self.panel.set_advice([])
            self.statusBar().showMessage(str(e), 6000)
            return
        self.panel.memory_bar.show_estimate(estimate, res)
        self.panel.set_advice(advise(
            info, draft_source=v.draft_source, draft=draft, target_gpu_layers=v.gpu_layers,
            draft_gpu_layers=v.draft_gpu_layers, has_gpu=res.gpu_count > 0, gpu_offload_supported=self.has_gpu_offload,
            estimate=estimate, free_vram=res.free_vram if res.gpu_count else None, available_ram=res.available_ram,
            max_tokens=v.max_tokens,
        ))

    def _toggle_highlight(self, on: bool) -> None:
        self.chat.set_highlight_drafts(on)
        self.settings.set("highlight_draft_tokens", bool(on))

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self, past_chats_size=past_chats_bytes,
                                clear_past_chats=self.bridge.clear_history)
        if dialog.exec():
            apply_theme(QApplication.instance(), str(self.settings.get("theme")))
            self.browser.set_folders(self.model_folders())
            self.discover.n_ctx = int(self.settings.get("default_ctx"))
            self.bridge.set_history_enabled(bool(self.settings.get("remember_past_chats")))

    # -- benchmark (Tools → Benchmark…) ----------------------------------------------------------------
    def _update_benchmark_action(self, *_args: object) -> None:
        self.benchmark_action.setEnabled(self.target_info is not None)

    def open_benchmark(self) -> BenchmarkDialog:
        """The Benchmark page for the loaded target and its speculation source."""
        self.show_page("benchmark")
        self.benchmark_dialog.refresh_target()
        return self.benchmark_dialog

    def _benchmark_target(self) -> BenchTarget | None:
        if self.target is None or self.target_info is None:
            return None
        v = self.panel.values()
        draft = None
        if v.draft_path:
            draft = ModelSettings(Path(v.draft_path), n_gpu_layers=v.draft_gpu_layers, n_ctx=v.n_ctx,
                                  n_threads=v.threads or default_threads(leave_one_free=True))
        return BenchTarget(Path(self.target.path), self.speculation, draft)

    def _on_benchmark_running(self, running: bool) -> None:
        # the bridge refuses replies meanwhile (chat shows the same reason when one is sent)
        self.chat.show_notice(self.bridge.busy_reason if running else "The benchmark has ended: chat is available.")

    def _apply_benchmark_preset(self, preset: dict) -> None:
        if self.target is None or Path(str(preset.get("target"))) != Path(self.target.path):
            self.show_message("The benchmarked model is no longer loaded: its preset is stored, not applied.")
            return
        before = self.panel.values()
        self.panel.set_values(apply_preset(before, preset))
        after = self.panel.values()
        if after.draft_source != self.speculation or after.draft_path != before.draft_path:
            self.apply_speculation()
        self.show_message(f"Benchmark preset applied. {summary_line(preset)}")

    # -- presets (model bar, Chat → Presets…) ---------------------------------------------------------
    def _refresh_presets(self) -> None:
        self.model_bar.set_presets(self.presets.names(), str(self.settings.get("preset", "") or ""))

    def current_preset(self, name: str) -> Preset:
        """A preset of what is set now: this chat's system prompt, the sampling and speculation settings."""
        data = self.panel.values().to_dict()
        return Preset(name, self.chat.system_prompt(), {k: data[k] for k in PanelValues.PRESET_KEYS})

    def apply_preset_named(self, name: str) -> bool:
        """Apply a preset: the chat's system prompt, then the settings (speculation switched if it differs)."""
        if not name:
            self.settings.set("preset", "")
            return True
        preset = self.presets.get(name)
        if preset is None:
            self.show_message(f"no preset named {name}", error=True)
            self._refresh_presets()
            return False
        before = self.panel.values()
        chosen = {k: v for k, v in preset.values.items() if k in PanelValues.PRESET_KEYS}
        merged = before.to_dict()
        merged.update(chosen)
        self.panel.set_values(PanelValues.from_dict(merged))
        # a preset that switches the draft source brings in that pair's remembered settings (_panel_changed);
        # the preset's own values win over them, and are remembered for the pair from now on
        shown = self.panel.values().to_dict()
        if any(shown.get(k) != v for k, v in chosen.items()):
            shown.update(chosen)
            self.panel.set_values(PanelValues.from_dict(shown))
        self._save_model_settings()
        self.chat.set_system_prompt(preset.system_prompt)
        self.settings.set("preset", preset.name)
        self._refresh_presets()
        after = self.panel.values()
        if after.draft_source != before.draft_source and self.target_info is not None:
            self.apply_speculation()
        self.statusBar().showMessage(f"Preset {preset.name} applied", 4000)
        return True

    def open_presets(self) -> PresetsDialog:
        dialog = PresetsDialog(self.presets, self.current_preset, self)
        dialog.presetsChanged.connect(self._refresh_presets)
        dialog.applyRequested.connect(self.apply_preset_named)
        dialog.show()
        return dialog

    # -- messages -------------------------------------------------------------------------------------
    def show_message(self, text: str, error: bool = False) -> None:
        """Errors go to the status bar and the chat's notice line: readable, never a traceback."""
        self.statusBar().showMessage(("⚠ " if error else "") + text, 10000)
        self.last_message = text

    def _confirm_dialog(self, title: str, text: str) -> bool:
        return QMessageBox.question(self, title, text) == QMessageBox.StandardButton.Yes

    # -- layout persistence & shutdown -------------------------------------------------------------------
    def _restore_layout(self) -> None:
        raw = self.settings.get("window_layout", None)
        if not isinstance(raw, dict):
            return  # a first run: the sidebar is shown where the window has room for it (_fit_panel)
        try:
            if raw.get("geometry"):
                self.restoreGeometry(QByteArray(base64.b64decode(raw["geometry"])))
            if raw.get("splitter"):
                self.splitter.restoreState(QByteArray(base64.b64decode(raw["splitter"])))
            if raw.get("chat_splitter"):
                self.chat.splitter.restoreState(QByteArray(base64.b64decode(raw["chat_splitter"])))
            self.panel_action.setChecked(bool(raw.get("panel_visible", True)))
            self._panel_even_narrow = self._panel_choice and bool(raw.get("panel_even_narrow", False))
            self.chats_action.setChecked(bool(raw.get("chats_visible", True)))
            if raw.get("page") in self._page_keys:
                self.show_page(str(raw["page"]))
        except (ValueError, TypeError):
            pass

    def _save_layout(self) -> None:
        self.settings.set("window_layout", {
            "geometry": base64.b64encode(bytes(self.saveGeometry())).decode(),
            "splitter": base64.b64encode(bytes(self.splitter.saveState())).decode(),
            "chat_splitter": base64.b64encode(bytes(self.chat.splitter.saveState())).decode(),
            "panel_visible": self._panel_choice,
            "panel_even_narrow": self._panel_even_narrow,
            "chats_visible": self.chats_action.isChecked(),
            "page": self.current_page(),
        })

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self._save_model_settings()
        self._save_layout()
        if self.chat.is_generating():
            # stop the reply and let its "finished" event save it as stopped (a few rounds at most)
            self.bridge.stop()
            deadline = time.monotonic() + 5.0
            while self.chat.is_generating() and time.monotonic() < deadline:
                QApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        self.chat.save_pending()
        self.downloads.shutdown(timeout=5.0)  # partial files stay: the downloads resume at the next start
        self.bridge.shutdown()
        super().closeEvent(event)

