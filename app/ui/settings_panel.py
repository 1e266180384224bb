"""The advanced settings panel (right side): load settings, speculative decoding, sampling, memory, advice.

It edits a `PanelValues`; it never talks to the engine. The main window turns its signals into bridge
commands. Values are remembered per model and per target+draft pair (SettingsStore), with "reset". Every
default is the engine's (app.engine.defaults): sampling from `SamplingParams()`, the speculation settings
from `spec_defaults(source)` — when the user switches the draft source, its settings start from that
source's defaults (and the main window then applies what is remembered for the new pair).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.engine import sources
from app.engine.advisor import Advice
from app.engine.compat import Verdict
from app.engine.defaults import DEFAULT_SOURCE, MAX_TOKENS, spec_defaults
from app.engine.sampling import SamplingParams
from app.engine.session import DRAFT_SOURCES, ModelSettings
from app.engine.speculative import SpecSettings
from app.ui.memory_bar import MemoryBar

__all__ = ["PanelValues", "SettingsPanel", "DraftChoice"]

_SOURCE_LABELS = sources.LABELS
_LAYERS_ROLE = Qt.ItemDataRole.UserRole + 1

_LOAD = ModelSettings(Path())
_SPEC = spec_defaults(DEFAULT_SOURCE)
_SAMPLING = SamplingParams()


@dataclass
class PanelValues:
    gpu_layers: int = _LOAD.n_gpu_layers  # -1 = all
    n_ctx: int = _LOAD.n_ctx
    threads: int = 0  # 0 = auto
    draft_source: str = DEFAULT_SOURCE
    draft_path: str = ""
    # the speculation settings (SpecSettings' fields): the draft source's defaults
    draft_max: int = _SPEC.draft_max
    draft_min: int = _SPEC.draft_min
    adaptive: bool = _SPEC.adaptive  # choose the draft length each round, at most draft_max
    draft_p_min: float = _SPEC.draft_p_min
    draft_gpu_layers: int = _LOAD.n_gpu_layers
    temperature: float = _SAMPLING.temperature
    top_k: int = _SAMPLING.top_k
    top_p: float = _SAMPLING.top_p
    min_p: float = _SAMPLING.min_p
    repeat_penalty: float = _SAMPLING.repeat_penalty
    seed: int = -1  # -1 = random (SamplingParams' None)
    max_tokens: int = MAX_TOKENS

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p,
                              repeat_penalty=self.repeat_penalty, seed=None if self.seed < 0 else self.seed)

    def spec(self) -> SpecSettings:
        return SpecSettings(draft_max=self.draft_max, draft_min=min(self.draft_min, self.draft_max),
                            draft_p_min=self.draft_p_min, adaptive=self.adaptive)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_source(cls, source: str) -> PanelValues:
        """The defaults with `source` as the draft source, and that source's speculation settings."""
        return cls(draft_source=source, **asdict(spec_defaults(source)))

    @classmethod
    def from_dict(cls, data: dict | None) -> PanelValues:
        """Values from stored settings over the defaults of their draft source; unknown keys and values of the
        wrong type are ignored."""
        data = dict(data or {})
        try:
            data["draft_source"] = sources.normalize_source(data.get("draft_source", sources.OFF))
        except (ValueError, TypeError):
            data.pop("draft_source", None)
        source = data.get("draft_source")
        v = cls.for_source(source) if source in DRAFT_SOURCES else cls()
        for f in fields(cls):
            if f.name in data:
                cur = getattr(v, f.name)
                new = data[f.name]
                if isinstance(cur, float) and isinstance(new, (int, float)) and not isinstance(new, bool):
                    setattr(v, f.name, float(new))
                elif type(new) is type(cur):
                    setattr(v, f.name, new)
        return v

    # the part that belongs to the model alone vs to the target+draft pair
    MODEL_KEYS = ("gpu_layers", "n_ctx", "threads", "temperature", "top_k", "top_p", "min_p", "repeat_penalty",
                  "seed", "max_tokens", "draft_source", "draft_path")
    PAIR_KEYS = ("draft_max", "draft_min", "draft_p_min", "draft_gpu_layers", "adaptive")
    # what a named preset holds besides the system prompt: sampling and speculation
    PRESET_KEYS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed", "max_tokens",
                   "draft_source", "draft_max", "draft_min", "adaptive", "draft_p_min")


@dataclass
class DraftChoice:
    path: Path
    name: str
    verdict: Verdict
    n_layers: int = 0  # the draft's layers: the range of its GPU-layers slider


