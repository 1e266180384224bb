"""The list of saved conversations: pinned ones first, then the newest; searchable (titles and messages), with
New / Rename / Delete, Pin, Export (Markdown or JSON) and Import (a JSON export) — the last three in the
context menu and the File menu.

Renaming is inline (F2, double-click, the Rename button or the context menu open an editor on the item).
Deleting asks first through :attr:`ConversationList.confirm`, a callable ``(title, question) -> bool`` that
tests replace (by default a Yes/No message box).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QModelIndex, QPoint, QRect, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QFont, QFontMetrics, QKeySequence, QPainter, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from app.store.chat_export import ChatImportError, import_json, to_json, to_markdown
from app.store.chats import ChatStore, Conversation
from app.store.db import StoreError

__all__ = ["ConversationList", "UNTITLED", "format_when"]

UNTITLED = "New chat"
SEARCH_DELAY_MS = 200
_ID_ROLE = int(Qt.ItemDataRole.UserRole) + 1
_TITLE_ROLE = int(Qt.ItemDataRole.UserRole) + 2  # the stored title ("" when untitled)
_WHEN_ROLE = int(Qt.ItemDataRole.UserRole) + 3
_PINNED_ROLE = int(Qt.ItemDataRole.UserRole) + 4
EXPORT_FORMATS = {"md": ("Markdown", "*.md"), "json": ("JSON", "*.json")}


def format_when(timestamp: float, now: float | None = None) -> str:
    """A short local date for the list: "14:03" today, "Yesterday", "Mon" this week, else "12 Mar 2024"."""
    now = time.time() if now is None else now
    t, n = time.localtime(timestamp), time.localtime(now)
    days = (time.mktime((n.tm_year, n.tm_mon, n.tm_mday, 0, 0, 0, 0, 0, -1))
            - time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))) / 86400
    if days < 0.5:
        return time.strftime("%H:%M", t)
    if days < 1.5:
        return "Yesterday"
    if days < 6.5:
        return time.strftime("%a", t)
    if t.tm_year == n.tm_year:
        return f"{t.tm_mday} {time.strftime('%b', t)}"
    return f"{t.tm_mday} {time.strftime('%b %Y', t)}"


class _ItemDelegate(QStyledItemDelegate):
    """Two lines per conversation: the title, and the date of the last change in a muted colour."""

    PAD_X, PAD_Y, GAP = 10, 7, 2

    def _fonts(self, option: QStyleOptionViewItem) -> tuple[QFont, QFont]:
        title = QFont(option.font)
        small = QFont(option.font)
        small.setPointSizeF(max(7.0, small.pointSizeF() * 0.85))
        return title, small

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:  # noqa: N802
        title, small = self._fonts(option)
        height = QFontMetrics(title).height() + QFontMetrics(small).height() + self.GAP + 2 * self.PAD_Y
        return QSize(160, height)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        widget = opt.widget
        style = widget.style() if widget is not None else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)

        selected = bool(opt.state & QStyle.StateFlag.State_Selected)
        group = QPalette.ColorGroup.Active if opt.state & QStyle.StateFlag.State_Active else QPalette.ColorGroup.Inactive
        text_color = opt.palette.color(
            group, QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        )
        muted = QPalette(opt.palette).color(group, QPalette.ColorRole.PlaceholderText)
        if selected:
            muted = text_color
        title_font, small_font = self._fonts(option)
        stored = index.data(_TITLE_ROLE) or ""
        if not stored:
            title_font.setItalic(True)
        rect: QRect = opt.rect.adjusted(self.PAD_X, self.PAD_Y, -self.PAD_X, -self.PAD_Y)
        fm_title, fm_small = QFontMetrics(title_font), QFontMetrics(small_font)
        painter.save()
        painter.setFont(title_font)
        painter.setPen(text_color)
        title = fm_title.elidedText(stored or UNTITLED, Qt.TextElideMode.ElideRight, rect.width())
        painter.drawText(QRect(rect.left(), rect.top(), rect.width(), fm_title.height()),
                         int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), title)
        painter.setFont(small_font)
        painter.setPen(muted)
        top = rect.top() + fm_title.height() + self.GAP
        painter.drawText(QRect(rect.left(), top, rect.width(), fm_small.height()),
                         int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                         ("Pinned · " if index.data(_PINNED_ROLE) else "") + str(index.data(_WHEN_ROLE) or ""))
        painter.restore()

    def setEditorData(self, editor: QWidget, index: QModelIndex) -> None:  # noqa: N802
        if isinstance(editor, QLineEdit):
            editor.setText(index.data(_TITLE_ROLE) or "")
            editor.selectAll()
        else:
            super().setEditorData(editor, index)

    def updateEditorGeometry(self, editor: QWidget, option: QStyleOptionViewItem, index: QModelIndex) -> None:  # noqa: N802
        title, _small = self._fonts(option)
        height = QFontMetrics(title).height() + 8
        rect = option.rect
        editor.setGeometry(rect.left() + 4, rect.top() + (rect.height() - height) // 2, rect.width() - 8, height)


class ConversationList(QWidget):
    """Saved conversations, most recently changed first, with a search box and New / Rename / Delete.

    Signals: ``conversationSelected(id)`` when the current conversation changes (by a click, the keyboard
    or :meth:`select`), ``conversationDeleted(id)`` after a deletion (before a neighbour gets selected),
    ``conversationRenamed(id, title)``.
    """

    conversationSelected = Signal(int)
    conversationDeleted = Signal(int)
    conversationRenamed = Signal(int, str)
    notice = Signal(str, bool)  # a one-line message (text, is it an error) for the chat's notice line

    def __init__(self, store: ChatStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        #: ``confirm(title, question) -> bool``: asked before deleting; tests replace it.
        self.confirm: Callable[[str, str], bool] = self._ask
        self._current: int | None = None
        self._refreshing = False

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 4, 8)
        layout.setSpacing(6)

        top = QHBoxLayout()
        top.setSpacing(6)
        self.search_box = QLineEdit()
        self.search_box.setPlaceholderText("Search chats…")
        self.search_box.setClearButtonEnabled(True)
        self.search_box.textChanged.connect(self._on_search_text)
        top.addWidget(self.search_box, 1)
        self.new_button = QPushButton("New")
        self.new_button.setToolTip("Start a new conversation (Ctrl+N)")
        self.new_button.clicked.connect(self.new_conversation)
        top.addWidget(self.new_button)
        layout.addLayout(top)

        self.list = QListWidget()
        self.list.setObjectName("conversationList")
        self.list.setItemDelegate(_ItemDelegate(self.list))
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        self.list.setUniformItemSizes(True)
        self.list.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._context_menu)
        self.list.currentItemChanged.connect(self._on_current_item)
        self.list.itemChanged.connect(self._on_item_edited)
        layout.addWidget(self.list, 1)

        self.empty_label = QLabel()  # shown for an empty list / no search results
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout.addWidget(self.empty_label)

        bottom = QHBoxLayout()
        bottom.setSpacing(6)
        self.rename_button = QPushButton("Rename")
        self.rename_button.setToolTip("Rename the selected conversation (F2)")
        self.rename_button.clicked.connect(lambda: self.start_rename())
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Delete the selected conversation (Del)")
        self.delete_button.clicked.connect(lambda: self.delete())
        bottom.addWidget(self.rename_button)
        bottom.addWidget(self.delete_button)
        bottom.addStretch(1)
        layout.addLayout(bottom)

        self.new_action = QAction("New chat", self)
        self.new_action.setShortcut(QKeySequence.StandardKey.New)
        self.new_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.new_action.triggered.connect(self.new_conversation)
        self.rename_action = QAction("Rename", self)
        self.rename_action.setShortcut(QKeySequence(Qt.Key.Key_F2))
        self.rename_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.rename_action.triggered.connect(lambda: self.start_rename())
        self.delete_action = QAction("Delete…", self)
        self.delete_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Delete))
        self.delete_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.delete_action.triggered.connect(lambda: self.delete())
        self.pin_action = QAction("Pin", self)
        self.pin_action.setToolTip("Pinned chats stay at the top of the list")
        self.pin_action.triggered.connect(lambda: self.toggle_pin())
        self.export_md_action = QAction("Export as Markdown…", self)
        self.export_md_action.triggered.connect(lambda: self.export_dialog("md"))
        self.export_json_action = QAction("Export as JSON…", self)
        self.export_json_action.triggered.connect(lambda: self.export_dialog("json"))
        self.import_action = QAction("Import a chat (JSON)…", self)
        self.import_action.triggered.connect(self.import_dialog)
        self.list.addAction(self.rename_action)
        self.list.addAction(self.delete_action)
        self.addAction(self.new_action)

        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self.refresh)
        self.setMinimumWidth(200)
        self.refresh()

    # -- queries ----------------------------------------------------------------------------------------
    def current_id(self) -> int | None:
        return self._current

    def ids(self) -> list[int]:
        """The ids shown, top to bottom."""
        return [int(self.list.item(i).data(_ID_ROLE)) for i in range(self.list.count())]

    def item(self, conversation_id: int) -> QListWidgetItem | None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(_ID_ROLE) == conversation_id:
                return item
        return None

    def filter_text(self) -> str:
        return self.search_box.text()

    def focus_search(self) -> None:
        """Put the cursor in the search box, its text selected (typing replaces it)."""
        self.search_box.setFocus()
        self.search_box.selectAll()

    # -- actions ----------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload from the store (keeping the search filter and the current conversation)."""
        self._search_timer.stop()
        query = self.search_box.text().strip()
        convs: list[Conversation] = (
            self.store.search_conversations(query) if query else self.store.list_conversations()
        )
        now = time.time()
        self._refreshing = True
        self.list.blockSignals(True)
        try:
            self.list.clear()
            for conv in convs:
                item = QListWidgetItem(conv.title or UNTITLED)
                item.setData(_ID_ROLE, conv.id)
                item.setData(_TITLE_ROLE, conv.title)
                item.setData(_WHEN_ROLE, format_when(conv.updated_at, now))
                item.setData(_PINNED_ROLE, conv.pinned)
                item.setToolTip(conv.title or UNTITLED)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
                self.list.addItem(item)
                if conv.id == self._current:
                    self.list.setCurrentItem(item)
            if self._current is not None and self.item(self._current) is None:
                self.list.setCurrentItem(None)
                self.list.clearSelection()
        finally:
            self.list.blockSignals(False)
            self._refreshing = False
        if not convs:
            self.empty_label.setText("No matching chats" if query else "No chats yet")
        self.empty_label.setVisible(not convs)
        self._update_buttons()

    def set_filter(self, text: str) -> None:
        """Set the search text and filter at once (typing waits a moment before filtering)."""
        self.search_box.blockSignals(True)
        self.search_box.setText(text)
        self.search_box.blockSignals(False)
        self.refresh()

    def select(self, conversation_id: int) -> bool:
        """Make a conversation current (clearing the search when it hides it); emits ``conversationSelected``
        when the current one changes. False when there is no such conversation."""
        if self.store.get_conversation(conversation_id) is None:
            return False
        if self.item(conversation_id) is None:
            self.set_filter("")
            if self.item(conversation_id) is None:
                self.refresh()
        item = self.item(conversation_id)
        if item is not None:
            self.list.blockSignals(True)
            self.list.setCurrentItem(item)
            self.list.blockSignals(False)
            self.list.scrollToItem(item)
        self._set_current(conversation_id)
        return True

    def new_conversation(self) -> int:
        """Start a new conversation and select it (the current one is reused if it is still empty)."""
        current = self._current
        if current is not None:
            conv = self.store.get_conversation(current)
            if conv is not None and not conv.title and not self.store.get_messages(current):
                self.set_filter("")
                self.select(current)
                return current
        conv = self.store.create_conversation()
        self.set_filter("")
        self.select(conv.id)
        return conv.id

    def rename(self, conversation_id: int, title: str) -> bool:
        """Rename a conversation (whitespace collapsed); False for a blank title or no such conversation."""
        title = " ".join(title.split())
        if not title:
            return False
        try:
            self.store.rename_conversation(conversation_id, title)
        except KeyError:
            self.refresh()
            return False
        self.refresh()
        self.conversationRenamed.emit(conversation_id, title)
        return True

    def start_rename(self, conversation_id: int | None = None) -> bool:
        """Open the inline title editor on a conversation (the current one by default)."""
        cid = self._current if conversation_id is None else conversation_id
        item = self.item(cid) if cid is not None else None
        if item is None:
            return False
        self.list.setCurrentItem(item)
        self.list.editItem(item)
        return True

    def delete(self, conversation_id: int | None = None) -> bool:
        """Delete a conversation (the current one by default) after :attr:`confirm` agrees."""
        cid = self._current if conversation_id is None else conversation_id
        if cid is None:
            return False
        conv = self.store.get_conversation(cid)
        if conv is None:
            return False
        title = conv.title or UNTITLED
        if not self.confirm("Delete conversation",
                            f"Delete “{title}” and all its messages?\nThis cannot be undone."):
            return False
        ids = self.ids()
        neighbour: int | None = None
        if cid in ids:
            i = ids.index(cid)
            rest = ids[i + 1 :] + ids[:i][::-1]
            neighbour = rest[0] if rest else None
        self.store.delete_conversation(cid)
        was_current = cid == self._current
        if was_current:
            self._current = None
        self.refresh()
        self.conversationDeleted.emit(cid)
        if was_current and neighbour is not None:
            self.select(neighbour)
        return True

    def toggle_pin(self, conversation_id: int | None = None) -> bool:
        """Pin (or unpin) a conversation, the current one by default; pinned ones are listed first."""
        cid = self._current if conversation_id is None else conversation_id
        conv = self.store.get_conversation(cid) if cid is not None else None
        if conv is None:
            return False
        self.store.set_pinned(conv.id, not conv.pinned)
        self.refresh()
        return True

    def export_to(self, path: Path, fmt: str, conversation_id: int | None = None) -> bool:
        """Write a conversation (the current one by default) as ``fmt`` ("md" or "json") to ``path``."""
        cid = self._current if conversation_id is None else conversation_id
        conv = self.store.get_conversation(cid) if cid is not None else None
        if conv is None:
            self.notice.emit("Open a chat first, then export it.", True)
            return False
        messages = self.store.get_messages(conv.id)
        text = to_markdown(conv, messages) if fmt == "md" else to_json(conv, messages)
        try:
            Path(path).write_text(text, encoding="utf-8")
        except OSError as e:
            self.notice.emit(f"Could not write {Path(path).name}: {e.strerror or e}", True)
            return False
        self.notice.emit(f"Exported “{conv.title or UNTITLED}” to {path}", False)
        return True

    def import_from(self, path: Path) -> int | None:
        """Import a JSON export as a new conversation and select it (None, with the reason, when it fails)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
            conv = import_json(self.store, text)
        except (OSError, UnicodeDecodeError) as e:
            self.notice.emit(f"Could not read {Path(path).name}: {e}", True)
            return None
        except ChatImportError as e:
            self.notice.emit(f"{Path(path).name} cannot be imported: {e}", True)
            return None
        except (sqlite3.Error, StoreError) as e:  # written in one transaction: nothing of it is kept
            self.notice.emit(f"Could not save {Path(path).name} as a chat: {' '.join(str(e).split())}", True)
            return None
        self.set_filter("")
        self.select(conv.id)
        self.notice.emit(f"Imported “{conv.title or UNTITLED}”", False)
        return conv.id

    def export_dialog(self, fmt: str) -> None:
        conv = self.store.get_conversation(self._current) if self._current is not None else None
        if conv is None:
            self.notice.emit("Open a chat first, then export it.", True)
            return
        kind, pattern = EXPORT_FORMATS[fmt]
        stem = "".join(c if c.isalnum() or c in " -_" else "_" for c in (conv.title or "chat")).strip() or "chat"
        path, _ = QFileDialog.getSaveFileName(self, f"Export chat as {kind}", f"{stem}{pattern[1:]}",
                                              f"{kind} ({pattern})")
        if path:
            self.export_to(Path(path), fmt)

    def import_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a chat", "", "Tandem chat export (*.json);;All files (*)")
        if path:
            self.import_from(Path(path))

    # -- internals --------------------------------------------------------------------------------------
    def _set_current(self, conversation_id: int | None) -> None:
        changed = conversation_id != self._current
        self._current = conversation_id
        self._update_buttons()
        if changed and conversation_id is not None:
            self.conversationSelected.emit(conversation_id)

    def _update_buttons(self) -> None:
        has = self._current is not None and self.item(self._current) is not None
        self.rename_button.setEnabled(has)
        self.delete_button.setEnabled(has)
        self.rename_action.setEnabled(has)
        self.delete_action.setEnabled(has)
        for a in (self.pin_action, self.export_md_action, self.export_json_action):
            a.setEnabled(has)

    def _on_search_text(self, _text: str) -> None:
        self._search_timer.start()

    def _on_current_item(self, current: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        if self._refreshing or current is None:
            return
        self._set_current(int(current.data(_ID_ROLE)))

    def _on_item_edited(self, item: QListWidgetItem) -> None:
        if self._refreshing:
            return
        cid = int(item.data(_ID_ROLE))
        new = " ".join(item.text().split())
        if new and new != (item.data(_TITLE_ROLE) or ""):
            QTimer.singleShot(0, lambda: self.rename(cid, new))  # not while the editor is being closed
        else:
            QTimer.singleShot(0, self.refresh)

    def _context_menu(self, pos: QPoint) -> None:
        item = self.list.itemAt(pos)
        if item is not None:
            self.select(int(item.data(_ID_ROLE)))
        menu = QMenu(self)
        menu.addAction(self.new_action)
        if item is not None:
            conv = self.store.get_conversation(int(item.data(_ID_ROLE)))
            self.pin_action.setText("Unpin" if conv is not None and conv.pinned else "Pin")
            menu.addSeparator()
            menu.addAction(self.pin_action)
            menu.addAction(self.rename_action)
            menu.addAction(self.delete_action)
            menu.addSeparator()
            menu.addAction(self.export_md_action)
            menu.addAction(self.export_json_action)
        menu.addAction(self.import_action)
        menu.exec(self.list.viewport().mapToGlobal(pos))

    def _ask(self, title: str, question: str) -> bool:
        answer = QMessageBox.question(
            self, title, question,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes
