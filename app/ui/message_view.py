"""The transcript of one conversation: one block per message, replies rendered as Markdown.

Each message is a :class:`MessageBlock` (a rounded frame: role, actions, body, status marker, stats line)
stacked in :class:`MessageView`, a scroll area. User messages are shown as typed (plain text); assistant
replies are rendered as Markdown (GitHub dialect, raw HTML shown literally: tables, lists, links).

Code blocks of a reply (:mod:`app.ui.code_highlight`): coloured by Pygments for the light or the dark palette,
under a header line with the language and a **Copy** button (which copies that block's code). A reply that
starts with ``<think>…</think>`` (a reasoning model's thoughts) shows them as a collapsed "Thought · N
characters" button above the answer; clicking it shows them. Searching (:meth:`MessageView.mark_matches`)
marks every match in the transcript.

Streaming stays cheap whatever the reply length: a streamed piece is appended as plain text at the end of
the reply's document (Qt lays out only the paragraphs that changed), and the Markdown rendering is redone
at most every :data:`MARKDOWN_INTERVAL` seconds, and only once at the end for replies longer than
:data:`MARKDOWN_STREAM_LIMIT` characters.

Draft highlighting (:meth:`MessageView.set_highlight_drafts`, off by default) gives the characters that
came from accepted draft tokens a soft background derived from the palette (light and dark themes alike).
Highlighted character formats carry :data:`DRAFT_PROPERTY` = True. After Markdown rendering, the rendered
characters are matched back to the raw text (:func:`align_rendered`) to find which ones came from the draft.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import fields

from PySide6.QtCore import QEvent, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QColor,
    QDesktopServices,
    QFont,
    QGuiApplication,
    QKeyEvent,
    QPalette,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextFormat,
    QTextFrameFormat,
    QTextTable,
)
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTextBrowser,
    QTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.engine.speculative import GenerationStats, Piece
from app.store.chats import DraftMaskBuilder, StoredMessage, decode_draft_mask
from app.ui.code_highlight import THINK_OPEN, fenced_block_lines, highlight_runs, language_label, split_think

__all__ = [
    "APPEND_INTERVAL_MS",
    "DRAFT_PROPERTY",
    "MARKDOWN_INTERVAL",
    "MARKDOWN_STREAM_LIMIT",
    "MessageBlock",
    "MessageView",
    "align_rendered",
    "draft_color",
    "error_color",
    "mix",
    "muted_color",
    "parse_stats",
    "stats_json",
]

#: Character-format property set (True) on text highlighted as coming from accepted draft tokens.
DRAFT_PROPERTY = int(QTextFormat.Property.UserProperty) + 1
#: Block-format property set (True) on the header line (language, Copy) above a code block.
CODE_HEADER_PROPERTY = int(QTextFormat.Property.UserProperty) + 2
CODE_HEADER_MARGIN = 8  # space above a code block
#: While streaming, the document of a reply is updated at most this often (milliseconds).
APPEND_INTERVAL_MS = 50
#: While streaming, re-render the Markdown at most this often (seconds).
MARKDOWN_INTERVAL = 0.75
#: While streaming, replies longer than this (characters) are rendered as Markdown only at the end.
MARKDOWN_STREAM_LIMIT = 24_000

ROLE_LABELS = {"user": "You", "assistant": "Assistant", "system": "System", "tool": "Tool"}
_MD_FEATURES = QTextDocument.MarkdownFeature(
    QTextDocument.MarkdownFeature.MarkdownDialectGitHub.value | QTextDocument.MarkdownFeature.MarkdownNoHTML.value
)
_SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
_SEPARATORS = frozenset("\u2029\u2028\ufdd0\ufdd1\ufffc")  # paragraph/line separators, frame marks, objects


# ---------------------------------------------------------------------------------------------------------
# helpers


def mix(a: QColor, b: QColor, t: float) -> QColor:
    """``a`` moved a fraction ``t`` of the way towards ``b``."""
    return QColor(
        round(a.red() + (b.red() - a.red()) * t),
        round(a.green() + (b.green() - a.green()) * t),
        round(a.blue() + (b.blue() - a.blue()) * t),
    )


def _is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Base).lightness() < 128


def draft_color(palette: QPalette) -> QColor:
    """The soft background of draft text: a green tint of the palette's base colour (light or dark)."""
    base = palette.color(QPalette.ColorRole.Base)
    return mix(base, QColor(46, 170, 110), 0.30 if _is_dark(palette) else 0.22)


def error_color(palette: QPalette) -> QColor:
    return QColor("#ef9a9a") if _is_dark(palette) else QColor("#b3261e")


def muted_color(palette: QPalette) -> QColor:
    return mix(palette.color(QPalette.ColorRole.Text), palette.color(QPalette.ColorRole.Base), 0.45)


def stats_json(stats: GenerationStats | None = None, error: str | None = None) -> str:
    """What the chat view stores in ``messages.stats_json``: the stats' fields, plus ``"error"`` if any."""
    data: dict[str, object] = stats.to_dict() if stats is not None else {}
    if error:
        data["error"] = error
    return json.dumps(data)


