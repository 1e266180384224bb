"""The model bar on top of the chat: the target model with Load / Eject, the speculation source (and its draft
model) with what the last reply accepted, the preset, and the toggles of the chat list and the settings sidebar.

It shows and asks; the main window loads, applies and stores. Choosing a source or a draft emits
``sourceChosen`` / ``draftChosen``; the window mirrors the settings panel into the bar (:meth:`set_source`,
:meth:`set_draft_choices`), so the two always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.engine import sources
from app.engine.speculative import GenerationStats
from app.engine.units import format_acceptance
from app.ui.elided_label import ElidedLabel

__all__ = ["ModelBar", "ModelEntry", "NO_PRESET", "speculation_summary"]

NO_PRESET = "No preset"
_PATH_ROLE = Qt.ItemDataRole.UserRole
OFF_HINT = ("Off: the default until speculation is measured never to be slower. To turn it on, choose "
            f"{sources.SHORT_LABELS[sources.DRAFT_MODEL]} or {sources.SHORT_LABELS[sources.HISTORY]}.")


@dataclass(frozen=True)
class ModelEntry:
    path: str
    name: str
    enabled: bool = True
    tooltip: str = ""


def speculation_summary(mode: str, stats: GenerationStats | None, draft_name: str = "") -> str:
    """The line beside the speculation menu: off and how to turn it on, or the mode and the last acceptance."""
    if mode == sources.OFF:
        return OFF_HINT
    label = sources.SHORT_LABELS.get(mode, mode)
    if mode == sources.DRAFT_MODEL and draft_name:
        label = f"draft model {draft_name}"
    head = f"Speculating with {label}"
    if stats is None:
        return f"{head} · no reply yet"
    if not stats.drafted:
        return f"{head} · last reply: nothing drafted · {stats.decode_tokens_per_second:.1f} tok/s"
    return (f"{head} · last reply {format_acceptance(stats.accepted, stats.drafted)} · "
            f"{stats.decode_tokens_per_second:.1f} tok/s")


def _fill(combo: QComboBox, model: QStandardItemModel, entries: list[ModelEntry], none_text: str) -> None:
    current = combo.currentData()
    combo.blockSignals(True)
    try:
        model.clear()
        none = QStandardItem(none_text)
        none.setData("", _PATH_ROLE)
        model.appendRow(none)
        for e in entries:
            item = QStandardItem(e.name)
            item.setData(e.path, _PATH_ROLE)
            item.setEnabled(e.enabled)
            item.setToolTip(e.tooltip or e.path)
            model.appendRow(item)
        j = combo.findData(current) if current else 0
        combo.setCurrentIndex(j if j >= 0 else 0)
    finally:
        combo.blockSignals(False)


class ModelBar(QWidget):
    loadRequested = Signal(str)  # model path
    ejectRequested = Signal()
    sourceChosen = Signal(str)  # one of sources.DRAFT_SOURCES
    draftChosen = Signal(str)  # draft model path
    presetChosen = Signal(str)  # preset name ("" = none)
    managePresetsRequested = Signal()
    chatsToggled = Signal(bool)
    settingsToggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("modelBar")
        self._loaded: str | None = None
        self._loading = False
        self._mode = sources.OFF
        self._stats: GenerationStats | None = None

        self.chats_button = self._toggle("Chats", "Show or hide the conversation list")
        self.chats_button.toggled.connect(self.chatsToggled)
        self.target = QComboBox()
        self.target.setObjectName("targetCombo")
        self._targets = QStandardItemModel(self.target)
        self.target.setModel(self._targets)
        self.target.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.target.setMinimumContentsLength(14)
        self.target.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.target.setToolTip("The model that answers")
        self.target.currentIndexChanged.connect(self._update_load_button)
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(self._on_load_clicked)
        self.preset = QComboBox()
        self.preset.setObjectName("presetCombo")
        self.preset.setToolTip("A preset sets the system prompt, sampling and speculation")
        self.preset.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.preset.setMinimumContentsLength(10)
        self.preset.activated.connect(lambda _i: self.presetChosen.emit(self.preset.currentData() or ""))
        self.presets_button = QToolButton()
        self.presets_button.setText("Presets…")
        self.presets_button.setAutoRaise(True)
        self.presets_button.setToolTip("Save, delete, import and export presets")
        self.presets_button.clicked.connect(self.managePresetsRequested)
        self.settings_button = self._toggle("Settings", "Show or hide the settings sidebar (Ctrl+Shift+A)")
        self.settings_button.toggled.connect(self.settingsToggled)

        self.source = QComboBox()
        self.source.setObjectName("sourceCombo")
        for key in sources.DRAFT_SOURCES:
            self.source.addItem(sources.SHORT_LABELS[key], key)
            self.source.setItemData(self.source.count() - 1, sources.LABELS[key], Qt.ItemDataRole.ToolTipRole)
        self.source.setToolTip("Speculative decoding: where the guesses the model checks come from")
        self.source.activated.connect(lambda _i: self.sourceChosen.emit(self.source.currentData()))
        self.draft = QComboBox()
        self.draft.setObjectName("draftCombo")
        self._drafts = QStandardItemModel(self.draft)
        self.draft.setModel(self._drafts)
        self.draft.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.draft.setMinimumContentsLength(12)
        self.draft.setToolTip("Only models with the target's tokenizer can draft for it")
        self.draft.activated.connect(lambda _i: self.draftChosen.emit(self.draft.currentData() or ""))
        # one line, shortened in the middle when narrow (the mode and the last reply's numbers stay in view)
        self.status = ElidedLabel(mode=Qt.TextElideMode.ElideMiddle)
        self.status.setObjectName("speculationStatus")

        top = QHBoxLayout()
        top.setSpacing(6)
        top.addWidget(self.chats_button)
        top.addWidget(self.target, 1)
        top.addWidget(self.load_button)
        top.addSpacing(8)
        top.addWidget(self.preset)
        top.addWidget(self.presets_button)
        top.addWidget(self.settings_button)
        bottom = QHBoxLayout()
        bottom.setSpacing(6)
        self.source_label = QLabel("Speculation")
        bottom.addWidget(self.source_label)
        bottom.addWidget(self.source)
        bottom.addWidget(self.draft)
        bottom.addWidget(self.status, 1)
        col = QVBoxLayout(self)
        col.setContentsMargins(10, 8, 10, 6)
        col.setSpacing(4)
        col.addLayout(top)
        col.addLayout(bottom)

        self.set_models([])
        self.set_draft_choices([])
        self.set_presets([], "")
        self._show_status()

    @staticmethod
    def _toggle(text: str, tip: str) -> QToolButton:
        b = QToolButton()
        b.setText(text)
        b.setToolTip(tip)
        b.setCheckable(True)
        b.setChecked(True)
        b.setAutoRaise(True)
        return b

    # -- the target ---------------------------------------------------------------------------------
    def set_models(self, entries: list[ModelEntry]) -> None:
        _fill(self.target, self._targets, entries, "— choose a model —")
        if self._loaded:
            self._select(self.target, self._loaded)
        self._update_load_button()

    def set_loaded(self, path: str | None, loading: bool = False) -> None:
        """The loaded target (None: none), or the one being loaded (``loading``)."""
        self._loaded = str(path) if path else None
        self._loading = loading
        if self._loaded:
            self._select(self.target, self._loaded)
        self._update_load_button()

    def chosen_model(self) -> str:
        return self.target.currentData() or ""

    def _update_load_button(self, *_args: object) -> None:
        chosen = self.chosen_model()
        if self._loading:
            self.load_button.setText("Loading…")
            self.load_button.setEnabled(False)
            return
        ejects = bool(self._loaded) and chosen == self._loaded
        self.load_button.setText("Eject" if ejects else "Load")
        self.load_button.setToolTip("Unload the model and free its memory" if ejects else "Load the chosen model")
        self.load_button.setEnabled(ejects or bool(chosen))

    def _on_load_clicked(self) -> None:
        chosen = self.chosen_model()
        if self._loaded and chosen == self._loaded:
            self.ejectRequested.emit()
        elif chosen:
            self.loadRequested.emit(chosen)

    # -- speculation ----------------------------------------------------------------------------------
    def set_source(self, source: str) -> None:
        i = self.source.findData(source)
        if i >= 0:
            self.source.blockSignals(True)
            self.source.setCurrentIndex(i)
            self.source.blockSignals(False)
        self.draft.setVisible(source == sources.DRAFT_MODEL)

    def set_draft_choices(self, entries: list[ModelEntry], current: str = "") -> None:
        _fill(self.draft, self._drafts, entries, "— choose a draft —")
        if current:
            self._select(self.draft, current)

    def set_draft(self, path: str) -> None:
        self._select(self.draft, path)

    def set_speculation(self, mode: str, stats: GenerationStats | None = None) -> None:
        """What the engine does now (``speculationChanged``) and, after a reply, its stats."""
        if mode != self._mode:
            self._stats = None
        self._mode = mode
        if stats is not None:
            self._stats = stats
        self._show_status()

    def speculation_mode(self) -> str:
        return self._mode

    def _show_status(self) -> None:
        path = self.draft.currentData() or ""
        self.status.setText(speculation_summary(self._mode, self._stats, Path(path).stem if path else ""))

    # -- presets --------------------------------------------------------------------------------------
    def set_presets(self, names: list[str], current: str) -> None:
        self.preset.blockSignals(True)
        try:
            self.preset.clear()
            self.preset.addItem(NO_PRESET, "")
            for n in names:
                self.preset.addItem(n, n)
            j = self.preset.findData(current) if current else 0
            self.preset.setCurrentIndex(j if j >= 0 else 0)
        finally:
            self.preset.blockSignals(False)

    # -- internals ------------------------------------------------------------------------------------
    @staticmethod
    def _select(combo: QComboBox, path: str) -> None:
        j = combo.findData(str(path))
        if j >= 0 and combo.currentIndex() != j:
            combo.blockSignals(True)
            combo.setCurrentIndex(j)
            combo.blockSignals(False)
