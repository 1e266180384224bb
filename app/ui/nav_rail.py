"""The navigation rail on the left of the main window: one button per page, the current one checked.

Pages are added with :meth:`NavRail.add_page` (the main window's ``add_page`` does it); clicking a button
emits ``pageSelected(key)``. The rail owns nothing but its buttons.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QButtonGroup, QFrame, QSizePolicy, QToolButton, QVBoxLayout, QWidget

__all__ = ["NavRail"]


class NavRail(QFrame):
    pageSelected = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("navRail")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Expanding)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(6, 8, 6, 8)
        self._layout.setSpacing(4)
        self._layout.addStretch(1)
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)
        self._buttons: dict[str, QToolButton] = {}

    def add_page(self, key: str, title: str, icon: QIcon | None = None, tooltip: str = "") -> QToolButton:
        if key in self._buttons:
            raise ValueError(f"a page {key!r} is already in the rail")
        button = QToolButton(self)
        button.setText(title)
        button.setObjectName(f"nav_{key}")
        button.setCheckable(True)
        button.setAutoRaise(True)
        button.setToolTip(tooltip or title)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        if icon is not None and not icon.isNull():
            button.setIcon(icon)
            button.setIconSize(QSize(22, 22))
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
        else:
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        button.setMinimumHeight(40)
        button.clicked.connect(lambda _checked=False, k=key: self.pageSelected.emit(k))
        self._group.addButton(button)
        self._layout.insertWidget(self._layout.count() - 1, button)
        self._buttons[key] = button
        return button

    def keys(self) -> list[str]:
        return list(self._buttons)

    def button(self, key: str) -> QToolButton | None:
        return self._buttons.get(key)

    def set_current(self, key: str) -> None:
        button = self._buttons.get(key)
        if button is not None:
            button.setChecked(True)

    def current(self) -> str | None:
        return next((k for k, b in self._buttons.items() if b.isChecked()), None)
