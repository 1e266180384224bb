"""The chat view with a real engine (tiny random-weight models) behind a real EngineBridge."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, Qt, Slot
from PySide6.QtGui import QGuiApplication, QTextDocument

from app.engine.sampling import SamplingParams
from app.engine.session import ModelSettings
from app.store.chats import ChatStore, StoredMessage, decode_draft_mask, encode_draft_mask, make_title
from app.store.db import open_database
from app.ui.bridge import EngineBridge
from app.ui.chat_view import NO_MODEL_HINT, ChatView
from app.ui.code_highlight import fenced_block_lines
from app.ui.conversation_list import UNTITLED, ConversationList
from app.ui.message_view import (
    DRAFT_PROPERTY,
    MARKDOWN_STREAM_LIMIT,
    MessageBlock,
    MessageView,
    align_rendered,
    draft_color,
    parse_stats,
    stats_json,
)

LOAD_TIMEOUT_MS = 60_000
REPLY_TIMEOUT_MS = 20_000


# ---------------------------------------------------------------------------------------------------------
# fixtures and helpers


@dataclass
class Settings:
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0))
    max_tokens: int = 48

    def __call__(self) -> tuple[SamplingParams, int]:
        return self.sampling, self.max_tokens


@pytest.fixture
def store(tmp_path: Path):
    conn = open_database(tmp_path / "t.sqlite3")
    yield ChatStore(conn)
    conn.close()


@pytest.fixture
def bridge(qtbot):
    b = EngineBridge()
    yield b
    assert b.shutdown()


@pytest.fixture
def settings() -> Settings:
    return Settings()


class Probe(QObject):
    """Calls ``fn`` for each streamed batch, in the GUI thread, after the view has handled it.

    (A plain Python callable connected to a signal of the worker would run in the worker's thread; a slot
    of a QObject living in the GUI thread is queued like the view's own slots, in connection order.)
    """

    def __init__(self, bridge: EngineBridge, fn: Callable[[int, list], None]) -> None:
        super().__init__()
        self.fn = fn
        bridge.events.pieces.connect(self.on_pieces)

    @Slot(int, object)
    def on_pieces(self, request_id: int, pieces: list) -> None:
        assert threading.current_thread() is threading.main_thread()
        self.fn(request_id, pieces)


def load_target(qtbot, bridge: EngineBridge, path: Path, n_ctx: int = 1024) -> None:
    with qtbot.waitSignal(bridge.events.loaded, timeout=LOAD_TIMEOUT_MS,
                          check_params_cb=lambda which, _info: which == "target"):
        bridge.load_target(ModelSettings(path, n_ctx=n_ctx, n_threads=1))


def load_draft(qtbot, bridge: EngineBridge, path: Path) -> None:
    with qtbot.waitSignal(bridge.events.loaded, timeout=LOAD_TIMEOUT_MS,
                          check_params_cb=lambda which, _info: which == "draft"):
        bridge.load_draft(ModelSettings(path, n_ctx=1024, n_threads=1))


def make_view(qtbot, store: ChatStore, bridge: EngineBridge, settings: Settings) -> ChatView:
    view = ChatView(store, bridge, settings)
    qtbot.addWidget(view)
    view.resize(1100, 760)
    view.show()
    return view


@pytest.fixture
def chat(qtbot, store, bridge, settings, tiny_target) -> ChatView:
    """A chat view whose bridge has the tiny target loaded (the view follows the `loaded` event)."""
    view = make_view(qtbot, store, bridge, settings)
    assert not view.model_ready()
    load_target(qtbot, bridge, tiny_target)
    qtbot.waitUntil(view.model_ready, timeout=5000)  # the `loaded` event reaches the view's slot
    return view


def send_and_wait(qtbot, view: ChatView, text: str, *, key: bool = False):
    """Send `text` and wait for the reply; returns generationFinished's argument."""
    view.input.setPlainText(text)
    with qtbot.waitSignal(view.generationFinished, timeout=REPLY_TIMEOUT_MS) as blocker:
        if key:
            qtbot.keyClick(view.input, Qt.Key.Key_Return)
        else:
            assert view.send()
    return blocker.args[0]


def draft_fragments(doc: QTextDocument) -> list[str]:
    """Texts of the fragments whose character format is marked as draft text."""
    out: list[str] = []
    block = doc.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            frag = it.fragment()
            if frag.isValid() and frag.charFormat().boolProperty(DRAFT_PROPERTY):
                out.append(frag.text())
            it += 1
        block = block.next()
    return out


def stored(message_id: int, blocks: list[MessageBlock]) -> MessageBlock:
    return next(b for b in blocks if b.message_id == message_id)


# ---------------------------------------------------------------------------------------------------------
# sending, streaming, stats


def test_send_streams_pieces_saves_reply_and_shows_stats(qtbot, store, bridge, settings, chat, tiny_draft):
    load_draft(qtbot, bridge, tiny_draft)
    started: list[bool] = []
    chat.generationStarted.connect(lambda: started.append(True))
    seen: list[tuple[int, int]] = []  # (request id, length of the reply shown after these pieces)

    def on_pieces(request_id, _pieces):
        blocks = chat.message_view.blocks()
        seen.append((request_id, len(blocks[-1].text)))

    probe = Probe(bridge, on_pieces)  # noqa: F841 - runs after the view's own slot: the view already has the pieces
    text = "the first value of the list"
    stats = send_and_wait(qtbot, chat, text, key=True)  # Enter sends

    assert started == [True]
    assert chat.input.toPlainText() == ""
    assert stats is not None and stats.generated_tokens > 0
    assert stats.drafted > 0  # the draft model was used
    assert seen and seen[0][1] > 0, "pieces appeared while streaming"
    cid = chat.current_conversation_id()
    messages = store.get_messages(cid)
    assert [m.role for m in messages] == ["user", "assistant"]
    user, reply = messages
    assert user.content == text
    assert store.get_conversation(cid).title == make_title(text)
    assert reply.status == "complete"
    assert reply.content and reply.draft_mask is not None
    assert len(decode_draft_mask(reply.draft_mask)) == len(reply.content)
    saved, error = parse_stats(reply.stats_json)
    assert error is None and saved is not None
    assert saved.generated_tokens == stats.generated_tokens and saved.accepted == stats.accepted

    blocks = chat.message_view.blocks()
    assert [b.role for b in blocks] == ["user", "assistant"]
    assert blocks[0].text == text
    assert blocks[1].text == reply.content
    assert blocks[1].stats_label.isVisible()
    line = blocks[1].stats_label.text()
    assert line == stats.summary()
    assert "tok/s" in line and "tokens" in line and "s to first token" in line
    assert f"accepted {stats.accepted}/{stats.drafted} draft tokens" in line
    assert not blocks[1].marker.isVisible()
    assert chat.send_button.text() == "Send"
    assert blocks[1].regenerate_button.isVisibleTo(blocks[1]) and blocks[1].regenerate_button.isEnabled()
    assert chat.conversation_list.ids() == [cid]

    # persisted stats come back in a fresh view of the same store
    again = make_view(qtbot, store, bridge, settings)
    assert again.current_conversation_id() == cid
    shown = again.message_view.blocks()
    assert shown[-1].stats_label.text() == stats.summary()
    assert shown[-1].text == reply.content


def test_request_uses_history_and_system_prompt(qtbot, store, bridge, settings, chat):
    sent = []
    original = bridge.generate

    def spy(request):
        sent.append(request)
        return original(request)

    bridge.generate = spy
    chat.set_system_prompt_expanded(True)
    chat.system_prompt_edit.setPlainText("You are terse.")
    send_and_wait(qtbot, chat, "hello there")
    send_and_wait(qtbot, chat, "and the code")
    cid = chat.current_conversation_id()
    assert store.get_conversation(cid).system_prompt == "You are terse."
    first, second = sent
    assert first.system_prompt == "You are terse." and second.system_prompt == "You are terse."
    assert [(m.role, m.content) for m in first.messages] == [("user", "hello there")]
    reply = store.get_messages(cid)[1]
    assert [(m.role, m.content) for m in second.messages] == [
        ("user", "hello there"), ("assistant", reply.content), ("user", "and the code")
    ]
    assert first.sampling.temperature == 0.0 and first.max_tokens == settings.max_tokens


def test_stop_mid_stream_keeps_reply_marked_stopped(qtbot, store, bridge, settings, chat):
    settings.max_tokens = 2000
    calls = []

    def on_pieces(_rid, _pieces):
        calls.append(1)
        if len(calls) == 1:
            assert chat.is_generating() and chat.send_button.text() == "Stop"
            # a second send while streaming is refused and keeps its text
            chat.input.setPlainText("next question")
            assert not chat.send()
            assert chat.input.toPlainText() == "next question"
            qtbot.mouseClick(chat.send_button, Qt.MouseButton.LeftButton)  # Send is now Stop

    probe = Probe(bridge, on_pieces)  # noqa: F841 - kept alive for the test
    stats = send_and_wait(qtbot, chat, "hello there")
    assert stats is not None and stats.stop_reason == "cancelled"
    assert stats.generated_tokens < 900  # it would have run until the context was full
    assert chat.input.toPlainText() == "next question"
    reply = store.get_messages(chat.current_conversation_id())[-1]
    assert reply.status == "stopped"
    assert reply.content  # what was generated is kept
    block = chat.message_view.blocks()[-1]
    assert block.text == reply.content
    assert block.marker.isVisible() and "Stopped" in block.marker.text()
    assert block.stats_label.text() == stats.summary()
    assert not chat.is_generating() and chat.send_button.text() == "Send"

    # the stopped reply can be regenerated from its own block
    assert block.regenerate_button.isVisibleTo(block) and block.regenerate_button.isEnabled()


def test_regenerate_replaces_last_reply(qtbot, store, bridge, settings, chat):
    send_and_wait(qtbot, chat, "hello there")
    cid = chat.current_conversation_id()
    first_reply = store.get_messages(cid)[-1]
    block = chat.message_view.blocks()[-1]
    assert block.regenerate_button.isVisibleTo(block)
    assert not chat.message_view.blocks()[0].regenerate_button.isVisibleTo(chat.message_view.blocks()[0])
    with qtbot.waitSignal(chat.generationFinished, timeout=REPLY_TIMEOUT_MS):
        qtbot.mouseClick(block.regenerate_button, Qt.MouseButton.LeftButton)
    messages = store.get_messages(cid)
    assert [m.role for m in messages] == ["user", "assistant"]
    # (SQLite may give the new reply the old id: it was deleted, then a new one was inserted)
    assert messages[-1].created_at > first_reply.created_at and messages[-1].status == "complete"
    blocks = chat.message_view.blocks()
    assert [b.message_id for b in blocks] == [m.id for m in messages]
    assert blocks[-1].text == messages[-1].content
    # Regenerate is in one place only: the last reply's block (the composer has Send / Stop)
    from PySide6.QtWidgets import QAbstractButton

    labels = [b.text() for b in chat.findChildren(QAbstractButton) if b.isVisibleTo(chat)]
    assert labels.count("Regenerate") == 1
    with qtbot.waitSignal(chat.generationFinished, timeout=REPLY_TIMEOUT_MS):
        qtbot.mouseClick(blocks[-1].regenerate_button, Qt.MouseButton.LeftButton)
    again = store.get_messages(cid)
    assert len(again) == 2 and again[-1].created_at > messages[-1].created_at


def test_edit_past_user_message_truncates_and_regenerates(qtbot, store, bridge, settings, chat):
    send_and_wait(qtbot, chat, "hello there")
    send_and_wait(qtbot, chat, "and the code")
    cid = chat.current_conversation_id()
    assert len(store.get_messages(cid)) == 4
    first_user = chat.message_view.blocks()[0]
    assert first_user.role == "user" and first_user.edit_button.isVisibleTo(first_user)
    assert not chat.message_view.blocks()[1].edit_button.isVisibleTo(chat.message_view.blocks()[1])
    qtbot.mouseClick(first_user.edit_button, Qt.MouseButton.LeftButton)
    assert first_user.editing and first_user.editor.toPlainText() == "hello there"
    first_user.editor.setPlainText("return the data")
    with qtbot.waitSignal(chat.generationFinished, timeout=REPLY_TIMEOUT_MS):
        qtbot.keyClick(first_user.editor, Qt.Key.Key_Return)  # Enter in the editor submits
    messages = store.get_messages(cid)
    assert [(m.role, m.status) for m in messages] == [("user", "complete"), ("assistant", "complete")]
    assert messages[0].content == "return the data" and messages[0].id == first_user.message_id
    blocks = chat.message_view.blocks()
    assert [b.message_id for b in blocks] == [m.id for m in messages]
    assert blocks[0].text == "return the data" and not blocks[0].editing
    assert blocks[1].text == messages[1].content


def test_edit_refused_without_model_keeps_editor(qtbot, store, bridge, settings):
    view = make_view(qtbot, store, bridge, settings)
    conv = store.create_conversation()
    user = store.append_message(conv.id, "user", "hello there")
    store.append_message(conv.id, "assistant", "hi")
    view.conversation_list.refresh()
    view.open_conversation(conv.id)
    block = view.message_view.block(user.id)
    block.begin_edit()
    block.editor.setPlainText("changed")
    block.submit_edit()
    assert block.editing and block.editor.toPlainText() == "changed"
    assert [m.content for m in store.get_messages(conv.id)] == ["hello there", "hi"]
    assert NO_MODEL_HINT in view.notice.text()


# ---------------------------------------------------------------------------------------------------------
# refusals and errors


def test_send_without_model_keeps_text(qtbot, store, bridge, settings):
    view = make_view(qtbot, store, bridge, settings)
    assert not view.model_ready()
    assert not view.send_button.isEnabled()
    assert NO_MODEL_HINT in view.send_button.toolTip()
    assert NO_MODEL_HINT in view.input.placeholderText()
    view.input.setPlainText("hello there")
    with qtbot.waitSignal(view.statusMessage) as blocker:
        qtbot.keyClick(view.input, Qt.Key.Key_Return)
    assert NO_MODEL_HINT in blocker.args[0]
    assert view.input.toPlainText() == "hello there"
    assert view.notice.isVisible() and NO_MODEL_HINT in view.notice.text()
    assert store.list_conversations() == []
    assert not view.is_generating()


def test_invalid_settings_keep_text(qtbot, store, bridge, settings, chat):
    settings.sampling = SamplingParams(temperature=-1.0)
    chat.input.setPlainText("hello there")
    assert not chat.send()
    assert chat.input.toPlainText() == "hello there"
    assert "temperature" in chat.notice.text()
    assert store.list_conversations() == []


def test_engine_error_shown_inline_and_text_restored(qtbot, store, bridge, settings, tiny_target):
    view = make_view(qtbot, store, bridge, settings)
    load_target(qtbot, bridge, tiny_target, n_ctx=64)
    qtbot.waitUntil(view.model_ready, timeout=5000)
    long_text = "hello there " * 200
    view.input.setPlainText(long_text)
    with qtbot.waitSignal(view.generationFinished, timeout=REPLY_TIMEOUT_MS) as blocker:
        assert view.send()
    assert blocker.args[0] is None  # None on error
    cid = view.current_conversation_id()
    user, reply = store.get_messages(cid)
    assert user.content == long_text
    assert reply.status == "error" and reply.content == ""
    _stats, error = parse_stats(reply.stats_json)
    assert error and "context" in error
    block = view.message_view.block(reply.id)
    assert block.marker.isVisible() and "Error" in block.marker.text() and "context" in block.marker.text()
    assert view.notice.isVisible() and "context" in view.notice.text()
    assert view.input.toPlainText() == long_text  # not lost
    assert not view.is_generating() and view.send_button.text() == "Send"

    # sending again replaces the failed turn instead of repeating it
    settings.max_tokens = 4  # (generation in a tiny context is slow)
    view.input.setPlainText("hi")
    with qtbot.waitSignal(view.generationFinished, timeout=REPLY_TIMEOUT_MS) as blocker:
        assert view.send()
    messages = store.get_messages(cid)
    assert [m.content for m in messages if m.role == "user"] == ["hi"]
    assert [b.message_id for b in view.message_view.blocks()] == [m.id for m in messages]
    if blocker.args[0] is not None:
        assert messages[-1].status == "complete"


# ---------------------------------------------------------------------------------------------------------
# switching conversations while streaming


def test_stream_keeps_saving_to_its_conversation_when_switching(qtbot, store, bridge, settings, chat):
    send_and_wait(qtbot, chat, "hello there")
    first = chat.current_conversation_id()
    settings.max_tokens = 2000
    calls = []
    other: list[int] = []

    def on_pieces(_rid, _pieces):
        calls.append(1)
        if len(calls) == 1:
            other.append(chat.new_conversation())  # switch away while streaming
            assert chat.current_conversation_id() == other[0]
            assert chat.message_view.blocks() == []
        elif len(calls) == 2:
            chat.conversation_list.select(first)  # and back: the live reply is shown, still streaming
            live = chat.message_view.blocks()[-1]
            assert live.streaming and live.message_id == chat.streaming_message_id()
        elif len(calls) == 3:
            chat.stop()

    probe = Probe(bridge, on_pieces)  # noqa: F841 - kept alive for the test
    chat.input.setPlainText("def print the name")
    with qtbot.waitSignal(chat.generationFinished, timeout=REPLY_TIMEOUT_MS):
        assert chat.send()
    assert len(calls) >= 3
    messages = store.get_messages(first)
    assert [m.role for m in messages] == ["user", "assistant"] * 2
    reply = messages[-1]
    assert reply.status == "stopped" and reply.content
    assert store.get_messages(other[0]) == []
    assert chat.current_conversation_id() == first
    block = chat.message_view.blocks()[-1]
    assert block.message_id == reply.id
    assert block.text == reply.content  # nothing lost or doubled while it was not shown
    assert "Stopped" in block.marker.text()


def test_deleting_streaming_conversation_stops_it(qtbot, store, bridge, settings, chat):
    settings.max_tokens = 2000
    chat.conversation_list.confirm = lambda *_: True
    done = []

    def on_pieces(_rid, _pieces):
        if not done:
            done.append(chat.current_conversation_id())
            assert chat.conversation_list.delete()

    probe = Probe(bridge, on_pieces)  # noqa: F841 - kept alive for the test
    chat.input.setPlainText("hello there")
    with qtbot.waitSignal(chat.generationFinished, timeout=REPLY_TIMEOUT_MS) as blocker:
        assert chat.send()
    assert blocker.args[0].stop_reason == "cancelled"
    assert store.get_conversation(done[0]) is None
    assert chat.current_conversation_id() is None and chat.message_view.blocks() == []


# ---------------------------------------------------------------------------------------------------------
# draft highlighting


def test_draft_highlighting_toggle(qtbot, store, bridge, settings, chat, tiny_draft):
    load_draft(qtbot, bridge, tiny_draft)
    settings.max_tokens = 64
    stats = send_and_wait(qtbot, chat, "the first value of the list")
    assert stats.accepted > 0
    block = chat.message_view.blocks()[-1]
    assert block.has_draft_text()
    assert not chat.message_view.highlight_drafts()  # off by default
    assert draft_fragments(block.document) == []
    with qtbot.waitSignal(chat.highlightDraftsChanged, check_params_cb=lambda on: on is True):
        chat.set_highlight_drafts(True)
    assert chat.highlight_button.isChecked()
    marked = draft_fragments(block.document)
    assert marked, "accepted draft text is shaded"
    color = block.draft_background
    assert color == draft_color(chat.message_view.palette())
    frag_formats = []
    b = block.document.begin()
    while b.isValid():
        it = b.begin()
        while not it.atEnd():
            f = it.fragment()
            if f.charFormat().boolProperty(DRAFT_PROPERTY):
                frag_formats.append(f.charFormat().background().color())
            it += 1
        b = b.next()
    assert all(c == color for c in frag_formats)
    assert sum(map(len, marked)) <= len(block.text)
    qtbot.mouseClick(chat.highlight_button, Qt.MouseButton.LeftButton)  # off again
    assert not chat.message_view.highlight_drafts()
    assert draft_fragments(block.document) == []


def test_highlight_maps_markdown_back_to_draft_characters(qtbot):
    text = "Some **bold** words and `code`.\n\n```python\nx = 1\n```\n"
    flags = [False] * len(text)
    for word in ("bold", "code", "x = 1"):
        start = text.index(word)
        for i in range(start, start + len(word)):
            flags[i] = True
    message = StoredMessage(1, 1, 0, "assistant", text, "complete", None, encode_draft_mask(flags), 0.0, 0.0)
    view = MessageView()
    qtbot.addWidget(view)
    view.set_messages([message])
    block = view.blocks()[0]
    assert "**" not in block.document.toPlainText()  # rendered as Markdown
    assert draft_fragments(block.document) == []
    view.set_highlight_drafts(True)
    assert "".join(draft_fragments(block.document)) == "boldcodex = 1"
    # a new block added while highlighting is on is highlighted at once
    view.add_message(StoredMessage(2, 1, 1, "assistant", "plain **x**", "complete", None, "8,1,2", 0.0, 0.0))
    assert draft_fragments(view.blocks()[1].document) == ["x"]


def test_streamed_draft_pieces_highlighted_while_streaming(qtbot):
    from app.engine.speculative import Piece

    view = MessageView()
    qtbot.addWidget(view)
    view.set_highlight_drafts(True)
    view.add_message(StoredMessage(5, 1, 0, "assistant", "", "streaming", None, "", 0.0, 0.0))
    view.append(5, [Piece("target ", False), Piece("draft", True), Piece(" more", False)])
    block = view.block(5)
    assert block.streaming and block.marker.text().startswith("Generating")
    qtbot.waitUntil(lambda: "".join(draft_fragments(block.document)) == "draft", timeout=2000)
    view.finish(5, "complete")
    assert not block.marker.isVisible()
    assert "".join(draft_fragments(block.document)) == "draft"
    assert block.draft_mask == "7,5,5"


def test_align_rendered():
    raw = "Hello **big** [link](http://example.com/a/very/long/path/indeed) end\nnext"
    doc = QTextDocument()
    doc.setMarkdown(raw)
    rendered = doc.toRawText()
    mapping = align_rendered(raw, rendered)
    shown = "".join(raw[i] for i in mapping if i >= 0)
    assert shown.replace("\n", " ") == rendered.replace("\u2029", "")
    for i, r in enumerate(mapping):
        if r >= 0:
            assert raw[r] == rendered[i] or (raw[r] == "\n" and rendered[i] == " ")
    mapped = [m for m in mapping if m >= 0]
    assert mapped == sorted(set(mapped))  # strictly increasing


# ---------------------------------------------------------------------------------------------------------
# the transcript


def test_markers_and_stats_of_stored_messages(qtbot, store, bridge, settings):
    conv = store.create_conversation()
    store.append_message(conv.id, "user", "question")
    store.append_message(conv.id, "assistant", "partial answer", status="stopped")
    store.append_message(conv.id, "user", "again")
    store.append_message(conv.id, "assistant", "", status="error", stats_json='{"error": "out of memory"}')
    store.append_message(conv.id, "user", "once more")
    store.begin_reply(conv.id).append("left by a crash")  # never finished
    store.recover_interrupted()
    view = make_view(qtbot, store, bridge, settings)
    assert view.current_conversation_id() == conv.id
    blocks = view.message_view.blocks()
    assert [b.status for b in blocks] == ["complete", "stopped", "complete", "error", "complete", "stopped"]
    assert "Stopped" in blocks[1].marker.text() and blocks[1].marker.isVisible()
    assert "out of memory" in blocks[3].marker.text()
    assert not blocks[0].marker.isVisible()
    # the Regenerate action sits on the last reply only
    visible = [b.regenerate_button.isVisibleTo(b) for b in blocks]
    assert visible == [False, False, False, False, False, True]


def test_copy_puts_raw_text_on_clipboard(qtbot):
    view = MessageView()
    qtbot.addWidget(view)
    view.set_messages([StoredMessage(1, 1, 0, "assistant", "**bold** `x`", "complete", None, None, 0.0, 0.0)])
    with qtbot.waitSignal(view.messageCopied):
        qtbot.mouseClick(view.blocks()[0].copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == "**bold** `x`"


def test_streaming_long_reply_stays_cheap(qtbot):
    """Thousands of streamed pieces (~60k characters of Markdown) do not slow the GUI down."""
    from app.engine.speculative import Piece

    view = MessageView()
    qtbot.addWidget(view)
    view.resize(800, 600)
    view.show()
    view.set_highlight_drafts(True)
    view.add_message(StoredMessage(1, 1, 0, "assistant", "", "streaming", None, "", 0.0, 0.0))
    block = view.block(1)
    text = ("Some *text* with `code` and a few more words to make a line.\n" * 1000)
    pieces = [text[i : i + 20] for i in range(0, len(text), 20)]
    t0 = time.perf_counter()
    for i, piece in enumerate(pieces):
        view.append(1, [Piece(piece, i % 3 == 0)])
        if i % 8 == 0:  # the bridge sends a batch every 1/60 s: the event loop runs in between
            QGuiApplication.processEvents()
    view.flush_pending()
    elapsed = time.perf_counter() - t0
    assert block.text == text and block._mask.length > MARKDOWN_STREAM_LIMIT
    assert elapsed < 8.0, f"streaming took {elapsed:.1f} s"
    assert draft_fragments(block.document)
    t0 = time.perf_counter()
    view.finish(1, "complete")
    assert time.perf_counter() - t0 < 3.0
    assert "*text*" not in block.document.toPlainText()  # Markdown rendered at the end
    assert "".join(draft_fragments(block.document)).count("S") > 0


def test_code_blocks_rendered_with_background(qtbot):
    from PySide6.QtGui import QTextFormat

    view = MessageView()
    qtbot.addWidget(view)
    text = "Here:\n\n```python\nprint('hi')\n```\n"
    view.set_messages([StoredMessage(1, 1, 0, "assistant", text, "complete", None, None, 0.0, 0.0)])
    doc = view.blocks()[0].document
    code = [b for b in _blocks(doc) if b.blockFormat().hasProperty(QTextFormat.Property.BlockCodeLanguage)]
    assert code and code[0].text() == "print('hi')"
    assert code[0].blockFormat().background().style() != Qt.BrushStyle.NoBrush


def test_back_to_back_fences_stay_two_code_blocks(qtbot):
    view = MessageView()
    qtbot.addWidget(view)
    text = ("Two files:\n\n```python\na = 1\n\nb = 2\n```\n```python\nc = 3\n```\n~~~\nplain\n~~~\n"
            "- in a list:\n  ```js\n  x()\n  ```\n")
    view.set_messages([StoredMessage(1, 1, 0, "assistant", text, "complete", None, None, 0.0, 0.0)])
    block = view.blocks()[0]
    assert block.code_blocks() == [("Python", "a = 1\n\nb = 2"), ("Python", "c = 3"), ("code", "plain"),
                                   ("JavaScript", "x()")]
    assert len(block.copy_buttons()) == 4


@pytest.mark.parametrize("text, sizes", [
    ("```py\na\n```\n```py\nb\nc\n```\n", [1, 2]),
    ("```\n```\n~~~\nx\n~~~", [1]),  # an empty fence renders nothing
    ("````\n```\nstill code\n````\n", [2]),  # a shorter fence inside a longer one is code
    ("> ```\n> q\n> ```\n", [1]),
    ("```py\nstreaming\nstill\n", [2]),  # not closed yet: runs to the end
    ("``` not `a fence`\nprose\n", []),
])
def test_fenced_block_lines(text, sizes):
    assert fenced_block_lines(text) == sizes


def _blocks(doc: QTextDocument):
    b = doc.begin()
    while b.isValid():
        yield b
        b = b.next()


def test_user_text_is_not_markdown(qtbot):
    view = MessageView()
    qtbot.addWidget(view)
    view.set_messages([StoredMessage(1, 1, 0, "user", "a **b** <i>c</i>", "complete", None, None, 0.0, 0.0)])
    assert view.blocks()[0].document.toPlainText() == "a **b** <i>c</i>"
    view2 = MessageView()
    qtbot.addWidget(view2)
    view2.set_messages([StoredMessage(1, 1, 0, "assistant", "<i>c</i>", "complete", None, None, 0.0, 0.0)])
    assert view2.blocks()[0].document.toPlainText() == "<i>c</i>"  # raw HTML is shown, not interpreted


# ---------------------------------------------------------------------------------------------------------
# the conversation list


def test_conversation_list_rename_delete_search(qtbot, store):
    clock = iter(range(1000, 2000))
    store._now = lambda: float(next(clock))
    a = store.create_conversation()
    store.append_message(a.id, "user", "apples and pears")
    b = store.create_conversation()
    store.append_message(b.id, "user", "bananas")
    c = store.create_conversation()
    store.append_message(c.id, "user", "cherries")
    store.append_message(c.id, "assistant", "I like BANANAS too")
    clist = ConversationList(store)
    qtbot.addWidget(clist)
    clist.show()
    assert clist.ids() == [c.id, b.id, a.id]  # newest first
    assert clist.item(a.id).text() == "apples and pears"

    selected: list[int] = []
    clist.conversationSelected.connect(selected.append)
    assert clist.select(b.id)
    assert selected == [b.id] and clist.current_id() == b.id
    assert clist.select(b.id) and selected == [b.id]  # no signal when nothing changes

    # search: titles and message contents, case-insensitive, after a short pause in typing
    qtbot.keyClicks(clist.search_box, "banana")
    qtbot.waitUntil(lambda: clist.ids() == [c.id, b.id], timeout=3000)
    clist.set_filter("zzz")
    assert clist.ids() == [] and clist.empty_label.text() == "No matching chats"
    clist.set_filter("")
    assert clist.ids() == [c.id, b.id, a.id]

    # rename: programmatically and with the inline editor
    renamed: list[tuple[int, str]] = []
    clist.conversationRenamed.connect(lambda cid, t: renamed.append((cid, t)))
    assert clist.rename(a.id, "  Fruit   salad ")
    assert store.get_conversation(a.id).title == "Fruit salad"
    assert not clist.rename(a.id, "   ")
    assert clist.start_rename(b.id)
    clist.item(b.id).setText("Yellow things")  # what the inline editor commits
    qtbot.waitUntil(lambda: store.get_conversation(b.id).title == "Yellow things", timeout=3000)
    assert renamed == [(a.id, "Fruit salad"), (b.id, "Yellow things")]

    # delete: asks first; a refusal deletes nothing
    asked: list[str] = []
    clist.confirm = lambda title, question: asked.append(question) or False
    assert clist.select(b.id)
    assert not clist.delete()
    assert store.get_conversation(b.id) is not None and "Yellow things" in asked[0]
    deleted: list[int] = []
    clist.conversationDeleted.connect(deleted.append)
    clist.confirm = lambda *_: True
    selected.clear()
    assert clist.delete()
    assert deleted == [b.id] and store.get_conversation(b.id) is None
    assert b.id not in clist.ids()
    assert clist.current_id() in (a.id, c.id) and selected == [clist.current_id()]  # a neighbour


def test_conversation_list_new_reuses_empty_current(qtbot, store):
    clist = ConversationList(store)
    qtbot.addWidget(clist)
    assert clist.ids() == [] and clist.empty_label.text() == "No chats yet"
    assert not clist.delete_button.isEnabled()
    first = clist.new_conversation()
    assert clist.ids() == [first] and clist.current_id() == first
    assert clist.item(first).text() == UNTITLED
    assert clist.new_conversation() == first  # still empty: reused, no clutter
    store.append_message(first, "user", "hello")
    second = clist.new_conversation()
    assert second != first and clist.current_id() == second
    assert clist.delete_button.isEnabled()


def test_chat_view_rename_delete_through_list(qtbot, store, bridge, settings):
    conv = store.create_conversation(system_prompt="Be brief.")
    store.append_message(conv.id, "user", "hello there")
    other = store.create_conversation()
    store.append_message(other.id, "user", "second chat")
    view = make_view(qtbot, store, bridge, settings)
    assert view.current_conversation_id() == other.id
    view.conversation_list.select(conv.id)
    assert view.current_conversation_id() == conv.id
    assert view.system_prompt() == "Be brief."
    assert view.title_label.text() == "hello there"
    view.conversation_list.rename(conv.id, "Greetings")
    assert view.title_label.text() == "Greetings"
    view.conversation_list.confirm = lambda *_: True
    assert view.conversation_list.delete(conv.id)
    assert view.current_conversation_id() == other.id
    assert [b.text for b in view.message_view.blocks()] == ["second chat"]
    assert view.conversation_list.delete(other.id)
    assert view.current_conversation_id() is None and view.message_view.blocks() == []
    assert view.title_label.text() == UNTITLED


def test_stats_notes_are_stored_with_the_reply_and_shown_in_its_summary():
    from app.engine.speculative import GenerationStats

    stats = GenerationStats(generated_tokens=5, drafted=4, accepted=2, accepted_by_source={"chat": 2},
                            notes=["the draft model's context (256 tokens) is full: the rest is decoded without drafting"])
    saved, error = parse_stats(stats_json(stats))
    assert error is None and saved is not None
    assert saved.notes == stats.notes and saved.accepted_by_source == {"chat": 2}
    assert "context (256 tokens) is full" in saved.summary()
    assert parse_stats('{"notes": [1, 2], "generated_tokens": 3}')[0].notes == []  # a bad list is ignored
