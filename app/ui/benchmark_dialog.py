"""The Benchmark dialog (Tools → Benchmark…): measure speculation for the loaded target on this machine.

It runs `app.engine.bench` — the same code as `tandem bench` — on the engine's worker thread with the loaded
models (`EngineBridge.run_benchmark`), shows progress, the results per configuration, where an output
differed from the plain run, and the plot of decode tok/s vs draft tokens. An auto-tune (quick or thorough)
ends with the fastest configuration for this target+draft pair — "off" when speculation does not help — which
"Apply and remember" stores as the pair's preset (SettingsStore) and hands to the main window to apply.

Non-modal; closing it cancels a running benchmark. While one runs the engine takes no chat replies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QFont, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.engine import bench, sources
from app.engine.session import ModelSettings
from app.store.settings import HISTORY_KEY, SettingsStore, model_key
from app.ui.bridge import EngineBridge
from app.ui.settings_panel import PanelValues

__all__ = ["BenchTarget", "BenchmarkDialog", "parse_draft_max", "summary_line", "apply_preset", "MODES", "COLUMNS"]

MODES = [(mode, f"{mode.capitalize()} auto-tune") for mode in bench.AUTOTUNE_MODES] + [("custom", "Custom sweep")]


def _lengths(values: tuple[int, ...], sep: str = " / ") -> str:
    return sep.join(map(str, values))


MODE_HINTS = {
    "quick": f"One prompt per category, {bench.QUICK_REPEATS} repeat{'s' * (bench.QUICK_REPEATS != 1)}, at most "
             f"{bench.QUICK_MAX_TOKENS} tokens each, draft {_lengths(bench.QUICK_DRAFT_MAX)} tokens and adaptive: "
             "under a minute on a small model.",
    "thorough": f"Every prompt, at least {bench.THOROUGH_MIN_REPEATS} repeats, draft "
                f"{_lengths(bench.DEFAULT_DRAFT_MAX)} tokens and adaptive: several minutes.",
    "custom": "Your draft lengths, repeats and max tokens; no pick at the end.",
}  # fmt: skip
COLUMNS = ["Configuration", "Decode tok/s", "Prompt tok/s", "TTFT", "Acceptance", "Mean accepted",
           "Speed-up vs off", "Identical"]
ERROR_STYLE = "color: #c0392b;"


@dataclass
class BenchTarget:
    """What the main window has loaded, as the dialog needs it."""

    target_path: Path
    speculation: str  # the engine's source now: "off" | "draft-model" | "prompt-lookup"
    draft: ModelSettings | None = None  # the draft chosen in the settings panel (the loaded one for draft-model)


def parse_draft_max(text: str) -> tuple[int, ...]:
    """ "1,2,3,5,8" → (1, 2, 3, 5, 8); BenchError with a readable reason for anything else."""
    parts = [p.strip() for p in text.replace(";", ",").replace(" ", ",").split(",")]
    parts = [p for p in parts if p]
    if not parts:
        raise bench.BenchError("enter the draft lengths to try, e.g. 1,2,3,5,8")
    values = []
    for p in parts:
        try:
            values.append(int(p))
        except ValueError:
            raise bench.BenchError(f"{p!r} is not a whole number: use whole numbers separated by commas") from None
    bench.sweep_configs(values)  # each length within the sweep's range, or its reason
    return tuple(sorted(set(values)))


def summary_line(preset: dict) -> str:
    """The auto-tune's verdict in one line."""
    if preset.get("config") == "off" or preset.get("speculation") == "off":
        best = preset.get("best_config")
        if best and best != "off":
            return ("Speculation does not help on this machine for this pair: keep it off "
                    f"(best tried: {best}, {float(preset.get('best_decode_tps') or 0):.1f} tok/s vs "
                    f"{float(preset.get('off_decode_tps') or 0):.1f} off).")
        return "Speculation does not help on this machine for this pair: keep it off."
    n = int(preset.get("draft_max") or 0)
    speed = f"{float(preset.get('speedup') or 0):.2f}× vs off"
    rates = f"{float(preset.get('decode_tps') or 0):.1f} tok/s vs {float(preset.get('off_decode_tps') or 0):.1f} off"
    if preset.get("adaptive"):
        return f"Fastest here: adaptive draft length (up to {n} tokens), {speed} ({rates})."
    return f"Fastest here: draft {n} token{'s' if n != 1 else ''}, {speed} ({rates})."


