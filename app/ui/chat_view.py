"""The chat view of the main window: conversations on the left, the transcript and the composer on the right.

Flow of a reply: the user message is saved (the store titles an untitled conversation from it), an empty
``'streaming'`` reply is inserted with :meth:`ChatStore.begin_reply`, and a :class:`GenerateRequest` with
the conversation's complete/stopped messages goes to the engine through the :class:`EngineBridge`.
Streamed pieces of *that* request go both to the view and to the :class:`ReplyWriter` (saved at most every
half second, and every 250 ms by a timer while the stream stalls). When the reply finishes it is saved as
``complete`` (or ``stopped`` after Stop) with its stats; when it fails the partial text is kept, the reply
is saved as ``error`` and the message is shown inline in the reply — never a dialog.

Text is never lost: when a message cannot be sent (no model, a reply still running, invalid settings), it
stays in the input box. When the engine fails before writing anything (e.g. the prompt does not fit the
context), the message is put back into the (empty) input box; sending again from there replaces that
failed turn instead of repeating it.

Each action has one place: Send turns into Stop while a reply runs (Esc too), Regenerate sits on the last reply,
Edit and Branch on each message, Copy on each message and each code block.

Searching the conversation list (titles and messages) also marks the matches in the open conversation.

Switching conversations while a reply streams is allowed: the reply keeps being saved to its own
conversation (and reappears, still streaming, when that conversation is opened again). Only one reply runs
at a time, so Send turns into Stop until it ends, whichever conversation is shown.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QFont, QGuiApplication, QKeyEvent, QPalette, QTextCursor
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.engine.sampling import SamplingParams
from app.engine.speculative import GenerationResult, Piece
from app.service import chat_turn
from app.service.engine_service import DONE, FAILED
from app.store.chats import ChatStore, ReplyWriter
from app.store.db import StoreError
from app.ui.bridge import EngineBridge, GenerateRequest
from app.ui.conversation_list import UNTITLED, ConversationList
from app.ui.elided_label import ElidedLabel
from app.ui.message_view import MessageView, draft_color, error_color, muted_color, stats_json

__all__ = ["ChatView", "Composer", "FLUSH_INTERVAL_MS", "NO_MODEL_HINT", "DRAFT_LEGEND"]

FLUSH_INTERVAL_MS = 250
SYSTEM_PROMPT_SAVE_MS = 500
NO_MODEL_HINT = "Load a model first"
DRAFT_LEGEND = "accepted draft tokens"

RequestSettings = Callable[[], tuple[SamplingParams, int]]


class Composer(QPlainTextEdit):
    """The input box: Enter sends, Shift+Enter starts a new line, Escape asks to stop; grows to ~8 lines."""

    submitted = Signal()
    escapePressed = Signal()

    MIN_LINES, MAX_LINES = 2, 8

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTabChangesFocus(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)
        self._fit()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                self.textCursor().insertText("\n")
            else:
                self.submitted.emit()
            return
        if event.key() == Qt.Key.Key_Escape:
            self.escapePressed.emit()
            return
        super().keyPressEvent(event)

    def _fit(self, *_args: object) -> None:
        lines = max(self.MIN_LINES, min(self.MAX_LINES, self.document().lineCount()))
        margins = self.contentsMargins()
        height = (lines * self.fontMetrics().lineSpacing() + 2 * int(self.document().documentMargin())
                  + margins.top() + margins.bottom() + 4)
        if height != self.height():
            self.setFixedHeight(height)


@dataclass
class _Stream:
    request_id: int
    writer: ReplyWriter
    conversation_id: int
    kind: str  # "send" | "regenerate" | "edit"
    user_text: str = ""
    user_message_id: int | None = None


class ChatView(QWidget):
    """Conversations, transcript, per-chat system prompt and composer; talks to the engine via the bridge.

    ``request_settings()`` returns the current ``(SamplingParams, max_tokens)`` (the settings panel's).
    The view follows the bridge's ``loaded`` / ``unloaded`` / ``loadFailed`` events for the target model;
    :meth:`set_model_ready` sets the same state directly.
    """

    generationStarted = Signal()
    generationFinished = Signal(object)  # GenerationStats, or None when the reply failed
    statusMessage = Signal(str)
    highlightDraftsChanged = Signal(bool)  # the draft-highlighting toggle changed (e.g. its header button)

    def __init__(
        self,
        store: ChatStore,
        bridge: EngineBridge,
        request_settings: RequestSettings,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.store = store
        self.bridge = bridge
        self.request_settings = request_settings
        self._conversation_id: int | None = None
        self._active: _Stream | None = None
        self._failed_turn: chat_turn.FailedTurn | None = None
        self._model_ready = False

        # -- left: conversations -------------------------------------------------------------------------
        self.conversation_list = ConversationList(store)
        self.conversation_list.conversationSelected.connect(self._on_conversation_selected)
        self.conversation_list.conversationDeleted.connect(self._on_conversation_deleted)
        self.conversation_list.conversationRenamed.connect(self._on_conversation_renamed)
        self.conversation_list.notice.connect(lambda text, error: self._show_notice(text, error=error))
        self.conversation_list.search_box.textChanged.connect(lambda _t: self._search_timer.start())

        # -- right: header, system prompt, transcript, composer -----------------------------------------
        right = QWidget()
        rlayout = QVBoxLayout(right)
        rlayout.setContentsMargins(4, 8, 8, 8)
        rlayout.setSpacing(6)

        header = QHBoxLayout()
        header.setContentsMargins(8, 0, 0, 0)
        self.title_label = ElidedLabel(UNTITLED)
        title_font = QFont(self.title_label.font())
        title_font.setPointSizeF(title_font.pointSizeF() * 1.25)
        title_font.setBold(True)
        self.title_label.setFont(title_font)
        header.addWidget(self.title_label, 1)
        self.highlight_button = QToolButton()
        self.highlight_button.setText("Highlight drafts")
        self.highlight_button.setToolTip("Shade the text that came from draft tokens the model accepted")
        self.highlight_button.setCheckable(True)
        self.highlight_button.setAutoRaise(True)
        self.highlight_button.toggled.connect(self.set_highlight_drafts)
        self.legend = QLabel(f"  {DRAFT_LEGEND}  ")
        self.legend.setObjectName("draftLegend")
        self.legend.setToolTip("Text on this background came from guesses the model checked and accepted")
        self.legend.setVisible(False)
        header.addWidget(self.legend)
        header.addWidget(self.highlight_button)
        rlayout.addLayout(header)

        system_row = QHBoxLayout()
        system_row.setContentsMargins(4, 0, 0, 0)
        system_row.setSpacing(6)
        self.system_toggle = QToolButton()
        self.system_toggle.setText("System prompt")
        self.system_toggle.setToolTip("Instructions the model gets before this conversation")
        self.system_toggle.setCheckable(True)
        self.system_toggle.setAutoRaise(True)
        self.system_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.system_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.system_toggle.toggled.connect(self.set_system_prompt_expanded)
        system_row.addWidget(self.system_toggle)
        self.system_preview = QLabel()
        self.system_preview.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        system_row.addWidget(self.system_preview, 1)
        rlayout.addLayout(system_row)
        self.system_prompt_edit = QPlainTextEdit()
        self.system_prompt_edit.setPlaceholderText("e.g. You are a concise assistant. Answer in English.")
        self.system_prompt_edit.setTabChangesFocus(True)
        self.system_prompt_edit.setFixedHeight(self.system_prompt_edit.fontMetrics().lineSpacing() * 4 + 16)
        self.system_prompt_edit.setVisible(False)
        self.system_prompt_edit.textChanged.connect(self._on_system_prompt_edited)
        rlayout.addWidget(self.system_prompt_edit)

        self.message_view = MessageView()
        self.message_view.editSubmitted.connect(self.edit_message)
        self.message_view.regenerateRequested.connect(self.regenerate)
        self.message_view.branchRequested.connect(self.branch_from)
        self.message_view.codeCopied.connect(lambda _lang: self.statusMessage.emit("Code copied to the clipboard"))
        self.message_view.messageCopied.connect(lambda _id: self.statusMessage.emit("Copied to the clipboard"))
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Plain)
        line.setForegroundRole(QPalette.ColorRole.Mid)
        rlayout.addWidget(line)
        rlayout.addWidget(self.message_view, 1)

        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.setVisible(False)
        self.notice.setContentsMargins(8, 0, 8, 0)
        self.notice.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        rlayout.addWidget(self.notice)

        composer = QHBoxLayout()
        composer.setSpacing(8)
        self.input = Composer()
        self.input.submitted.connect(self._on_submit)
        self.input.escapePressed.connect(self.stop)
        composer.addWidget(self.input, 1)
        buttons = QVBoxLayout()
        buttons.setSpacing(6)
        self.send_button = QPushButton("Send")
        self.send_button.setMinimumWidth(104)
        self.send_button.clicked.connect(self._on_send_button)
        buttons.addWidget(self.send_button)
        buttons.addStretch(1)
        composer.addLayout(buttons)
        rlayout.addLayout(composer)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.conversation_list)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([240, 760])
        self.splitter.setChildrenCollapsible(False)
        right.setMinimumWidth(360)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.splitter)

        # -- timers and engine events -----------------------------------------------------------------
        self._flush_timer = QTimer(self)
        self._flush_timer.setInterval(FLUSH_INTERVAL_MS)
        self._flush_timer.timeout.connect(self._flush_due)
        self._system_timer = QTimer(self)
        self._system_timer.setSingleShot(True)
        self._system_timer.setInterval(SYSTEM_PROMPT_SAVE_MS)
        self._system_timer.timeout.connect(self._save_system_prompt)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(250)
        self._search_timer.timeout.connect(self._mark_search)

        events = bridge.events
        events.pieces.connect(self._on_pieces)
        events.finished.connect(self._on_finished)
        events.failed.connect(self._on_failed)
        events.loaded.connect(self._on_loaded)
        events.unloaded.connect(self._on_unloaded)
        events.loadFailed.connect(self._on_load_failed)
        events.queued.connect(self._on_queued)
        events.started.connect(self._on_started)

        self._style()
        ids = self.conversation_list.ids()
        if ids:
            self.conversation_list.select(ids[0])
        else:
            self._show_blank()
        self.set_model_ready(False)
        self.setFocusProxy(self.input)

    # -- state --------------------------------------------------------------------------------------------
    def current_conversation_id(self) -> int | None:
        return self._conversation_id

    def is_generating(self) -> bool:
        return self._active is not None

    def streaming_message_id(self) -> int | None:
        """The id of the reply being generated, if any (it may belong to another conversation)."""
        return self._active.writer.message_id if self._active else None

    def model_ready(self) -> bool:
        return self._model_ready

    def system_prompt(self) -> str:
        return self.system_prompt_edit.toPlainText()

    def set_system_prompt(self, text: str) -> None:
        """Set the current conversation's system prompt (saved at once)."""
        self.system_prompt_edit.setPlainText(text)
        self._save_system_prompt()

    def set_system_prompt_expanded(self, expanded: bool) -> None:
        self.system_toggle.blockSignals(True)
        self.system_toggle.setChecked(expanded)
        self.system_toggle.blockSignals(False)
        self.system_toggle.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.system_prompt_edit.setVisible(expanded)
        self._update_system_preview()
        if expanded:
            self.system_prompt_edit.setFocus()

    def set_model_ready(self, ready: bool) -> None:
        """Whether a target model is loaded; without one Send is off and sending explains why."""
        self._model_ready = bool(ready)
        self.input.setPlaceholderText(
            "Message the model — Enter sends, Shift+Enter starts a new line"
            if self._model_ready
            else f"{NO_MODEL_HINT} (Models), then type here — Enter sends"
        )
        if self._model_ready and self.notice.property("kind") == "no-model":
            self._hide_notice()
        self._update_controls()

    def set_highlight_drafts(self, on: bool) -> None:
        """Shade text that came from accepted draft tokens (off by default)."""
        on = bool(on)
        changed = on != self.message_view.highlight_drafts()
        self.message_view.set_highlight_drafts(on)
        if self.highlight_button.isChecked() != on:
            self.highlight_button.blockSignals(True)
            self.highlight_button.setChecked(on)
            self.highlight_button.blockSignals(False)
        self.legend.setVisible(on)
        if changed:
            self.highlightDraftsChanged.emit(on)

    def set_conversations_visible(self, visible: bool) -> None:
        """Show or hide the conversation list (the transcript takes the width)."""
        self.conversation_list.setVisible(bool(visible))

    def focus_input(self) -> None:
        """Put the cursor in the message box."""
        self.input.setFocus()

    def focus_search(self) -> None:
        """Put the cursor in the chat list's search box, its text selected."""
        self.conversation_list.focus_search()

    def copy_last_reply(self) -> bool:
        """Copy the last reply of the open conversation to the clipboard (False when there is none)."""
        block = next((b for b in reversed(self.message_view.blocks()) if b.role == "assistant" and b.text), None)
        if block is None:
            self.statusMessage.emit("There is no reply to copy yet")
            return False
        QGuiApplication.clipboard().setText(block.text)
        self.statusMessage.emit("Copied the last reply to the clipboard")
        return True

    def branch_from(self, message_id: int) -> int | None:
        """A new conversation holding this one up to ``message_id`` (the original stays); it is opened."""
        cid = self._conversation_id
        if cid is None:
            return None
        try:
            conv = self.store.branch_conversation(cid, message_id)
        except (sqlite3.Error, StoreError, KeyError) as e:
            self._show_notice(f"Could not branch the conversation: {e}", error=True)
            return None
        self.conversation_list.set_filter("")
        self.conversation_list.select(conv.id)
        self.statusMessage.emit(f"Branched into “{conv.title}”")
        return conv.id

    # -- conversations ------------------------------------------------------------------------------------
    def open_conversation(self, conversation_id: int) -> bool:
        """Show a conversation (False when it does not exist)."""
        self._save_system_prompt()
        conv = self.store.get_conversation(conversation_id)
        if conv is None:
            return False
        self._conversation_id = conversation_id
        if self._failed_turn is not None and self._failed_turn.conversation_id != conversation_id:
            self._failed_turn = None
        active = self._active
        if active is not None and active.conversation_id == conversation_id:
            self._flush(active)  # the stored copy of the live reply is then up to date
        self.message_view.set_messages(self.store.get_messages(conversation_id))
        for block in self.message_view.blocks():
            if block.streaming and (active is None or block.message_id != active.writer.message_id):
                block.set_status("stopped")  # left over by a crash: it is not coming back
        self._set_system_prompt_field(conv.system_prompt)
        self.title_label.setText(conv.title or UNTITLED)
        if self.conversation_list.current_id() != conversation_id:
            self.conversation_list.select(conversation_id)
        self._hide_notice()
        self._update_controls()
        self._mark_search()
        return True

    def new_conversation(self) -> int:
        """Start (and show) a new conversation; returns its id."""
        return self.conversation_list.new_conversation()

    # -- sending ------------------------------------------------------------------------------------------
    def send(self, text: str | None = None) -> bool:
        """Send ``text`` (by default the input box's, which is cleared once the request is on its way).
        Returns False, keeping the text, when it cannot be sent; the reason is shown next to the input."""
        from_box = text is None
        if text is None:
            text = self.input.toPlainText()
        if not text.strip():
            return False
        settings = self._start_settings()
        if settings is None:
            return False
        try:
            cid = self._ensure_conversation()
            self._save_system_prompt()
            self._drop_failed_turn(cid)
            user = self.store.append_message(cid, "user", text)
            writer = self.store.begin_reply(cid)
        except (sqlite3.Error, StoreError, KeyError) as e:
            self._show_notice(f"Could not save the message: {e}", error=True)
            return False
        if from_box:
            self.input.clear()
        self.message_view.add_message(user)
        self._start(writer, settings, "send", user_text=text, user_message_id=user.id)
        return True

    def regenerate(self, message_id: int | None = None) -> bool:
        """Generate the last reply of the conversation again (``message_id``, if given, must be that reply).
        When the conversation ends with a user message, this generates its missing reply."""
        cid = self._conversation_id
        if cid is None or not self._can_start():
            return False
        messages = self.store.get_messages(cid)
        if not messages:
            return False
        last = messages[-1]
        if message_id is not None and last.id != message_id:
            self._show_notice("Only the last reply can be regenerated.")
            return False
        history = messages[:-1] if last.role == "assistant" else messages
        if not history or history[-1].role != "user":
            self._show_notice("There is no message to reply to.")
            return False
        settings = self._settings()
        if settings is None:
            return False
        try:
            if last.role == "assistant":
                self.store.truncate_after(cid, last.position - 1)
            writer = self.store.begin_reply(cid)
        except (sqlite3.Error, StoreError, KeyError) as e:
            self._show_notice(f"Could not update the conversation: {e}", error=True)
            return False
        self._failed_turn = None
        if last.role == "assistant":
            self.message_view.truncate_after(last.position - 1)
        self._start(writer, settings, "regenerate")
        return True

    def edit_message(self, message_id: int, text: str) -> bool:
        """Replace a user message of the shown conversation, drop everything after it and generate a new
        reply. Returns False (changing nothing) when that cannot be done now."""
        if not text.strip():
            return False
        message = self.store.get_message(message_id)
        cid = self._conversation_id
        if message is None or message.role != "user" or message.conversation_id != cid:
            return False
        settings = self._start_settings()
        if settings is None:
            return False
        try:
            self.store.update_message(message_id, content=text)
            self.store.truncate_after(cid, message.position)
            writer = self.store.begin_reply(cid)
        except (sqlite3.Error, StoreError, KeyError) as e:
            self._show_notice(f"Could not update the conversation: {e}", error=True)
            return False
        self._failed_turn = None
        block = self.message_view.block(message_id)
        if block is not None:
            block.set_content(text)
            block.cancel_edit()
        self.message_view.truncate_after(message.position)
        self._start(writer, settings, "edit")
        return True

    def stop(self) -> bool:
        """Stop the reply being generated (it is kept and marked stopped)."""
        if self._active is None:
            return False
        self.bridge.stop()
        self.statusMessage.emit("Stopping…")
        return True

    def show_notice(self, text: str, error: bool = False) -> None:
        """Show a one-line message above the input box (cleared by the next reply or conversation switch)."""
        self._show_notice(text, error=error)

    def save_pending(self) -> None:
        """Write what is not saved yet (the system prompt, the streaming reply's tail), e.g. before quitting."""
        self._save_system_prompt()
        if self._active is not None:
            self._flush(self._active)

    # -- internals: requests ------------------------------------------------------------------------------
    def _can_start(self) -> bool:
        if self._active is not None:
            self._show_notice("A reply is still being generated: wait for it or press Stop.")
            return False
        if not self._model_ready:
            self._show_notice(f"{NO_MODEL_HINT}: open a model, then send your message again.", kind="no-model")
            self.statusMessage.emit(NO_MODEL_HINT)
            return False
        if self.bridge.busy:
            self._show_notice(self.bridge.busy_reason or "The engine is busy; try again in a moment.")
            return False
        return True

    def _start_settings(self) -> tuple[SamplingParams, int] | None:
        """The request settings when a reply can start now (else None; the reason is shown)."""
        return self._settings() if self._can_start() else None

    def _settings(self) -> tuple[SamplingParams, int] | None:
        try:
            sampling, max_tokens = self.request_settings()
            sampling.validate()
            max_tokens = int(max_tokens)
            if max_tokens < 1:
                raise ValueError(f"max tokens must be 1 or more, got {max_tokens}")
        except Exception as e:  # noqa: BLE001 - shown to the user, the text stays in the box
            self._show_notice(f"Invalid generation settings: {e}", error=True)
            self.statusMessage.emit(f"Invalid generation settings: {e}")
            return None
        return sampling, max_tokens

    def _ensure_conversation(self) -> int:
        cid = self._conversation_id
        if cid is not None and self.store.get_conversation(cid) is not None:
            return cid
        conv = self.store.create_conversation(system_prompt=self.system_prompt_edit.toPlainText())
        self._conversation_id = conv.id
        self.message_view.set_messages([])
        self.conversation_list.set_filter("")
        self.conversation_list.select(conv.id)
        return conv.id

    def _drop_failed_turn(self, cid: int) -> None:
        failed, self._failed_turn = self._failed_turn, None
        position = chat_turn.failed_turn_to_drop(self.store.get_messages(cid), failed, cid)
        if position is not None:
            self.store.truncate_after(cid, position)
            self.message_view.truncate_after(position)

    def _start(
        self,
        writer: ReplyWriter,
        settings: tuple[SamplingParams, int],
        kind: str,
        user_text: str = "",
        user_message_id: int | None = None,
    ) -> None:
        cid = writer.conversation_id
        reply = self.store.get_message(writer.message_id)
        if reply is not None:
            self.message_view.add_message(reply)
        self.message_view.scroll_to_bottom()
        sampling, max_tokens = settings
        request = GenerateRequest(
            messages=chat_turn.turn_messages(self.store.get_messages(cid), exclude=writer.message_id),
            system_prompt=self.system_prompt_edit.toPlainText(),
            sampling=sampling,
            max_tokens=max_tokens,
        )
        request_id = self.bridge.generate(request)
        self._active = _Stream(request_id, writer, cid, kind, user_text, user_message_id)
        self._flush_timer.start()
        self._hide_notice()
        self.conversation_list.refresh()
        conv = self.store.get_conversation(cid)
        if conv is not None and cid == self._conversation_id:
            self.title_label.setText(conv.title or UNTITLED)
        self._update_controls()
        self.generationStarted.emit()
        self.statusMessage.emit("Generating…")

    def _flush(self, active: _Stream) -> None:
        try:
            active.writer.flush()
        except (sqlite3.Error, StoreError) as e:
            self._show_notice(f"Could not save the reply: {e}", error=True)

    def _flush_due(self) -> None:
        if self._active is None:
            self._flush_timer.stop()
            return
        try:
            self._active.writer.flush_if_due()
        except (sqlite3.Error, StoreError) as e:
            self._show_notice(f"Could not save the reply: {e}", error=True)

    # -- internals: engine events -------------------------------------------------------------------------
    def _on_pieces(self, request_id: int, pieces: list[Piece]) -> None:
        active = self._active
        if active is None or request_id != active.request_id:
            return
        try:
            for piece in pieces:
                active.writer.append(piece.text, piece.from_draft)
        except (sqlite3.Error, StoreError) as e:
            self._show_notice(f"Could not save the reply: {e}", error=True)
        if self._conversation_id == active.conversation_id:
            self.message_view.append(active.writer.message_id, pieces)

    def _on_finished(self, request_id: int, result: GenerationResult) -> None:
        active = self._active
        if active is None or request_id != active.request_id:
            return
        self._end(active, DONE, result, "")

    def _on_failed(self, request_id: int, message: str) -> None:
        active = self._active
        if active is None or request_id != active.request_id:
            return
        self._end(active, FAILED, None, message)

    def _on_queued(self, request_id: int, ahead: int, ahead_kind: str) -> None:
        if self._active is not None and request_id == self._active.request_id:
            self._show_notice(chat_turn.waiting_notice(ahead, ahead_kind), kind="queued")

    def _on_started(self, request_id: int) -> None:
        if self._active is not None and request_id == self._active.request_id and self.notice.property("kind") == "queued":
            self._hide_notice()

    def _end(self, active: _Stream, outcome: str, result: GenerationResult | None, message: str) -> None:
        shown = self._conversation_id == active.conversation_id
        end = chat_turn.end_turn(outcome, result, message, kind=active.kind, reply_text=active.writer.text,
                                 user_text=active.user_text, conversation_id=active.conversation_id,
                                 user_message_id=active.user_message_id, reply_id=active.writer.message_id,
                                 input_is_empty=shown and not self.input.toPlainText().strip())
        status, stats, error = end.status, end.stats, end.error
        self._active = None
        self._flush_timer.stop()
        try:
            active.writer.finish(status, stats_json(stats, error))  # type: ignore[arg-type]
        except (sqlite3.Error, StoreError) as e:
            self._show_notice(f"Could not save the reply: {e}", error=True)
        if shown:
            self.message_view.finish(active.writer.message_id, status, stats, error)
        if status == "error":
            restored = end.restore_text is not None
            if restored:
                self.input.setPlainText(end.restore_text)
                self.input.moveCursor(QTextCursor.MoveOperation.End)
                self._failed_turn = end.failed
            hint = " Your message is back in the input box: change it and send it again." if restored else ""
            self._show_notice(f"The reply failed: {error}.{hint}", error=True)
            self.statusMessage.emit(f"Generation failed: {error}")
        elif status == "stopped":
            self.statusMessage.emit("Stopped: the reply so far is kept")  # its stats are under it
        else:
            self.statusMessage.emit("Reply finished")  # its stats are under it and in the model bar
        self.conversation_list.refresh()
        self._update_controls()
        self.generationFinished.emit(stats if status != "error" else None)

    def _on_loaded(self, which: str, _info: object) -> None:
        if which == "target":
            self.set_model_ready(True)

    def _on_unloaded(self, which: str) -> None:
        if which == "target":
            self.set_model_ready(False)

    def _on_load_failed(self, which: str, _message: str) -> None:
        if which == "target":
            self.set_model_ready(False)  # loading a target unloads the previous one first

    # -- internals: conversation list ---------------------------------------------------------------------
    def _on_conversation_selected(self, conversation_id: int) -> None:
        if conversation_id != self._conversation_id:
            self.open_conversation(conversation_id)

    def _on_conversation_deleted(self, conversation_id: int) -> None:
        if self._active is not None and self._active.conversation_id == conversation_id:
            self.bridge.stop()  # its reply has nowhere to go; the writer's last save becomes a no-op
        if self._failed_turn is not None and self._failed_turn.conversation_id == conversation_id:
            self._failed_turn = None
        if conversation_id == self._conversation_id:
            self._system_timer.stop()
            self._conversation_id = None
            self._show_blank()
            self._update_controls()

    def _on_conversation_renamed(self, conversation_id: int, title: str) -> None:
        if conversation_id == self._conversation_id:
            self.title_label.setText(title or UNTITLED)

    def _show_blank(self) -> None:
        self.message_view.set_messages([])
        self._set_system_prompt_field("")
        self.title_label.setText(UNTITLED)

    # -- internals: system prompt -------------------------------------------------------------------------
    def _set_system_prompt_field(self, text: str) -> None:
        self._system_timer.stop()
        self.system_prompt_edit.blockSignals(True)
        self.system_prompt_edit.setPlainText(text)
        self.system_prompt_edit.blockSignals(False)
        self._update_system_preview()

    def _on_system_prompt_edited(self) -> None:
        self._update_system_preview()
        self._system_timer.start()

    def _save_system_prompt(self) -> None:
        self._system_timer.stop()
        cid = self._conversation_id
        if cid is None:
            return
        conv = self.store.get_conversation(cid)
        text = self.system_prompt_edit.toPlainText()
        if conv is not None and conv.system_prompt != text:
            try:
                self.store.set_system_prompt(cid, text)
            except (sqlite3.Error, KeyError) as e:
                self._show_notice(f"Could not save the system prompt: {e}", error=True)

    def _update_system_preview(self) -> None:
        text = " ".join(self.system_prompt_edit.toPlainText().split())
        if self.system_toggle.isChecked():
            self.system_preview.setText("")
        elif text:
            metrics = self.system_preview.fontMetrics()
            width = max(120, self.system_preview.width())
            self.system_preview.setText(metrics.elidedText(text, Qt.TextElideMode.ElideRight, width))
        else:
            self.system_preview.setText("none")
        self.system_preview.setToolTip(self.system_prompt_edit.toPlainText())

    # -- internals: controls ------------------------------------------------------------------------------
    def _on_submit(self) -> None:
        if self._active is None:
            self.send()
        else:
            self._show_notice("A reply is still being generated: wait for it or press Stop.")

    def _on_send_button(self) -> None:
        if self._active is not None:
            self.stop()
        else:
            self.send()

    def _update_controls(self) -> None:
        generating = self._active is not None
        self.send_button.setText("Stop" if generating else "Send")
        self.send_button.setEnabled(generating or self._model_ready)
        if generating:
            self.send_button.setToolTip("Stop the reply (Esc); what was generated is kept")
        elif self._model_ready:
            self.send_button.setToolTip("Send the message (Enter)")
        else:
            self.send_button.setToolTip(NO_MODEL_HINT)
        self.message_view.set_actions_enabled(not generating)

    def _show_notice(self, text: str, error: bool = False, kind: str = "") -> None:
        color = error_color(self.palette()) if error else muted_color(self.palette())
        self.notice.setStyleSheet(f"color: {color.name()};")
        self.notice.setText(text)
        self.notice.setProperty("kind", kind)
        self.notice.setVisible(True)

    def _hide_notice(self) -> None:
        self.notice.clear()
        self.notice.setProperty("kind", "")
        self.notice.setVisible(False)

    def _mark_search(self) -> None:
        """Mark what the conversation list's search matches in the open conversation; scroll to the first."""
        self._search_timer.stop()
        self.message_view.mark_matches(self.conversation_list.filter_text().strip())

    def _style(self) -> None:
        muted = muted_color(self.palette())
        swatch = draft_color(self.palette())
        self.legend.setStyleSheet(f"QLabel#draftLegend {{ background: {swatch.name()}; border-radius: 4px; }}")
        self.system_preview.setStyleSheet(f"color: {muted.name()};")
        self.conversation_list.empty_label.setStyleSheet(f"color: {muted.name()};")

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._style()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._update_system_preview()

