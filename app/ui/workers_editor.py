"""The settings dialog's list of workers: other machines (``tandem worker``) that hold part of the target.

Entries are ``HOST:PORT`` strings, checked with the engine's own `parse_endpoint` as they are added (a bad
one is refused with its message). *Check* looks at every listed worker on a pool thread
(`app.engine.workers.probe`) and shows its protocol version, devices and free memory, or why it cannot be
used. The switch above the list turns the workers off without forgetting them: the target then loads on
this machine only. `workers_for_target` is what a target's `ModelSettings.workers` gets from the settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QThreadPool, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.engine.errors import one_line
from app.engine.workers import BadEndpoint, Endpoint, WorkerError, WorkerInfo, parse_endpoint, probe
from app.ui.background import run_in_pool

__all__ = ["WorkersEditor", "workers_for_target"]


def workers_for_target(get: Callable[[str], Any]) -> tuple[Endpoint, ...]:
    """The workers a target is loaded with, from the app settings (`get`: the store's getter): the listed
    ones that parse, none while the switch is off."""
    if not get("workers_enabled"):
        return ()
    listed = get("workers")
    out: list[Endpoint] = []
    for text in listed if isinstance(listed, list) else []:
        try:
            endpoint = parse_endpoint(str(text))
        except BadEndpoint:
            continue
        if endpoint not in out:
            out.append(endpoint)
    return tuple(out)


class WorkersEditor(QGroupBox):
    """Edits the list of workers; `checked` is emitted once a Check has heard from every worker."""

    checked = Signal()

    def __init__(self, parent: QWidget | None = None, *, probe_fn: Callable[[Endpoint], WorkerInfo] = probe) -> None:
        super().__init__("Workers (other machines)", parent)
        self._probe = probe_fn
        self._pool = QThreadPool(self)
        self._pending = 0
        self.enabled_check = QCheckBox("Spread the target model over these workers (the draft stays here)", self)
        self.enabled_check.setToolTip("Off: models load on this machine only; the list is kept")
        self.list = QListWidget(self)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setMinimumHeight(70)
        self.list.itemSelectionChanged.connect(self._update_buttons)
        self.address_edit = QLineEdit(self)
        self.address_edit.setPlaceholderText("HOST:PORT, e.g. 192.168.1.20:50052")
        self.address_edit.returnPressed.connect(self.add_from_edit)
        self.add_button = QPushButton("Add", self)
        self.add_button.clicked.connect(self.add_from_edit)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.clicked.connect(self.remove_selected)
        self.check_button = QPushButton("Check", self)
        self.check_button.setToolTip("Ask every worker for its devices and free memory")
        self.check_button.clicked.connect(self.check)
        self.message_label = QLabel(self)
        self.message_label.setWordWrap(True)
        self.message_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        hint = QLabel("Start one with <code>tandem worker</code> on the other machine. Its connection has no "
                      "password and no encryption: trusted networks or an SSH tunnel only (docs/scaling.md).", self)
        hint.setWordWrap(True)
        hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        row = QHBoxLayout()
        row.addWidget(self.address_edit, 1)
        for b in (self.add_button, self.remove_button, self.check_button):
            row.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addWidget(self.enabled_check)
        layout.addWidget(self.list)
        layout.addLayout(row)
        layout.addWidget(self.message_label)
        layout.addWidget(hint)
        self._update_buttons()

    # -- the list -------------------------------------------------------------------------------------
    def set_workers(self, workers: Sequence[str], enabled: bool) -> None:
        self.list.clear()
        for text in workers:
            try:
                self._append(parse_endpoint(str(text)))
            except BadEndpoint:
                continue
        self.enabled_check.setChecked(enabled)
        self._update_buttons()

    def workers(self) -> list[str]:
        return [self.list.item(i).text().split(" ")[0] for i in range(self.list.count())]

    def _endpoints(self) -> list[Endpoint]:
        return [parse_endpoint(t) for t in self.workers()]

    def _append(self, endpoint: Endpoint) -> QListWidgetItem:
        item = QListWidgetItem(str(endpoint))
        self.list.addItem(item)
        return item

    def add(self, text: str) -> bool:
        """Add `text` (HOST:PORT); False, with the reason shown, when it is not one or already listed."""
        try:
            endpoint = parse_endpoint(text)
        except BadEndpoint as e:
            self._say(str(e))
            return False
        if endpoint in self._endpoints():
            self._say(f"already in the list: {endpoint}")
            return False
        self._append(endpoint)
        self._say("")
        self._update_buttons()
        return True

    def add_from_edit(self) -> None:
        if self.add(self.address_edit.text()):
            self.address_edit.clear()

    def remove_selected(self) -> None:
        for item in self.list.selectedItems():
            self.list.takeItem(self.list.row(item))
        self._update_buttons()

    def _update_buttons(self) -> None:
        self.remove_button.setEnabled(bool(self.list.selectedItems()))
        self.check_button.setEnabled(self.list.count() > 0 and self._pending == 0)

    # -- checking -------------------------------------------------------------------------------------
    def check(self) -> None:
        """Probe every listed worker on the pool; each row then shows what the worker said."""
        endpoints = self._endpoints()
        self._pending = len(endpoints)
        self._update_buttons()
        self._say("checking…" if endpoints else "")
        for endpoint in endpoints:
            run_in_pool(self._pool, self, lambda _relay, e=endpoint: self._probe_one(e), self._on_result,
                        self._on_result, describe=one_line)

    def _probe_one(self, endpoint: Endpoint) -> tuple[Endpoint, str, bool]:
        try:
            info = self._probe(endpoint)
        except WorkerError as e:
            return endpoint, str(e), False
        return endpoint, info.describe().removeprefix(f"{endpoint}: "), True

    def _on_result(self, result: object) -> None:
        if isinstance(result, tuple):
            endpoint, text, ok = result
            for i in range(self.list.count()):
                item = self.list.item(i)
                if item.text().split(" ")[0] == str(endpoint):
                    item.setText(f"{endpoint}  —  {text}")
                    item.setToolTip(text if ok else f"{text}\nA model loading with it stops with this message: "
                                    "start the worker, remove it from the list or turn the workers off.")
        else:  # an unexpected failure of the check itself
            self._say(str(result))
        self._pending -= 1
        if self._pending <= 0:
            self._pending = 0
            if self.message_label.text() == "checking…":
                self._say("")
            self._update_buttons()
            self.checked.emit()

    def message(self) -> str:
        return self.message_label.text()

    def _say(self, text: str) -> None:
        self.message_label.setText(text)