def apply_preset(values: PanelValues, preset: dict) -> PanelValues:
    """The settings panel's values with an auto-tune preset applied (speculation source, draft max, adaptive)."""
    v = replace(values)
    source = str(preset.get("speculation") or "off")
    v.draft_source = source
    if source == sources.DRAFT_MODEL and preset.get("draft"):
        v.draft_path = str(preset["draft"])
    if source != "off" and preset.get("draft_max"):
        v.draft_max = int(preset["draft_max"])  # type: ignore[arg-type]
        v.draft_min = min(v.draft_min, v.draft_max)
        v.adaptive = bool(preset.get("adaptive"))
    return v


def _offered_pick(report: bench.BenchReport | None) -> dict | None:
    """The auto-tune's pick the dialog offers to apply: none from a cancelled (partial) sweep."""
    return report.autotune if report is not None and not report.cancelled else None


def _eta(seconds: float) -> str:
    s = max(int(round(seconds)), 0)
    return f"{s // 60}:{s % 60:02d}"


class BenchmarkDialog(QDialog):
    """Runs benchmarks through the bridge and shows their results. `target()` says what is loaded (or None)."""

    runningChanged = Signal(bool)
    presetApplied = Signal(object)  # the stored auto-tune preset (dict): the main window applies it

    def __init__(
        self,
        bridge: EngineBridge,
        settings: SettingsStore,
        target: Callable[[], BenchTarget | None],
        parent: QWidget | None = None,
        *,
        embedded: bool = False,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Benchmark")
        self.setModal(False)
        self._embedded = embedded  # a page of the main window, not a window of its own
        if embedded:
            self.setWindowFlags(Qt.WindowType.Widget)
        else:
            self.resize(1000, 860)
        self.bridge = bridge
        self.settings = settings
        self.target = target
        self.report: bench.BenchReport | None = None
        self.canvas = None  # the plot (matplotlib FigureCanvasQTAgg), once there are results
        self._running = False
        self._cancelling = False
        self._runs_t0: float | None = None
        self._runs_d0 = 0
        self._last_progress: bench.BenchProgress | None = None
        # file dialogs that tests replace: () -> path ("" = cancelled)
        self.ask_prompts_path: Callable[[], str] = self._ask_prompts_path
        self.ask_save_path: Callable[[], str] = self._ask_save_path

        # -- what is measured ---------------------------------------------------------------------------
        what = QGroupBox("What")
        wform = QFormLayout(what)
        self.target_label = QLabel()
        self.target_label.setWordWrap(True)
        wform.addRow("Target", self.target_label)
        self.source_label = QLabel()
        self.source_label.setWordWrap(True)
        self.source = QComboBox()
        src_box = QWidget()
        sl = QVBoxLayout(src_box)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(self.source_label)
        sl.addWidget(self.source)
        wform.addRow("Speculation", src_box)

        # -- how ------------------------------------------------------------------------------------------
        how = QGroupBox("How")
        hform = QFormLayout(how)
        self.mode = QComboBox()
        for key, label in MODES:
            self.mode.addItem(label, key)
        self.mode_hint = QLabel()
        self.mode_hint.setWordWrap(True)
        hform.addRow("Mode", self.mode)
        hform.addRow("", self.mode_hint)
        defaults = bench.BenchOptions(Path())
        self.draft_max = QLineEdit(_lengths(defaults.draft_max, ","))
        self.draft_max.setToolTip("Draft lengths to try, comma-separated (1 to 32 each); \"off\" is always measured")
        self.draft_max_error = QLabel()
        self.draft_max_error.setStyleSheet(ERROR_STYLE)
        self.draft_max_error.setWordWrap(True)
        self.draft_max_error.hide()
        hform.addRow("Draft tokens", self.draft_max)
        hform.addRow("", self.draft_max_error)
        self.adaptive = QCheckBox("Also the adaptive draft length")
        self.adaptive.setChecked(defaults.adaptive)
        hform.addRow("", self.adaptive)
        self.repeats = QSpinBox()
        self.repeats.setRange(1, 100)
        self.repeats.setValue(defaults.repeats)
        self.repeats.setToolTip("Every prompt runs this many times per configuration; the median counts")
        hform.addRow("Repeats", self.repeats)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 65536)
        self.max_tokens.setValue(defaults.max_tokens)
        self.max_tokens.setToolTip(f"Tokens generated per prompt (quick auto-tune: at most {bench.QUICK_MAX_TOKENS})")
        hform.addRow("Max tokens", self.max_tokens)
        self.prompts_path = QLineEdit()
        self.prompts_path.setPlaceholderText("built-in prompts (code, JSON, rewrite, prose, chat)")
        self.prompts_path.setToolTip("A JSONL file: one {\"prompt\": …, \"category\": …, \"id\": …} per line")
        self.prompts_browse = QPushButton("Browse…")
        pbox = QWidget()
        pl = QHBoxLayout(pbox)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addWidget(self.prompts_path, 1)
        pl.addWidget(self.prompts_browse)
        self.prompts_error = QLabel()
        self.prompts_error.setStyleSheet(ERROR_STYLE)
        self.prompts_error.setWordWrap(True)
        self.prompts_error.hide()
        wform.addRow("Prompts", pbox)
        wform.addRow("", self.prompts_error)
        self.quiet_note = QLabel("Results are only meaningful on a quiet machine: close other busy programs "
                                 "first. Every run decodes greedily from empty caches.")
        self.quiet_note.setWordWrap(True)
        wform.addRow(self.quiet_note)

        # -- run --------------------------------------------------------------------------------------------
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.save_button = QPushButton("Save report…")
        self.save_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("Choose a mode and press Start.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.save_button)

        # -- results ----------------------------------------------------------------------------------------
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        bold = QFont(self.summary.font())
        bold.setBold(True)
        self.summary.setFont(bold)
        self.apply_button = QPushButton("Apply and remember")
        self.apply_button.setToolTip("Store this as the preset of this target+draft pair and use it now")
        self.applied_label = QLabel()
        self.applied_label.setWordWrap(True)
        pick = QHBoxLayout()
        pick.addWidget(self.summary, 1)
        pick.addWidget(self.apply_button)
        self.pick_box = QWidget()
        pv = QVBoxLayout(self.pick_box)
        pv.setContentsMargins(0, 0, 0, 0)
        pv.addLayout(pick)
        pv.addWidget(self.applied_label)
        self.pick_box.hide()

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.plot_area = QScrollArea()
        self.plot_area.setWidgetResizable(True)
        self.plot_placeholder = QLabel("The plot appears when the benchmark has results.")
        self.plot_placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.plot_area.setWidget(self.plot_placeholder)
        self.divergence = QPlainTextEdit()
        self.divergence.setReadOnly(True)
        self.divergence.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.table, "Results")
        self.tabs.addTab(self.plot_area, "Plot")
        self.tabs.addTab(self.divergence, "Differences")
        self.tabs.setTabEnabled(2, False)

        top = QHBoxLayout()
        top.addWidget(what, 1)
        top.addWidget(how, 1)
        col = QVBoxLayout(self)
        col.addLayout(top)
        col.addLayout(buttons)
        col.addWidget(self.status)
        col.addWidget(self.pick_box)
        col.addWidget(self.tabs, 1)

        # -- wiring (worker events go to bound methods of this GUI-thread object only) ------------------------
        ev = bridge.events
        ev.benchProgress.connect(self._on_progress)
        ev.benchFinished.connect(self._on_finished)
        ev.benchFailed.connect(self._on_failed)
        ev.loaded.connect(self._on_engine_changed)
        ev.unloaded.connect(self._on_engine_changed)
        ev.speculationChanged.connect(self._on_engine_changed)
        self.mode.currentIndexChanged.connect(self._update_controls)
        self.draft_max.textChanged.connect(self._check_draft_max)
        self.prompts_path.editingFinished.connect(self._check_prompts)
        self.prompts_browse.clicked.connect(self._browse_prompts)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(self._save_clicked)
        self.apply_button.clicked.connect(self.apply_pick)
        self.refresh_target()
        self._update_controls()

    # -- state ----------------------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self._running

    def set_mode(self, mode: str) -> None:
        self.mode.setCurrentIndex(max(self.mode.findData(mode), 0))

    def refresh_target(self) -> None:
        """Show what would be benchmarked now (the loaded target and its speculation source)."""
        t = self.target()
        self.source.clear()
        if t is None:
            self.target_label.setText("No model loaded: load a target model first.")
            self.source_label.setText("")
            self.source.hide()
            self._update_controls()
            return
        self.target_label.setText(Path(t.target_path).name)
        if t.speculation == sources.DRAFT_MODEL:
            name = Path(t.draft.path).name if t.draft is not None else "the loaded draft model"
            self.source_label.setText(f"draft model {name}")
            self.source.hide()
        elif t.speculation == sources.HISTORY:
            self.source_label.setText(sources.LABELS[sources.HISTORY])
            self.source.hide()
        else:
            self.source_label.setText("Off now. Measure it with:")
            self.source.addItem(sources.LABELS[sources.HISTORY], sources.HISTORY)
            if t.draft is not None and Path(t.draft.path).exists():
                self.source.addItem(f"Draft model {Path(t.draft.path).name} (loaded for the benchmark)", sources.DRAFT_MODEL)
            self.source.show()
        self._update_controls()

    # -- input checks ---------------------------------------------------------------------------------------
    def _check_draft_max(self, *_args: object) -> tuple[int, ...] | None:
        try:
            values = parse_draft_max(self.draft_max.text())
        except bench.BenchError as e:
            self.draft_max_error.setText(str(e))
            self.draft_max_error.show()
            return None
        self.draft_max_error.hide()
        self.draft_max_error.clear()
        return values

    def _check_prompts(self) -> tuple[bool, list[bench.BenchPrompt] | None]:
        """(ok, prompts): None = the built-in set; a bad file's reason is shown under the field."""
        path = self.prompts_path.text().strip()
        if not path:
            self.prompts_error.hide()
            self.prompts_error.clear()
            return True, None
        try:
            prompts = bench.load_prompts(Path(path).expanduser())
        except bench.BenchError as e:
            self.prompts_error.setText(str(e))
            self.prompts_error.show()
            return False, None
        self.prompts_error.hide()
        self.prompts_error.clear()
        return True, prompts

    def _browse_prompts(self) -> None:
        path = self.ask_prompts_path()
        if path:
            self.prompts_path.setText(path)
            self._check_prompts()

    def _ask_prompts_path(self) -> str:
        path, _ = QFileDialog.getOpenFileName(self, "Benchmark prompts", "", "Prompt files (*.jsonl *.json);;All files (*)")
        return path

    # -- running --------------------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start the benchmark the controls describe; False (with the reason shown) if it cannot start."""
        if self._running:
            return False
        t = self.target()
        if t is None:
            self._set_status("Load a target model first.", error=True)
            return False
        mode = self.mode.currentData()
        autotune = None if mode == "custom" else mode
        draft_max = self._check_draft_max() if mode == "custom" else bench.DEFAULT_DRAFT_MAX
        ok, prompts = self._check_prompts()
        if draft_max is None or not ok:
            self._set_status("Fix the marked input first.", error=True)
            return False
        source = draft = None
        if t.speculation == "off":
            source = self.source.currentData()
            if source is None:
                self._set_status("Choose what to benchmark: the chat history or a draft model.", error=True)
                return False
            draft = t.draft if source == sources.DRAFT_MODEL else None
        options = bench.BenchOptions(
            model=Path(t.target_path), draft_max=draft_max,
            adaptive=self.adaptive.isChecked() if mode == "custom" else True, prompts=prompts,
            repeats=self.repeats.value(), max_tokens=self.max_tokens.value(),
        )  # fmt: skip
        try:
            options.validate()
        except bench.BenchError as e:
            self._set_status(str(e), error=True)
            return False
        if not self.bridge.run_benchmark(options, autotune, source=source, draft=draft):
            self._set_status(f"{self.bridge.busy_reason or 'The engine is busy.'} Start the benchmark after that.",
                             error=True)
            return False
        self._clear_results()
        self._runs_t0 = None
        self._last_progress = None
        self.progress.setRange(0, 0)  # busy until the first progress says how many runs
        what = dict(MODES)[mode] if autotune else "Benchmark"
        self._set_status(f"{what}: starting…")
        self._set_running(True)
        return True

    def cancel(self) -> None:
        """Stop the running benchmark within one decoding round; the partial results are shown."""
        if not self._running:
            return
        self._cancelling = True
        self.bridge.cancel_benchmark()
        self._update_controls()
        self._set_status("Cancelling…")

    def _set_running(self, running: bool) -> None:
        self._running = running
        self._cancelling = False
        self._update_controls()
        self.runningChanged.emit(running)

    def _update_controls(self, *_args: object) -> None:
        mode = self.mode.currentData()
        idle = not self._running
        has_target = self.target() is not None
        self.mode_hint.setText(MODE_HINTS.get(mode, ""))
        for w in (self.mode, self.source, self.prompts_path, self.prompts_browse, self.max_tokens):
            w.setEnabled(idle)
        self.draft_max.setEnabled(idle and mode == "custom")
        if mode == "custom":
            self._check_draft_max()
        else:  # the field is not used: no complaint about it
            self.draft_max_error.hide()
        self.adaptive.setEnabled(idle and mode == "custom")
        self.repeats.setEnabled(idle and mode != "quick")
        self.start_button.setEnabled(idle and has_target)
        self.start_button.setToolTip("" if has_target else "Load a target model first")
        self.cancel_button.setEnabled(self._running and not self._cancelling)
        self.save_button.setEnabled(idle and self.report is not None and bool(self.report.runs))
        self.apply_button.setEnabled(idle and bool(_offered_pick(self.report)) and not self.applied_label.text())

    # -- events from the worker -----------------------------------------------------------------------------
    def _on_progress(self, p: bench.BenchProgress) -> None:
        if not self._running:
            return
        self._last_progress = p
        if p.total:
            self.progress.setRange(0, p.total)
            self.progress.setValue(p.done)
        if self._cancelling:  # keep saying so
            return
        if p.phase == "run":
            if self._runs_t0 is None:
                self._runs_t0, self._runs_d0 = time.monotonic(), p.done
                eta = "estimating…"
            else:
                elapsed, n = time.monotonic() - self._runs_t0, p.done - self._runs_d0
                eta = _eta(elapsed / n * (p.total - p.done)) if n > 0 else "estimating…"
            tps = f" · last {p.last_tps:.1f} tok/s" if p.last_tps is not None else ""
            self._set_status(f"Measuring · run {p.done}/{p.total} · {p.config} · prompt {p.prompt_id} · "
                             f"repeat {p.repeat + 1}{tps} · ETA {eta}")
        elif p.phase == "warmup":
            self._set_status(f"Warming up ({p.total} runs to go)…")
        elif p.phase == "loading":
            self._set_status(p.message or "Loading…")

    def _on_finished(self, report: bench.BenchReport) -> None:
        if not self._running:
            return
        self.report = report
        self._set_running(False)
        self._show_report(report)
        total = self._last_progress.total if self._last_progress else len(report.runs)
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(len(report.runs) if report.cancelled else max(total, 1))
        if report.cancelled:
            if report.runs:
                self._set_status(f"Benchmark cancelled: partial results from {len(report.runs)} of {total} runs.")
            else:
                self._set_status("Benchmark cancelled before any run finished: no results.")
        else:
            secs = report.meta.get("seconds")
            took = f" in {float(secs):.0f} s" if isinstance(secs, (int, float)) else ""
            self._set_status(f"Benchmark done: {len(report.runs)} runs{took}. "
                             "Results are only meaningful on a quiet machine.")
        self._update_controls()

    def _on_failed(self, message: str) -> None:
        if not self._running:
            return
        self._set_running(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self._set_status(f"Benchmark failed: {message}", error=True)

    def _on_engine_changed(self, *_args: object) -> None:
        if not self._running:
            self.refresh_target()

    # -- results --------------------------------------------------------------------------------------------
    def _clear_results(self) -> None:
        self.report = None
        self.table.setRowCount(0)
        self.divergence.clear()
        self.tabs.setTabEnabled(2, False)
        self.tabs.setTabText(2, "Differences")
        self._set_plot(None)
        self.summary.clear()
        self.applied_label.clear()
        self.pick_box.hide()

    def _show_report(self, report: bench.BenchReport) -> None:
        offered = _offered_pick(report)
        pick = offered.get("config") if offered else None
        rows = [s for s in report.summaries if s.category == bench.ALL]
        self.table.setRowCount(len(rows))
        for i, s in enumerate(rows):
            off = s.config == "off"
            half = (s.decode_tps_max - s.decode_tps_min) / 2
            cells = [
                s.config + ("  ← pick" if s.config == pick else ""),
                f"{s.decode_tps:.1f} ± {half:.1f}",
                f"{s.prompt_tps:.0f}",
                f"{s.ttft_ms:.0f} ms",
                "—" if off else f"{s.acceptance_rate:.0%}",
                "—" if off else f"{s.mean_accepted:.2f}",
                f"{s.speedup:.2f}×",
                "reference" if off else ("yes" if s.identical else f"NO ({s.n_diverged} run{'s' * (s.n_diverged != 1)})"),
            ]
            tips = [
                f"{s.n_prompts} prompts × {s.repeats} repeats",
                f"median over the repeats; slowest–fastest {s.decode_tps_min:.1f}–{s.decode_tps_max:.1f} tok/s",
                "prompt processing: median over the runs",
                "time to first token: median over the runs",
                "draft tokens the target accepted / drafted",
                "accepted draft tokens per round",
                "decode tok/s / the decode tok/s with speculation off",
                "every output token-identical to the plain run (greedy)",
            ]
            for j, (text, tip) in enumerate(zip(cells, tips, strict=True)):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                if j:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if s.config == pick:
                    f = item.font()
                    f.setBold(True)
                    item.setFont(f)
                self.table.setItem(i, j, item)
        # where an output differed from the plain run
        if report.divergences:
            lines = []
            for d in report.divergences[:50]:
                lines.append(f"{d.config} on prompt {d.prompt_id} (repeat {d.repeat + 1}): first difference at "
                             f"generated token {d.position}")
                if d.context_text:
                    lines.append(f"    before:      …{d.context_text!r}")
                lines.append(f"    plain run:   {d.plain_text!r}")
                lines.append(f"    {d.config + ':':<12} {d.other_text!r}")
                lines.append("")
            if len(report.divergences) > 50:
                lines.append(f"… and {len(report.divergences) - 50} more")
            self.divergence.setPlainText("\n".join(lines))
            self.tabs.setTabEnabled(2, True)
            self.tabs.setTabText(2, f"Differences ({len(report.divergences)})")
        self._set_plot(report if report.runs else None)
        # the auto-tune's pick
        if offered:
            self.summary.setText(summary_line(offered))
            self.summary.setStyleSheet("")
            self.apply_button.show()
            self.pick_box.show()
        elif report.cancelled and (report.autotune or report.autotune_error):
            self.summary.setText("Cancelled: no pick from a partial sweep. Run it again to completion.")
            self.apply_button.hide()
            self.pick_box.show()
        elif report.autotune_error:
            self.summary.setText(f"No pick: {report.autotune_error}")
            self.apply_button.hide()
            self.pick_box.show()

    def _set_plot(self, report: bench.BenchReport | None) -> None:
        old = self.plot_area.takeWidget()
        if old is not None and old is not self.plot_placeholder:
            old.deleteLater()
        self.canvas = None
        if report is None:
            self.plot_placeholder = QLabel("The plot appears when the benchmark has results.")
            self.plot_placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.plot_area.setWidget(self.plot_placeholder)
            return
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg

        fig = report.figure()
        fig.set_layout_engine("tight")  # lay out again at whatever size the canvas gets
        self.canvas = FigureCanvasQTAgg(fig)
        w, h = fig.get_size_inches() * fig.dpi
        self.canvas.setMinimumSize(int(w * 0.7), int(h * 0.7))  # smaller gets unreadable: scroll instead
        self.plot_area.setWidget(self.canvas)

    # -- auto-tune pick ------------------------------------------------------------------------------------
    def pair_keys(self) -> tuple[str, str] | None:
        """The SettingsStore keys of the measured target+draft pair (None without a report)."""
        if self.report is None:
            return None
        meta = self.report.meta
        target = model_key(str(meta["target"]))
        if meta.get("speculation") == sources.DRAFT_MODEL and meta.get("draft"):
            return target, model_key(str(meta["draft"]))
        return target, HISTORY_KEY

    def apply_pick(self) -> bool:
        """Store the auto-tune's pick as the pair's preset and ask the main window to apply it."""
        offered = _offered_pick(self.report)
        if offered is None or self._running:
            return False
        preset = dict(offered)
        meta = self.report.meta
        preset["measured_speculation"] = meta.get("speculation")
        preset["measured_draft"] = meta.get("draft")
        try:
            keys = self.pair_keys()
            assert keys is not None
            changes: dict[str, object] = {"benchmark": preset}
            if preset.get("speculation") != "off" and preset.get("draft_max"):
                changes.update(draft_max=int(preset["draft_max"]), adaptive=bool(preset.get("adaptive")))  # type: ignore[arg-type]
            self.settings.update_pair_settings(*keys, changes)
        except (OSError, ValueError) as e:
            self._set_status(f"Could not store the preset: {e}", error=True)
            return False
        self.applied_label.setText("Stored as this pair's preset and applied to the current settings.")
        self._update_controls()
        self.presetApplied.emit(preset)
        return True

    # -- saving ---------------------------------------------------------------------------------------------
    def _save_clicked(self) -> None:
        path = self.ask_save_path()
        if path:
            self.save_report(path)

    def _ask_save_path(self) -> str:
        path, chosen = QFileDialog.getSaveFileName(
            self, "Save benchmark report", "tandem-bench.json",
            "JSON report (*.json);;CSV table (*.csv);;PNG plot (*.png)",
        )  # fmt: skip
        if path and not Path(path).suffix:
            path += {"CSV": ".csv", "PNG": ".png"}.get(chosen[:3], ".json")
        return path

    def save_report(self, path: str | Path) -> bool:
        """Write the report by the file's extension: .json (everything), .csv (the table) or .png (the plot)."""
        if self.report is None or not self.report.runs:
            self._set_status("Nothing to save yet: run a benchmark first.", error=True)
            return False
        p = Path(path)
        writers = {".json": self.report.write_json, ".csv": self.report.write_csv, ".png": self.report.write_plot}
        writer = writers.get(p.suffix.lower())
        if writer is None:
            self._set_status(f"Cannot save as {p.suffix or 'a file without extension'}: use .json, .csv or .png.",
                             error=True)
            return False
        try:
            writer(p)
        except OSError as e:
            self._set_status(f"Could not save {p.name}: {e.strerror or e}", error=True)
            return False
        self._set_status(f"Saved {p}")
        return True

    # -- misc -----------------------------------------------------------------------------------------------
    def _set_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(ERROR_STYLE if error else "")
        self.status.setProperty("error", error)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not self._running:
            self.refresh_target()

    def reject(self) -> None:
        """Closing (Esc, the window's close button) cancels a running benchmark; a page stays shown."""
        self.cancel()
        if not self._embedded:
            super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        self.cancel()
        super().closeEvent(event)