def parse_stats(text: str | None) -> tuple[GenerationStats | None, str | None]:
    """``(stats, error message)`` from a stored ``stats_json`` (either may be None; bad JSON gives both)."""
    if not text:
        return None, None
    try:
        data = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    error = data.get("error")
    error = error if isinstance(error, str) and error else None
    known = {f.name: f for f in fields(GenerationStats)}
    values = {k: v for k, v in data.items() if k in known and _stored_value_ok(v)}
    if not values:
        return None, error
    try:
        return GenerationStats(**values), error
    except TypeError:
        return None, error


def _stored_value_ok(v: object) -> bool:
    """A stats value as stored: a number or text, a list of texts (notes), or texts to counts (per source)."""
    if isinstance(v, (int, float, str)):
        return True
    if isinstance(v, list):
        return all(isinstance(x, str) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and isinstance(x, int) and not isinstance(x, bool) for k, x in v.items())
    return False


def align_rendered(raw: str, rendered: str, window: int = 24, resync: int = 8) -> list[int]:
    """For each character of ``rendered`` (a Markdown rendering of ``raw``, e.g. ``QTextDocument.toRawText()``),
    the index in ``raw`` of the character it shows, or -1 (separators, bullets, replaced characters).

    Markdown mostly deletes characters (``**``, backticks, fences, list markers) and turns line breaks into
    paragraph separators or spaces, so the rendered text is nearly a subsequence of the raw one: a greedy
    match within a short ``window`` does it, and a longer deletion (a link target) is skipped by finding the
    next ``resync`` rendered characters further on. Linear in practice; exact for ordinary replies.
    """
    out = [-1] * len(rendered)
    p = 0
    n = len(raw)
    flat = raw.replace("\n", " ")  # for re-synchronising: a soft line break renders as a space
    for i, ch in enumerate(rendered):
        if p >= n:
            break
        if ch in _SEPARATORS:
            continue
        end = min(n, p + window)
        q = raw.find(ch, p, end)
        if q < 0 and ch == " ":
            q = raw.find("\n", p, end)  # a soft line break renders as a space
        if q < 0:
            probe = []
            for c in rendered[i : i + resync]:
                if c in _SEPARATORS:
                    break
                probe.append(c)
            if len(probe) >= 3:
                q = flat.find("".join(probe), p)
        if q >= 0:
            out[i] = q
            p = q + 1
    return out


def _mask_builder(mask: str | None, length: int) -> DraftMaskBuilder:
    """A builder holding ``mask`` (all non-draft when it is unknown, malformed or of another length)."""
    builder = DraftMaskBuilder()
    runs: list[int] = []
    if mask:
        parts = mask.split(",")
        if all(p.isascii() and p.isdigit() for p in parts):
            runs = [int(p) for p in parts]
    if sum(runs) != length:
        runs = [length]
    for i, n in enumerate(runs):
        builder.add(n, i % 2 == 1)
    return builder