class _LayerSlider(QWidget):
    """0..n layers (+ 'all'), with the count shown."""

    valueChanged = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.label = QLabel()
        self.label.setMinimumWidth(84)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.label)
        self._n_layers = 0
        self.set_layer_count(0)
        self.slider.valueChanged.connect(self._changed)

    def set_layer_count(self, n_layers: int) -> None:
        value = self.value()
        self._n_layers = max(0, n_layers)
        self.slider.setRange(0, self._n_layers + 1 if self._n_layers else 0)
        self.set_value(value)

    def value(self) -> int:
        v = self.slider.value()
        return -1 if self._n_layers and v > self._n_layers else v

    def set_value(self, v: int) -> None:
        self.slider.setValue(self._n_layers + 1 if v < 0 or v > self._n_layers else v)
        self._update_label()

    def _changed(self, _v: int) -> None:
        self._update_label()
        self.valueChanged.emit(self.value())

    def _update_label(self) -> None:
        if not self._n_layers:
            self.label.setText("no model")
        elif self.value() < 0:
            self.label.setText(f"all ({self._n_layers} + output)")
        else:
            self.label.setText(f"{self.value()} / {self._n_layers} layers")


class SettingsPanel(QScrollArea):
    """Right-hand panel. Emits `changed` whenever a value changes (the main window applies it)."""

    changed = Signal()
    loadRequested = Signal()  # (re)load the target with the load settings
    applyDraftRequested = Signal()  # load/switch the draft / proposer
    resetRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMinimumWidth(300)
        body = QWidget()
        self.setWidget(body)
        col = QVBoxLayout(body)
        self._building = True

        # -- load ---------------------------------------------------------------------------------
        load = QGroupBox("Model")
        form = QFormLayout(load)
        self.model_label = QLabel("No model loaded")
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        self.gpu_layers = _LayerSlider()
        form.addRow("GPU layers", self.gpu_layers)
        self.n_ctx = QSpinBox()
        self.n_ctx.setRange(256, 1_048_576)
        self.n_ctx.setSingleStep(1024)
        self.n_ctx.setSuffix(" tokens")
        form.addRow("Context length", self.n_ctx)
        self.threads = QSpinBox()
        self.threads.setRange(0, max(1, os.cpu_count() or 1) * 2)
        self.threads.setSpecialValueText("auto")
        self.threads.setToolTip("auto = all physical cores but one (the app and the system need one to stay smooth)")
        form.addRow("Threads", self.threads)
        self.load_button = QPushButton("Reload with these settings")
        form.addRow(self.load_button)
        col.addWidget(load)

        # -- speculative decoding -----------------------------------------------------------------
        spec = QGroupBox("Speculative decoding")
        sform = QFormLayout(spec)
        self.source = QComboBox()
        for key in DRAFT_SOURCES:
            self.source.addItem(_SOURCE_LABELS[key], key)
        self._spec_source = DEFAULT_SOURCE  # the draft source whose settings the speculation fields show
        for combo in (self.source,):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(10)
        sform.addRow("Draft source", self.source)
        self.draft_model = QComboBox()
        self._draft_items = QStandardItemModel(self.draft_model)
        self.draft_model.setModel(self._draft_items)
        self.draft_model.setToolTip("Only models with the target's tokenizer can draft for it")
        self.draft_model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.draft_model.setMinimumContentsLength(10)
        sform.addRow("Draft model", self.draft_model)
        self.draft_max = QSpinBox()
        self.draft_max.setRange(1, 32)
        self.draft_max.setToolTip("At most this many guesses per round (with the adaptive length: the most it "
                                  "tries). Code/JSON like more, prose fewer.")
        sform.addRow("Draft tokens (max)", self.draft_max)
        self.draft_min = QSpinBox()
        self.draft_min.setRange(0, 32)
        self.draft_min.setToolTip("A shorter draft is dropped: not worth a verify batch")
        sform.addRow("Draft tokens (min)", self.draft_min)
        self.adaptive = QCheckBox("Adaptive draft length")
        self.adaptive.setToolTip("Choose the number of guesses each round (at most the max) from how many were "
                                 "accepted lately and what drafting costs; the output stays the same")
        sform.addRow(self.adaptive)
        self.draft_p_min = QDoubleSpinBox()
        self.draft_p_min.setRange(0.0, 0.99)
        self.draft_p_min.setSingleStep(0.05)
        self.draft_p_min.setDecimals(2)
        self.draft_p_min.setToolTip("Stop drafting when the draft's confidence in its next token falls below this")
        sform.addRow("Probability cutoff", self.draft_p_min)
        self.draft_gpu_layers = _LayerSlider()
        sform.addRow("Draft GPU layers", self.draft_gpu_layers)
        self.apply_draft_button = QPushButton("Apply")
        sform.addRow(self.apply_draft_button)
        col.addWidget(spec)

        # -- sampling -----------------------------------------------------------------------------
        samp = QGroupBox("Sampling")
        pform = QFormLayout(samp)
        self.temperature = self._dspin(0.0, 5.0, 0.05, 2, "0 = greedy (deterministic)")
        pform.addRow("Temperature", self.temperature)
        self.top_k = QSpinBox()
        self.top_k.setRange(0, 100000)
        self.top_k.setSpecialValueText("off")
        pform.addRow("Top-k", self.top_k)
        self.top_p = self._dspin(0.01, 1.0, 0.01, 2)
        pform.addRow("Top-p", self.top_p)
        self.min_p = self._dspin(0.0, 0.99, 0.01, 2)
        pform.addRow("Min-p", self.min_p)
        self.repeat_penalty = self._dspin(0.5, 2.0, 0.05, 2, "1 = off")
        pform.addRow("Repeat penalty", self.repeat_penalty)
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2_147_483_647)
        self.seed.setSpecialValueText("random")
        pform.addRow("Seed", self.seed)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 1_048_576)
        pform.addRow("Max tokens", self.max_tokens)
        col.addWidget(samp)

        # -- memory and advice --------------------------------------------------------------------
        mem = QGroupBox("Memory estimate")
        mlay = QVBoxLayout(mem)
        self.memory_bar = MemoryBar()
        mlay.addWidget(self.memory_bar)
        col.addWidget(mem)
        self.advice = QLabel()
        self.advice.setWordWrap(True)
        self.advice.setTextFormat(Qt.TextFormat.RichText)
        self.advice.setObjectName("advice")
        col.addWidget(self.advice)

        self.reset_button = QPushButton("Reset to defaults")
        col.addWidget(self.reset_button)
        col.addStretch(1)

        for w in (self.n_ctx, self.threads, self.draft_max, self.draft_min, self.top_k, self.seed, self.max_tokens):
            w.valueChanged.connect(self._emit_changed)
        for w in (self.draft_p_min, self.temperature, self.top_p, self.min_p, self.repeat_penalty):
            w.valueChanged.connect(self._emit_changed)
        self.gpu_layers.valueChanged.connect(self._emit_changed)
        self.adaptive.toggled.connect(self._emit_changed)
        self.draft_gpu_layers.valueChanged.connect(self._emit_changed)
        self.source.currentIndexChanged.connect(self._source_changed)
        self.draft_model.currentIndexChanged.connect(self._draft_chosen)
        self.load_button.clicked.connect(self.loadRequested)
        self.apply_draft_button.clicked.connect(self.applyDraftRequested)
        self.reset_button.clicked.connect(self.resetRequested)
        self._building = False
        self.set_values(PanelValues())
        # never narrower than its content: a field cut off at the edge would hide its value
        self.setMinimumWidth(max(300, body.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
                                 + 2 * self.frameWidth()))

    @staticmethod
    def _dspin(lo: float, hi: float, step: float, decimals: int, tip: str = "") -> QDoubleSpinBox:
        w = QDoubleSpinBox()
        w.setRange(lo, hi)
        w.setSingleStep(step)
        w.setDecimals(decimals)
        if tip:
            w.setToolTip(tip)
        return w

    # -- values -----------------------------------------------------------------------------------
    def values(self) -> PanelValues:
        return PanelValues(
            gpu_layers=self.gpu_layers.value(),
            n_ctx=self.n_ctx.value(),
            threads=self.threads.value(),
            draft_source=self.source.currentData() or DEFAULT_SOURCE,
            draft_path=self.draft_model.currentData() or "",
            draft_max=self.draft_max.value(),
            draft_min=self.draft_min.value(),
            adaptive=self.adaptive.isChecked(),
            draft_p_min=round(self.draft_p_min.value(), 4),
            draft_gpu_layers=self.draft_gpu_layers.value(),
            temperature=round(self.temperature.value(), 4),
            top_k=self.top_k.value(),
            top_p=round(self.top_p.value(), 4),
            min_p=round(self.min_p.value(), 4),
            repeat_penalty=round(self.repeat_penalty.value(), 4),
            seed=self.seed.value(),
            max_tokens=self.max_tokens.value(),
        )

    def set_values(self, v: PanelValues) -> None:
        """Show `v` (out-of-range values are clamped by the widgets)."""
        self._building = True
        try:
            self.gpu_layers.set_value(v.gpu_layers)
            self.n_ctx.setValue(v.n_ctx)
            self.threads.setValue(v.threads)
            i = self.source.findData(v.draft_source)
            self.source.setCurrentIndex(max(i, 0))
            j = self.draft_model.findData(v.draft_path)
            if j >= 0 and self._draft_items.item(j).isEnabled():
                self.draft_model.setCurrentIndex(j)
            self._show_spec(v.spec())
            self.draft_gpu_layers.set_value(v.draft_gpu_layers)
            self.temperature.setValue(v.temperature)
            self.top_k.setValue(v.top_k)
            self.top_p.setValue(v.top_p)
            self.min_p.setValue(v.min_p)
            self.repeat_penalty.setValue(v.repeat_penalty)
            self.seed.setValue(v.seed)
            self.max_tokens.setValue(v.max_tokens)
            self._spec_source = self.source.currentData()
        finally:
            self._building = False
        self._update_enabled()
        self.changed.emit()

    def choose_source(self, source: str) -> None:
        """Choose a draft source as the user would (its speculation settings start from its defaults)."""
        i = self.source.findData(source)
        if i >= 0 and i != self.source.currentIndex():
            self.source.setCurrentIndex(i)

    def choose_draft(self, path: str) -> bool:
        """Choose a draft model as the user would; False when it is not offered (or incompatible)."""
        item = self.draft_item(path)
        if item is None or not item.isEnabled():
            return False
        self.draft_model.setCurrentIndex(self.draft_model.findData(path))
        return True

    def request_settings(self) -> tuple[SamplingParams, int]:
        v = self.values()
        return v.sampling(), v.max_tokens

    # -- model facts --------------------------------------------------------------------------------
    def set_target(self, name: str | None, n_layers: int = 0, n_ctx_train: int = 0) -> None:
        self.model_label.setText(f"<b>{name}</b>" if name else "No model loaded")
        self.gpu_layers.set_layer_count(n_layers)
        if n_ctx_train:
            self.n_ctx.setToolTip(f"The model was trained for {n_ctx_train} tokens")

    def _draft_chosen(self, index: int) -> None:
        """The draft's GPU-layers slider spans the chosen draft's layers."""
        item = self._draft_items.item(index) if index >= 0 else None
        self.draft_gpu_layers.set_layer_count(int(item.data(_LAYERS_ROLE) or 0) if item is not None else 0)
        self._emit_changed()

    def set_draft_choices(self, choices: list[DraftChoice]) -> None:
        """List drafts; incompatible ones are shown disabled with the reason as tooltip."""
        current = self.draft_model.currentData()
        self._building = True
        try:
            self._draft_items.clear()
            none = QStandardItem("— choose a draft model —")
            none.setData("", Qt.ItemDataRole.UserRole)
            self._draft_items.appendRow(none)
            for c in sorted(choices, key=lambda c: (not c.verdict.compatible, c.name.lower())):
                item = QStandardItem(c.name if c.verdict.compatible else f"{c.name} (incompatible)")
                item.setData(str(c.path), Qt.ItemDataRole.UserRole)
                item.setToolTip(c.verdict.reason)
                item.setEnabled(c.verdict.compatible)
                item.setData(c.n_layers, _LAYERS_ROLE)
                self._draft_items.appendRow(item)
            j = self.draft_model.findData(current) if current else 0
            if j >= 0 and self._draft_items.item(j).isEnabled():
                self.draft_model.setCurrentIndex(j)
            else:
                self.draft_model.setCurrentIndex(0)
        finally:
            self._building = False
        self._update_enabled()

    def draft_item(self, path: str) -> QStandardItem | None:
        j = self.draft_model.findData(path)
        return self._draft_items.item(j) if j >= 0 else None

    def set_advice(self, advice: list[Advice]) -> None:
        colours = {"error": "#c0392b", "warning": "#b9770e", "info": "#5d6d7e"}
        icons = {"error": "⛔", "warning": "⚠", "info": "ℹ"}
        self.advice.setText("<br>".join(
            f'<span style="color:{colours[a.level]}">{icons[a.level]} {_escape(a.text)}</span>' for a in advice
        ))
        self.advice.setVisible(bool(advice))

    # -- internals --------------------------------------------------------------------------------------
    def _source_changed(self, _i: int) -> None:
        source = self.source.currentData()
        if not self._building:
            # the user chose another source: its own defaults, unless they are those of the settings shown
            defaults = spec_defaults(source)
            if defaults != spec_defaults(self._spec_source):
                self._building = True
                try:
                    self._show_spec(defaults)
                finally:
                    self._building = False
            self._spec_source = source
        self._update_enabled()
        self._emit_changed()

    def _show_spec(self, spec: SpecSettings) -> None:
        """Show speculation settings (the caller holds `_building`: no `changed` per field)."""
        self.draft_max.setValue(spec.draft_max)
        self.draft_min.setValue(spec.draft_min)
        self.adaptive.setChecked(spec.adaptive)
        self.draft_p_min.setValue(spec.draft_p_min)

    def _update_enabled(self) -> None:
        src = self.source.currentData()
        model_mode = src == sources.DRAFT_MODEL
        self.draft_model.setEnabled(model_mode)
        self.draft_gpu_layers.setEnabled(model_mode)
        self.draft_p_min.setEnabled(model_mode)
        for w in (self.draft_max, self.draft_min, self.adaptive):
            w.setEnabled(src != "off")

    def _emit_changed(self, *_args: object) -> None:
        if not self._building:
            self.changed.emit()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
