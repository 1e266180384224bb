"""The main window: model browser (left), chat (centre), advanced settings (right), resource monitor.

It wires widgets to the worker bridge and the stores; it computes nothing heavy itself.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QByteArray, QEventLoop, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
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
    QTabWidget,
    QWidget,
)

from app.engine import sources
from app.engine.advisor import advise
from app.engine.gguf_info import GGUFError, ModelInfo, inspect_gguf
from app.engine.llama_backend import backend_info, default_threads
from app.engine.memory import ModelLoad, estimate_load
from app.engine.session import ModelSettings
from app.hardware import monitor
from app.library.credentials import TokenStore
from app.library.local import LocalLibrary, LocalModel
from app.store.chats import ChatStore
from app.store.db import default_data_dir, default_history_dir
from app.store.settings import HISTORY_KEY, SettingsStore, model_key
from app.ui.benchmark_dialog import BenchmarkDialog, BenchTarget, apply_preset, summary_line
from app.ui.bridge import EngineBridge
from app.ui.chat_view import ChatView
from app.ui.discover_view import DiscoverView
from app.ui.download_bridge import DownloadBridge
from app.ui.model_browser import ModelBrowser
from app.ui.onboarding import OnboardingPage
from app.ui.resource_monitor import ResourceMonitor
from app.ui.server_page import ServerPage
from app.ui.settings_dialog import SettingsDialog
from app.ui.settings_panel import DraftChoice, PanelValues, SettingsPanel
from app.ui.theme import apply_theme

__all__ = ["MainWindow"]

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
        self.resize(1400, 860)
        self.chats = chats
        self.settings = settings
        self.library = library
        self.extra_folders = list(extra_folders or [])
        self.bridge = EngineBridge(self, history_folder=default_history_dir(),
                                   history_enabled=bool(self.settings.get("remember_past_chats")))
        self.target: LocalModel | None = None
        self.target_info: ModelInfo | None = None
        self.speculation = "off"
        self._wanted_draft = ""
        self._last_pair_keys: tuple[str, str] | None = None
        self.has_gpu_offload = bool(backend_info().get("gpu_offload"))
        # dialogs that tests replace: (title, text) -> bool
        self.confirm: Callable[[str, str], bool] = self._confirm_dialog

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
        self.left_tabs = QTabWidget()
        self.left_tabs.addTab(self.browser, "Library")
        self.left_tabs.addTab(self.discover, "Discover")
        self.panel = SettingsPanel()
        self.chat = ChatView(chats, self.bridge, self.panel.request_settings)
        self.onboarding = OnboardingPage()
        self.centre = QStackedWidget()
        self.centre.addWidget(self.chat)
        self.centre.addWidget(self.onboarding)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.left_tabs)
        self.splitter.addWidget(self.centre)
        self.splitter.addWidget(self.panel)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 4)
        self.splitter.setStretchFactor(2, 2)
        self.setCentralWidget(self.splitter)
        self.splitter.setSizes([520, 600, 380])

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
        self._connect()
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(400)
        self._save_timer.timeout.connect(self._save_model_settings)

        self.chat.set_model_ready(False)
        self.chat.set_highlight_drafts(bool(self.settings.get("highlight_draft_tokens")))
        self.highlight_action.setChecked(bool(self.settings.get("highlight_draft_tokens")))
        self._restore_layout()
        try:  # Tandem's own models folder (downloads land there) exists from the first launch on
            self.library_default_folder().mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self.show_message(f"cannot create the models folder: {e}", error=True)
        self.browser.set_folders(self.model_folders())
        self._update_centre()
        self._add_server_page()

    def _add_server_page(self) -> None:
        """The Server page (the local OpenAI-compatible server on this window's engine service)."""
        self.server_page = ServerPage(self.bridge, self.settings, self.model_folders)
        self.left_tabs.addTab(self.server_page, "Server")

    # -- setup ------------------------------------------------------------------------------------------
    def _build_actions(self) -> None:
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        settings_action = QAction("&Settings…", self)
        settings_action.setShortcut(QKeySequence.StandardKey.Preferences)
        settings_action.triggered.connect(self.open_settings)
        file_menu.addAction(settings_action)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        view = menu.addMenu("&View")
        self.panel_action = QAction("Advanced settings panel", self, checkable=True, checked=True)
        self.panel_action.setShortcut("Ctrl+Shift+A")
        self.panel_action.toggled.connect(self.panel.setVisible)
        view.addAction(self.panel_action)
        self.browser_action = QAction("Model browser", self, checkable=True, checked=True)
        self.browser_action.toggled.connect(self.left_tabs.setVisible)
        view.addAction(self.browser_action)
        self.highlight_action = QAction("Visualize accepted draft tokens", self, checkable=True)
        self.highlight_action.toggled.connect(self._toggle_highlight)
        view.addAction(self.highlight_action)
        tools = menu.addMenu("&Tools")
        self.benchmark_action = QAction("&Benchmark…", self, enabled=False)
        self.benchmark_action.setToolTip("Measure speculation for the loaded model on this machine; auto-tune it")
        self.benchmark_action.triggered.connect(self.open_benchmark)
        tools.addAction(self.benchmark_action)
        self.benchmark_dialog: BenchmarkDialog | None = None

    def _connect(self) -> None:
        ev = self.bridge.events
        ev.loadProgress.connect(self._on_load_progress)
        ev.loaded.connect(self._on_loaded)
        ev.loadFailed.connect(self._on_load_failed)
        ev.speculationChanged.connect(self._on_speculation)
        # worker signals go to bound methods of GUI-thread objects only: a plain lambda would run in the
        # worker thread (PySide connects receiver-less callables directly)
        ev.liveStats.connect(self._on_live_stats)
        ev.error.connect(self._on_engine_error)
        for event in (ev.loaded, ev.loadFailed, ev.unloaded):
            event.connect(self._update_benchmark_action)
        self.load_cancel.clicked.connect(self.bridge.cancel_load)
        self.browser.loadRequested.connect(self.load_model)
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
        self.chat.generationStarted.connect(lambda: self.monitor.show_live(0.0, 0, 0))
        self.chat.generationFinished.connect(self.monitor.show_stats)
        self.chat.statusMessage.connect(lambda m: self.statusBar().showMessage(m, 6000))
        self.chat.highlightDraftsChanged.connect(self.highlight_action.setChecked)
        self.onboarding.demoModelReady.connect(self._demo_ready)
        self.onboarding.folderChosen.connect(self._folder_chosen)

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
        self._update_centre()

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

    def load_model(self, model: LocalModel) -> None:
        """Load `model` as the target with the panel's (or its remembered) settings."""
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
        estimate = estimate_load([ModelLoad(info, values.gpu_layers, values.n_ctx)])
        res = monitor.resources()
        fits, message = estimate.fits(available_ram=res.available_ram, free_vram=res.free_vram, gpu_count=res.gpu_count)
        if not fits and not self.confirm("Not enough memory", f"{info.display_name}: {message}.\n\nLoad anyway?"):
            return
        self.target = model
        self.target_info = None
        self.chat.set_model_ready(False)
        self.load_label.setText(f"Loading {model.name}…")
        self.load_progress.setValue(0)
        self.load_box.show()
        self.bridge.load_target(ModelSettings(Path(model.path), n_gpu_layers=values.gpu_layers, n_ctx=values.n_ctx,
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
            if self.panel.values().draft_source != "off":
                self.apply_speculation()
            self._update_centre()
        else:
            self.statusBar().showMessage(f"Draft ready: {info.display_name}", 5000)
        self._update_estimate()

    def _on_load_failed(self, which: str, message: str) -> None:
        self.load_box.hide()
        if which == "target":
            self.target = None
            self.target_info = None
            self.panel.set_target(None)
            self.chat.set_model_ready(False)
        self.show_message(message, error=True)

    def _refresh_draft_choices(self) -> None:
        if self.target is None:
            self.panel.set_draft_choices([])
            return
        try:
            pairs = self.library.compatible_drafts(self.target)
        except Exception as e:  # a broken library entry must not break loading
            self.show_message(f"could not check drafts: {e}", error=True)
            pairs = []
        self.panel.set_draft_choices([DraftChoice(Path(m.path), m.file_name, verdict, m.block_count or 0)
                                      for m, verdict in pairs])
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

    # -- settings ---------------------------------------------------------------------------------------
    def _panel_changed(self) -> None:
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
        """The (non-modal) Benchmark dialog for the loaded target and its speculation source."""
        if self.benchmark_dialog is None:
            self.benchmark_dialog = BenchmarkDialog(self.bridge, self.settings, self._benchmark_target, self)
            self.benchmark_dialog.runningChanged.connect(self._on_benchmark_running)
            self.benchmark_dialog.presetApplied.connect(self._apply_benchmark_preset)
        self.benchmark_dialog.show()
        self.benchmark_dialog.raise_()
        self.benchmark_dialog.activateWindow()
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
            return
        try:
            if raw.get("geometry"):
                self.restoreGeometry(QByteArray(base64.b64decode(raw["geometry"])))
            if raw.get("splitter"):
                self.splitter.restoreState(QByteArray(base64.b64decode(raw["splitter"])))
            self.panel_action.setChecked(bool(raw.get("panel_visible", True)))
            self.browser_action.setChecked(bool(raw.get("browser_visible", True)))
        except (ValueError, TypeError):
            pass

    def _save_layout(self) -> None:
        self.settings.set("window_layout", {
            "geometry": base64.b64encode(bytes(self.saveGeometry())).decode(),
            "splitter": base64.b64encode(bytes(self.splitter.saveState())).decode(),
            "panel_visible": self.panel_action.isChecked(),
            "browser_visible": self.browser_action.isChecked(),
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