def _runs(positions: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted positions → ``(start, end)`` runs of consecutive positions (end exclusive)."""
    runs: list[tuple[int, int]] = []
    for pos in positions:
        if runs and runs[-1][1] == pos:
            runs[-1] = (runs[-1][0], pos + 1)
        else:
            runs.append((pos, pos + 1))
    return runs


def _draft_format(color: QColor) -> QTextCharFormat:
    fmt = QTextCharFormat()
    fmt.setBackground(color)
    fmt.setProperty(DRAFT_PROPERTY, True)
    return fmt


# ---------------------------------------------------------------------------------------------------------
# one message


class _Body(QTextBrowser):
    """A read-only text view as tall as its document (no scroll bars of its own)."""

    resized = Signal()  # its size or its document's layout changed (overlaid buttons follow)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._open_link)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setStyleSheet("QTextBrowser { background: transparent; border: none; }")
        self.viewport().setAutoFillBackground(False)
        self.document().setDocumentMargin(1)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)
        self.setFixedHeight(24)

    def _fit(self, *_args: object) -> None:
        height = max(18, math.ceil(self.document().size().height()) + 2 * self.frameWidth())
        if height != self.height():
            self.setFixedHeight(height)
        self.resized.emit()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._fit()

    def wheelEvent(self, event) -> None:  # noqa: N802 - let the transcript scroll
        event.ignore()

    @staticmethod
    def _open_link(url: QUrl) -> None:
        if url.scheme().lower() in _SAFE_SCHEMES:
            QDesktopServices.openUrl(url)


class _EditBox(QPlainTextEdit):
    """Editor of a user message: Enter submits, Shift+Enter inserts a new line, Escape cancels."""

    submitted = Signal()
    cancelled = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
            event.modifiers() & Qt.KeyboardModifier.ShiftModifier
        ):
            self.submitted.emit()
            return
        if event.key() == Qt.Key.Key_Escape:
            self.cancelled.emit()
            return
        super().keyPressEvent(event)


class MessageBlock(QFrame):
    """One message: role and actions, the body, a status marker, and (replies) the stats line."""

    copyClicked = Signal(int)  # message id
    editSubmitted = Signal(int, str)  # message id, new text
    regenerateClicked = Signal(int)  # message id
    branchClicked = Signal(int)  # message id
    codeCopied = Signal(str)  # the language label of the code block copied

    def __init__(self, message: StoredMessage, highlight: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message_id = message.id
        self.position = message.position
        self.role = message.role
        self.status = message.status
        self._chunks: list[str] = [message.content]
        self._mask = _mask_builder(message.draft_mask, len(message.content))
        self.stats, self.error = parse_stats(message.stats_json)
        self._highlight = highlight
        self._draft_bg = QColor()
        self._last_render = 0.0
        self._editing = False
        self._ready = False
        self._pending: list[tuple[str, bool]] = []  # appended, not shown yet
        self._append_timer = QTimer(self)
        self._append_timer.setSingleShot(True)
        self._append_timer.setInterval(APPEND_INTERVAL_MS)
        self._append_timer.timeout.connect(self.flush_pending)
        self._think_expanded = False
        self._think_open = False  # the last rendering ended inside an unclosed <think>
        self._answer_start = 0  # where the answer starts in the raw text (after </think>)
        self._code: list[tuple[str, str]] = []  # (language label, code) per code block, in order
        self._copy_buttons: list[QToolButton] = []
        self._dark = False
        self._rendered_dark: bool | None = None

        self.setObjectName("userMessage" if self.role == "user" else "assistantMessage")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Maximum)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 8, 14, 10)
        layout.setSpacing(4)

        header = QHBoxLayout()
        header.setSpacing(2)
        self.role_label = QLabel(ROLE_LABELS.get(self.role, self.role.capitalize()))
        font = self.role_label.font()
        font.setBold(True)
        self.role_label.setFont(font)
        header.addWidget(self.role_label)
        header.addStretch(1)
        self.copy_button = self._tool_button("Copy", "Copy the message to the clipboard")
        self.copy_button.clicked.connect(lambda: self.copyClicked.emit(self.message_id))
        self.edit_button = self._tool_button("Edit", "Edit this message and send it again")
        self.edit_button.clicked.connect(self.begin_edit)
        self.edit_button.setVisible(self.role == "user")
        self.regenerate_button = self._tool_button("Regenerate", "Generate this reply again")
        self.regenerate_button.clicked.connect(lambda: self.regenerateClicked.emit(self.message_id))
        self.regenerate_button.setVisible(False)
        self.branch_button = self._tool_button("Branch", "Start a new chat with this conversation up to here")
        self.branch_button.clicked.connect(lambda: self.branchClicked.emit(self.message_id))
        for button in (self.copy_button, self.edit_button, self.branch_button, self.regenerate_button):
            header.addWidget(button)
        layout.addLayout(header)

        self.think_button = QToolButton(self)
        self.think_button.setObjectName("thinkButton")
        self.think_button.setCheckable(True)
        self.think_button.setAutoRaise(True)
        self.think_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.think_button.setArrowType(Qt.ArrowType.RightArrow)
        self.think_button.setToolTip("The model's reasoning before its answer: click to show or hide it")
        self.think_button.toggled.connect(self.set_think_expanded)
        self.think_button.setVisible(False)
        layout.addWidget(self.think_button)
        self.think_body = _Body(self)
        self.think_body.setObjectName("thinkBody")
        self.think_body.setVisible(False)
        layout.addWidget(self.think_body)

        self.body = _Body(self)
        self.body.resized.connect(self._place_copy_buttons)
        layout.addWidget(self.body)

        self.edit_panel = QWidget(self)
        edit_layout = QVBoxLayout(self.edit_panel)
        edit_layout.setContentsMargins(0, 0, 0, 0)
        edit_layout.setSpacing(6)
        self.editor = _EditBox(self.edit_panel)
        self.editor.setTabChangesFocus(True)
        self.editor.submitted.connect(self.submit_edit)
        self.editor.cancelled.connect(self.cancel_edit)
        edit_layout.addWidget(self.editor)
        edit_buttons = QHBoxLayout()
        edit_buttons.addStretch(1)
        self.cancel_edit_button = QPushButton("Cancel")
        self.cancel_edit_button.clicked.connect(self.cancel_edit)
        self.save_edit_button = QPushButton("Send")
        self.save_edit_button.setToolTip("Replace this message, drop what followed it and generate a new reply")
        self.save_edit_button.setDefault(True)
        self.save_edit_button.clicked.connect(self.submit_edit)
        edit_buttons.addWidget(self.cancel_edit_button)
        edit_buttons.addWidget(self.save_edit_button)
        edit_layout.addLayout(edit_buttons)
        self.edit_panel.setVisible(False)
        layout.addWidget(self.edit_panel)

        self.marker = QLabel(self)
        self.marker.setWordWrap(True)
        self.marker.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.marker)
        self.stats_label = QLabel(self)
        self.stats_label.setWordWrap(True)
        self.stats_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        small = self.stats_label.font()
        small.setPointSizeF(max(7.0, small.pointSizeF() * 0.88))
        self.stats_label.setFont(small)
        self.marker.setFont(small)
        layout.addWidget(self.stats_label)

        self.apply_palette()
        self._render()
        self._update_footer()
        self._ready = True

    @staticmethod
    def _tool_button(text: str, tip: str) -> QToolButton:
        button = QToolButton()
        button.setText(text)
        button.setToolTip(tip)
        button.setAutoRaise(True)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        button.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        return button

    # -- state ------------------------------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The raw text of the message (Markdown source for replies)."""
        if len(self._chunks) > 1:
            self._chunks = ["".join(self._chunks)]
        return self._chunks[0]

    @property
    def draft_mask(self) -> str:
        return self._mask.encode()

    @property
    def draft_background(self) -> QColor:
        """The background given to draft text (derived from the palette)."""
        return QColor(self._draft_bg)

    @property
    def streaming(self) -> bool:
        return self.status == "streaming"

    @property
    def editing(self) -> bool:
        return self._editing

    @property
    def document(self) -> QTextDocument:
        """The answer's document (a reply's reasoning, if any, is in ``think_body``)."""
        return self.body.document()

    def code_blocks(self) -> list[tuple[str, str]]:
        """(language label, code) of each code block of the reply, in order."""
        return list(self._code)

    def copy_buttons(self) -> list[QToolButton]:
        """The Copy button of each code block, in order."""
        return self._copy_buttons[: len(self._code)]

    def think_text(self) -> str | None:
        """The reasoning of a reply that starts with ``<think>`` (None when there is none)."""
        think, _closed, _start = split_think(self.text) if self.role == "assistant" else (None, False, 0)
        return think

    def set_think_expanded(self, expanded: bool) -> None:
        self._think_expanded = bool(expanded)
        if self.think_button.isChecked() != self._think_expanded:
            self.think_button.blockSignals(True)
            self.think_button.setChecked(self._think_expanded)
            self.think_button.blockSignals(False)
        self._render()

    def mark(self, query: str, color: QColor) -> int:
        """Mark the matches of ``query`` (case-insensitive) in the body; returns how many. "" clears."""
        selections = []
        if query:
            doc = self.body.document()
            cursor = doc.find(query, 0)
            while not cursor.isNull():
                sel = QTextEdit.ExtraSelection()
                sel.cursor = cursor
                sel.format.setBackground(color)
                selections.append(sel)
                cursor = doc.find(query, cursor)
        self.body.setExtraSelections(selections)
        return len(selections)

    # -- looks ------------------------------------------------------------------------------------------
    def _source_palette(self) -> QPalette:
        # The parent's palette: this frame's own one is altered by its style sheet.
        parent = self.parentWidget()
        return parent.palette() if parent is not None else QGuiApplication.palette()

    def apply_palette(self) -> None:
        """Recompute the colours from the palette (the view calls it again when the palette changes)."""
        pal = self._source_palette()
        base = pal.color(QPalette.ColorRole.Base)
        text = pal.color(QPalette.ColorRole.Text)
        dark = _is_dark(pal)
        if self.role == "user":
            bg = mix(base, pal.color(QPalette.ColorRole.Highlight), 0.16 if dark else 0.10)
        else:
            bg = mix(base, text, 0.05 if dark else 0.03)
        border = mix(base, text, 0.14 if dark else 0.10)
        self.setStyleSheet(
            f"QFrame#{self.objectName()} {{ background-color: {bg.name()}; border: 1px solid {border.name()};"
            " border-radius: 10px; }"
        )
        self._muted = muted_color(pal)
        self._code_bg = mix(base, QColor("#000000"), 0.28) if dark else mix(base, text, 0.05)
        self._code_header_bg = mix(self._code_bg, text, 0.08 if dark else 0.06)
        self._dark = dark
        for button in self._copy_buttons:
            button.setStyleSheet(self._copy_style())
        self.stats_label.setStyleSheet(f"color: {self._muted.name()};")
        self.role_label.setStyleSheet(
            f"color: {pal.color(QPalette.ColorRole.Highlight).name() if self.role == 'user' else text.name()};"
        )
        changed = self._draft_bg != draft_color(pal) or self._rendered_dark != dark
        self._draft_bg = draft_color(pal)
        self._update_footer()
        if self._ready and changed and self.role == "assistant":
            self._render()

    def has_draft_text(self) -> bool:
        return len(self.draft_mask.split(",")) > 1

    # -- content ----------------------------------------------------------------------------------------
    def set_highlight(self, on: bool) -> None:
        on = bool(on)
        if on == self._highlight:
            return
        self._highlight = on
        if self.role == "assistant" and self.has_draft_text():
            self._render()

    def set_content(self, text: str, draft_mask: str | None = None) -> None:
        self._chunks = [text]
        self._mask = _mask_builder(draft_mask, len(text))
        self._render()

    def append(self, text: str, from_draft: bool = False) -> None:
        """Add streamed text. The document is updated at most every :data:`APPEND_INTERVAL_MS` (plain text
        appended at the end) and its Markdown re-rendered at most every :data:`MARKDOWN_INTERVAL` seconds."""
        if not text:
            return
        self._chunks.append(text)
        self._mask.add(len(text), from_draft)
        self._pending.append((text, from_draft))
        if not self._append_timer.isActive():
            self._append_timer.start()

    def flush_pending(self) -> None:
        """Show the text appended since the last update now."""
        self._append_timer.stop()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        head = self.text.lstrip()[: len(THINK_OPEN)]
        if self.role == "assistant" and (
            self._think_open
            or (not self._answer_start and head and THINK_OPEN.startswith(head))
            or (time.monotonic() - self._last_render >= MARKDOWN_INTERVAL
                and self._mask.length <= MARKDOWN_STREAM_LIMIT)
        ):
            self._render()  # inside <think> (or where it may start) the reasoning stays folded
            return
        cursor = QTextCursor(self.body.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        plain = QTextCharFormat(cursor.charFormat())
        plain.clearBackground()
        plain.clearProperty(DRAFT_PROPERTY)
        marked = QTextCharFormat(plain)
        marked.setBackground(self._draft_bg)
        marked.setProperty(DRAFT_PROPERTY, True)
        if not self._highlight:
            cursor.insertText("".join(t for t, _ in pending), plain)
            return
        # merge neighbouring pieces of the same kind: one insertion per run
        run: list[str] = []
        run_draft = pending[0][1]
        for text, from_draft in pending:
            if from_draft != run_draft:
                cursor.insertText("".join(run), marked if run_draft else plain)
                run, run_draft = [], from_draft
            run.append(text)
        cursor.insertText("".join(run), marked if run_draft else plain)

    def set_status(
        self, status: str, stats: GenerationStats | None = None, error: str | None = None
    ) -> None:
        """Show the final (or current) status; a reply leaving ``streaming`` gets its final rendering."""
        was_streaming = self.streaming
        self.status = status
        if stats is not None:
            self.stats = stats
        if error is not None:
            self.error = error
        if was_streaming and status != "streaming":
            self._render()
        self._update_footer()

    def set_regenerate_visible(self, visible: bool) -> None:
        self.regenerate_button.setVisible(visible and self.role == "assistant")

    def set_actions_enabled(self, enabled: bool) -> None:
        """Edit / Regenerate / Branch are off while a reply is generated (Copy always works)."""
        self.edit_button.setEnabled(enabled)
        self.regenerate_button.setEnabled(enabled)
        self.branch_button.setEnabled(enabled)
        self.save_edit_button.setEnabled(enabled)

    def _render(self) -> None:
        self._pending.clear()
        self._append_timer.stop()
        doc = self.body.document()
        text = self.text
        self._code = []
        if self.role == "assistant":
            think, closed, start = split_think(text)
            self._think_open = think is not None and not closed
            self._answer_start = start
            self._show_think(think, closed)
            answer = text[start:]
            doc.setMarkdown(answer, _MD_FEATURES)
            self._style_tables()  # first: it may drop an empty paragraph (block numbers change)
            groups = self._code_groups(fenced_block_lines(answer))
            self._shade_code_blocks(groups)
            if self._highlight and self.has_draft_text():
                self._highlight_rendered(answer, start)
            self._colour_code(groups)
            self._add_code_headers(groups)
            self._rendered_dark = self._dark
        else:
            doc.setPlainText(text)
        self._last_render = time.monotonic()
        self._place_copy_buttons()

    # -- reasoning (<think>) ---------------------------------------------------------------------------
    def _show_think(self, think: str | None, closed: bool) -> None:
        self.think_button.setVisible(think is not None)
        if think is None:
            self.think_body.setVisible(False)
            return
        n = len(think.strip())
        verb = "Thought" if closed or not self.streaming else "Thinking…"
        self.think_button.setText(f"{verb} · {n:,} characters")
        self.think_button.setArrowType(Qt.ArrowType.DownArrow if self._think_expanded else Qt.ArrowType.RightArrow)
        self.think_body.setVisible(self._think_expanded)
        if self._think_expanded:
            self.think_body.setPlainText(think.strip())
            self.think_body.setStyleSheet(
                f"QTextBrowser {{ background: transparent; border: none; color: {self._muted.name()}; }}")

    # -- code blocks ---------------------------------------------------------------------------------------
    def _code_groups(self, fence_lines: Sequence[int]) -> list[list[int]]:
        """The block numbers of each code block (Qt gives each line of a fence a block of its own).

        Qt gives back-to-back fences of one language the same block format, so a fenced block ends after as
        many lines as its fence in the source holds (`fence_lines`, from :func:`fenced_block_lines`)."""
        groups: list[list[int]] = []
        sizes = iter(fence_lines)
        block = self.body.document().begin()
        previous: tuple[str, bool] | None = None  # the last block's (language, fenced), None after prose
        left = 0  # lines still due to the current fenced block
        while block.isValid():
            fmt = block.blockFormat()
            fenced = fmt.hasProperty(QTextFormat.Property.BlockCodeFence)
            kind = (fmt.stringProperty(QTextFormat.Property.BlockCodeLanguage), fenced)
            if fenced or fmt.hasProperty(QTextFormat.Property.BlockCodeLanguage):
                if kind != previous or (fenced and left <= 0):
                    groups.append([])
                    # a fence the source scan did not see (should not happen): runs on as one block
                    left = next(sizes, len(fence_lines) + block.document().blockCount()) if fenced else 0
                groups[-1].append(block.blockNumber())
                left -= 1
                previous = kind
            else:
                previous = None
            block = block.next()
        return groups

    def _shade_code_blocks(self, groups: list[list[int]]) -> None:
        doc = self.body.document()
        cursor = QTextCursor(doc)
        for group in groups:
            for number in group:
                block = doc.findBlockByNumber(number)
                fmt = block.blockFormat()
                fmt.setBackground(self._code_bg)
                fmt.setLeftMargin(4)
                fmt.setRightMargin(4)
                fmt.setNonBreakableLines(False)  # long lines wrap: nothing is cut at the edge
                cursor.setPosition(block.position())
                cursor.setBlockFormat(fmt)

    def _colour_code(self, groups: list[list[int]]) -> None:
        """Pygments colours on each code block (foreground only: a draft highlight stays)."""
        doc = self.body.document()
        cursor = QTextCursor(doc)
        cursor.beginEditBlock()
        for group in groups:
            blocks = [doc.findBlockByNumber(n) for n in group]
            language = blocks[0].blockFormat().stringProperty(QTextFormat.Property.BlockCodeLanguage)
            code = "\n".join(b.text() for b in blocks)
            self._code.append((language_label(language, code), code))
            starts = []  # the document position of each character of `code` (newlines: the block ends)
            for b in blocks:
                starts.extend(range(b.position(), b.position() + b.length()))
            for start, end, style in highlight_runs(code, language, dark=self._dark):
                fmt = QTextCharFormat()
                fmt.setForeground(QColor(style.color))
                if style.bold:
                    fmt.setFontWeight(QFont.Weight.Bold)
                if style.italic:
                    fmt.setFontItalic(True)
                cursor.setPosition(starts[start])
                cursor.setPosition(starts[end - 1] + 1, QTextCursor.MoveMode.KeepAnchor)
                cursor.mergeCharFormat(fmt)
        cursor.endEditBlock()

    def _add_code_headers(self, groups: list[list[int]]) -> None:
        """A header line (the language; the Copy button goes on its right) above each code block."""
        doc = self.body.document()
        cursor = QTextCursor(doc)
        label_fmt = QTextCharFormat()
        label_fmt.setForeground(self._muted)
        label_fmt.setFontPointSize(self.font().pointSizeF())
        label_fmt.setFontWeight(QFont.Weight.DemiBold)
        label_fmt.setFontFamilies([self.font().family()])
        for (label, _code), group in zip(reversed(self._code), reversed(groups), strict=True):
            first = doc.findBlockByNumber(group[0])
            code_fmt = first.blockFormat()
            cursor.setPosition(first.position())
            cursor.insertBlock(code_fmt, first.charFormat())
            header = QTextBlockFormat()
            header.setBackground(self._code_header_bg)
            header.setLeftMargin(4)
            header.setRightMargin(4)
            header.setTopMargin(CODE_HEADER_MARGIN)
            header.setProperty(CODE_HEADER_PROPERTY, True)
            cursor.setPosition(first.position())
            cursor.setBlockFormat(header)
            cursor.setBlockCharFormat(label_fmt)
            cursor.insertText(f"  {label}", label_fmt)

    def _copy_style(self) -> str:
        return (f"QToolButton {{ padding: 0px 8px; border: 1px solid {self._muted.name()}; border-radius: 4px; }}"
                f" QToolButton:hover {{ background: {self._code_header_bg.name()}; }}")

    def _place_copy_buttons(self) -> None:
        """One Copy button per code block, on the right of its header line."""
        while len(self._copy_buttons) < len(self._code):
            i = len(self._copy_buttons)
            button = QToolButton(self.body.viewport())
            button.setText("Copy")
            button.setToolTip("Copy this code to the clipboard")
            button.setAutoRaise(True)
            button.setCursor(Qt.CursorShape.PointingHandCursor)
            button.setStyleSheet(self._copy_style())
            small = button.font()
            small.setPointSizeF(max(7.0, small.pointSizeF() * 0.85))
            button.setFont(small)
            button.clicked.connect(lambda _c=False, k=i: self.copy_code(k))
            self._copy_buttons.append(button)
        doc = self.body.document()
        layout = doc.documentLayout()
        headers = []
        block = doc.begin()
        while block.isValid():
            if block.blockFormat().boolProperty(CODE_HEADER_PROPERTY):
                headers.append(block)
            block = block.next()
        for i, button in enumerate(self._copy_buttons):
            if i >= len(self._code) or i >= len(headers):
                button.hide()
                continue
            rect = layout.blockBoundingRect(headers[i])
            size = button.sizeHint()
            x = self.body.viewport().width() - size.width() - 6
            line_top = rect.top() + CODE_HEADER_MARGIN  # the header's line, under its top margin
            line_height = rect.height() - CODE_HEADER_MARGIN
            height = size.height()
            button.setGeometry(max(0, x), max(0, int(line_top + (line_height - height) / 2)), size.width(), height)
            button.show()
            button.raise_()

    def copy_code(self, index: int) -> bool:
        """Copy code block ``index`` to the clipboard."""
        if not 0 <= index < len(self._code):
            return False
        label, code = self._code[index]
        QGuiApplication.clipboard().setText(code)
        self.codeCopied.emit(label)
        return True

    def _style_tables(self) -> None:
        """Tables get visible cell borders and padding (Qt's Markdown tables have hairlines only)."""
        border = mix(self._source_palette().color(QPalette.ColorRole.Base),
                     self._source_palette().color(QPalette.ColorRole.Text), 0.3)
        frames = list(self.body.document().rootFrame().childFrames())
        while frames:
            frame = frames.pop()
            frames.extend(frame.childFrames())
            if isinstance(frame, QTextTable):
                fmt = frame.format()
                fmt.setBorder(1)
                fmt.setBorderBrush(border)
                fmt.setBorderStyle(QTextFrameFormat.BorderStyle.BorderStyle_Solid)
                fmt.setBorderCollapse(True)
                fmt.setCellPadding(5)
                fmt.setCellSpacing(0)
                frame.setFormat(fmt)
                cursor = QTextCursor(self.body.document())
                for r in range(frame.rows()):
                    for c in range(frame.columns()):
                        cell = frame.cellAt(r, c)
                        cursor.setPosition(cell.firstPosition())
                        # Qt's Markdown reader puts an empty paragraph into the first cell of a table that
                        # follows a code block: drop it (the cell's text moves up into its row)
                        if not cursor.block().text() and cursor.block().next().position() < cell.lastPosition():
                            cursor.deleteChar()
                        first = cursor.blockFormat()
                        first.setTopMargin(0)
                        cursor.setBlockFormat(first)

    def _highlight_rendered(self, raw: str, offset: int = 0) -> None:
        flags = decode_draft_mask(self.draft_mask)[offset:]
        doc = self.body.document()
        mapping = align_rendered(raw, doc.toRawText())
        positions = [i for i, r in enumerate(mapping) if r >= 0 and flags[r]]
        if not positions:
            return
        fmt = _draft_format(self._draft_bg)
        cursor = QTextCursor(doc)
        cursor.beginEditBlock()
        for start, end in _runs(positions):
            cursor.setPosition(start)
            cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
            cursor.mergeCharFormat(fmt)
        cursor.endEditBlock()

    def _update_footer(self) -> None:
        if not hasattr(self, "_muted"):
            return
        pal = self._source_palette()
        if self.status == "streaming":
            self.marker.setText("Generating…")
            self.marker.setStyleSheet(f"color: {self._muted.name()}; font-style: italic;")
            self.marker.setVisible(True)
        elif self.status == "stopped":
            self.marker.setText("■ Stopped — the reply was cut short")
            self.marker.setStyleSheet(f"color: {self._muted.name()};")
            self.marker.setVisible(True)
        elif self.status == "error":
            self.marker.setText(f"⚠ Error: {self.error}" if self.error else "⚠ The reply failed")
            self.marker.setStyleSheet(f"color: {error_color(pal).name()};")
            self.marker.setVisible(True)
        else:
            self.marker.clear()
            self.marker.setVisible(False)
        show_stats = self.role == "assistant" and self.stats is not None and self.status != "streaming"
        self.stats_label.setText(self.stats.summary() if show_stats and self.stats is not None else "")
        self.stats_label.setVisible(show_stats)

    # -- editing (user messages) ------------------------------------------------------------------------
    def begin_edit(self) -> None:
        if self.role != "user" or self._editing:
            return
        self._editing = True
        self.editor.setPlainText(self.text)
        lines = max(2, min(12, self.text.count("\n") + 2))
        self.editor.setFixedHeight(lines * self.editor.fontMetrics().lineSpacing() + 16)
        self.body.setVisible(False)
        self.edit_panel.setVisible(True)
        self.editor.setFocus()
        self.editor.moveCursor(QTextCursor.MoveOperation.End)

    def cancel_edit(self) -> None:
        if not self._editing:
            return
        self._editing = False
        self.edit_panel.setVisible(False)
        self.body.setVisible(True)

    def submit_edit(self) -> None:
        """Emit ``editSubmitted``; the editor stays open until the owner re-renders (so nothing is lost
        when the owner refuses, e.g. no model is loaded)."""
        text = self.editor.toPlainText()
        if self._editing and text.strip() and self.save_edit_button.isEnabled():
            self.editSubmitted.emit(self.message_id, text)


# ---------------------------------------------------------------------------------------------------------
# the transcript


class MessageView(QScrollArea):
    """The messages of one conversation, newest at the bottom; follows the end while streaming."""

    editSubmitted = Signal(int, str)  # user message id, new text
    regenerateRequested = Signal(int)  # assistant message id
    messageCopied = Signal(int)  # message id
    branchRequested = Signal(int)  # message id: a new chat up to it
    codeCopied = Signal(str)  # language label of the code block copied

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._container = QWidget()
        self._container.setObjectName("messageContainer")
        self._layout = QVBoxLayout(self._container)
        self._layout.setContentsMargins(18, 16, 18, 16)
        self._layout.setSpacing(12)
        self.placeholder = QLabel("No messages yet.\nType below to start the conversation.")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self._layout.addWidget(self.placeholder, 1)
        self._layout.addStretch(0)
        self.setWidget(self._container)
        self._blocks: list[MessageBlock] = []
        self._by_id: dict[int, MessageBlock] = {}
        self._highlight = False
        self._actions_enabled = True
        self._stick = True
        self._restyling = False
        self._query = ""
        bar = self.verticalScrollBar()
        bar.valueChanged.connect(self._on_scrolled)
        bar.rangeChanged.connect(self._on_range)
        self._style_placeholder()

    # -- queries ----------------------------------------------------------------------------------------
    def blocks(self) -> list[MessageBlock]:
        return list(self._blocks)

    def block(self, message_id: int) -> MessageBlock | None:
        return self._by_id.get(message_id)

    def highlight_drafts(self) -> bool:
        return self._highlight

    # -- content ----------------------------------------------------------------------------------------
    def clear(self) -> None:
        for block in self._blocks:
            self._layout.removeWidget(block)
            block.hide()
            block.deleteLater()
        self._blocks.clear()
        self._by_id.clear()
        self._stick = True
        self._after_change()

    def set_messages(self, messages: Sequence[StoredMessage]) -> None:
        """Show these messages (replacing what was shown). ``system``/``tool`` messages are shown too."""
        self.setUpdatesEnabled(False)
        try:
            self.clear()
            for message in messages:
                self._add(message)
        finally:
            self.setUpdatesEnabled(True)
        self._after_change()
        self.scroll_to_bottom()

    def add_message(self, message: StoredMessage) -> MessageBlock:
        """Add a message at the end (a ``'streaming'`` one is then fed with :meth:`append`)."""
        block = self._add(message)
        self._stick = True
        self._after_change()
        return block

    def truncate_after(self, position: int) -> None:
        """Remove the blocks of messages after ``position`` (as ``ChatStore.truncate_after``)."""
        keep = [b for b in self._blocks if b.position <= position]
        for block in self._blocks:
            if block.position > position:
                self._layout.removeWidget(block)
                block.hide()
                block.deleteLater()
                self._by_id.pop(block.message_id, None)
        self._blocks = keep
        self._after_change()

    def append(self, message_id: int, pieces: Sequence[Piece]) -> None:
        """Append streamed pieces to a message's block (no-op when it is not shown)."""
        block = self._by_id.get(message_id)
        if block is None:
            return
        for piece in pieces:
            block.append(piece.text, piece.from_draft)

    def flush_pending(self) -> None:
        """Show streamed text that is still waiting for the next update (see :data:`APPEND_INTERVAL_MS`)."""
        for block in self._blocks:
            block.flush_pending()

    def finish(
        self,
        message_id: int,
        status: str,
        stats: GenerationStats | None = None,
        error: str | None = None,
    ) -> None:
        block = self._by_id.get(message_id)
        if block is not None:
            block.set_status(status, stats, error)

    def set_highlight_drafts(self, on: bool) -> None:
        """Colour the text of accepted draft tokens (off by default)."""
        self._highlight = bool(on)
        for block in self._blocks:
            block.set_highlight(self._highlight)

    def set_actions_enabled(self, enabled: bool) -> None:
        """Enable Edit / Regenerate (the chat view turns them off while a reply is generated)."""
        self._actions_enabled = bool(enabled)
        for block in self._blocks:
            block.set_actions_enabled(self._actions_enabled)

    def mark_matches(self, query: str) -> int:
        """Mark ``query`` in every message (case-insensitive) and scroll to the first match; "" clears.
        Returns the number of matches."""
        self._query = query
        color = self._match_color()
        total = 0
        first: MessageBlock | None = None
        for block in self._blocks:
            n = block.mark(query, color)
            if n and first is None:
                first = block
            total += n
        if first is not None:
            self._stick = False
            self.ensureWidgetVisible(first, 0, 40)
        return total

    def _match_color(self) -> QColor:
        base = self.palette().color(QPalette.ColorRole.Base)
        return mix(base, QColor(250, 200, 40), 0.55 if _is_dark(self.palette()) else 0.45)

    def scroll_to_bottom(self) -> None:
        self._stick = True
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    # -- internals --------------------------------------------------------------------------------------
    def _add(self, message: StoredMessage) -> MessageBlock:
        block = MessageBlock(message, self._highlight, self._container)
        block.copyClicked.connect(self._copy)
        block.editSubmitted.connect(self.editSubmitted)
        block.regenerateClicked.connect(self.regenerateRequested)
        block.branchClicked.connect(self.branchRequested)
        block.codeCopied.connect(self.codeCopied)
        if self._query:
            block.mark(self._query, self._match_color())
        block.set_actions_enabled(self._actions_enabled)
        self._layout.insertWidget(self._layout.count() - 1, block)
        self._blocks.append(block)
        self._by_id[message.id] = block
        return block

    def _after_change(self) -> None:
        self.placeholder.setVisible(not self._blocks)
        self._layout.setStretch(self._layout.count() - 1, 0 if not self._blocks else 1)
        last_assistant = next((b for b in reversed(self._blocks) if b.role == "assistant"), None)
        for block in self._blocks:
            block.set_regenerate_visible(block is last_assistant and block is self._blocks[-1])

    def _copy(self, message_id: int) -> None:
        block = self._by_id.get(message_id)
        if block is None:
            return
        QGuiApplication.clipboard().setText(block.text)
        self.messageCopied.emit(message_id)

    def _on_scrolled(self, value: int) -> None:
        self._stick = value >= self.verticalScrollBar().maximum() - 8

    def _on_range(self, _minimum: int, maximum: int) -> None:
        if self._stick:
            self.verticalScrollBar().setValue(maximum)

    def _style_placeholder(self) -> None:
        self.placeholder.setStyleSheet(f"color: {muted_color(self.palette()).name()};")
        font = QFont(self.placeholder.font())
        font.setPointSizeF(font.pointSizeF() * 1.1)
        self.placeholder.setFont(font)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and not self._restyling:
            # later: the blocks read their parent's palette, which may not have changed yet
            QTimer.singleShot(0, self._restyle)

    def _restyle(self) -> None:
        self._restyling = True
        try:
            self._style_placeholder()
            for block in self._blocks:
                block.apply_palette()
        finally:
            self._restyling = False
