"""Conversations, messages, search, truncation, draft masks and crash-safe streaming saves."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.store.chats import (
    ChatStore,
    DraftMaskBuilder,
    decode_draft_mask,
    draft_spans,
    encode_draft_mask,
    make_title,
)
from app.store.db import StoreError, open_database

REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tandem.sqlite3"


@pytest.fixture
def conn(db_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_database(db_path)
    yield c
    c.close()


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def store(conn: sqlite3.Connection, wall: FakeClock) -> ChatStore:
    return ChatStore(conn, now=wall)


def other_connection(db_path: Path) -> sqlite3.Connection:
    """A plain second connection, as another thread or process would have."""
    return sqlite3.connect(db_path)


# ---------------------------------------------------------------------------------------------------------
# conversations


def test_create_get_rename_delete(store: ChatStore, wall: FakeClock) -> None:
    conv = store.create_conversation(
        system_prompt="You are terse.", model_path="/m/a.gguf", draft_path="/m/d.gguf"
    )
    assert conv.title == "" and conv.system_prompt == "You are terse."
    assert (conv.model_path, conv.draft_path, conv.settings_json) == ("/m/a.gguf", "/m/d.gguf", None)
    assert conv.created_at == conv.updated_at == wall.t
    assert store.get_conversation(conv.id) == conv

    wall.advance(5)
    renamed = store.rename_conversation(conv.id, "Named")
    assert renamed.title == "Named" and renamed.updated_at == wall.t and renamed.created_at == conv.created_at
    assert store.set_system_prompt(conv.id, "New prompt").system_prompt == "New prompt"
    models = store.set_conversation_models(conv.id, "/m/b.gguf", None)
    assert (models.model_path, models.draft_path) == ("/m/b.gguf", None)
    assert (
        store.set_conversation_settings(conv.id, '{"temperature": 0.2}').settings_json
        == '{"temperature": 0.2}'
    )

    store.append_message(conv.id, "user", "hi")
    assert store.delete_conversation(conv.id) is True
    assert store.get_conversation(conv.id) is None
    assert store.get_messages(conv.id) == []  # cascaded
    assert store.conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    assert store.delete_conversation(conv.id) is False
    with pytest.raises(KeyError):
        store.rename_conversation(conv.id, "x")
    with pytest.raises(KeyError):
        store.append_message(conv.id, "user", "x")


def test_list_newest_first(store: ChatStore, wall: FakeClock) -> None:
    a = store.create_conversation("a")
    wall.advance(1)
    b = store.create_conversation("b")
    wall.advance(1)
    c = store.create_conversation("c")
    assert [x.title for x in store.list_conversations()] == ["c", "b", "a"]
    wall.advance(1)
    store.append_message(a.id, "user", "bump")  # activity moves a conversation to the top
    assert [x.id for x in store.list_conversations()] == [a.id, c.id, b.id]
    assert [x.id for x in store.list_conversations(limit=2)] == [a.id, c.id]


def test_auto_title_from_first_user_message(store: ChatStore) -> None:
    conv = store.create_conversation()
    store.append_message(conv.id, "system", "system text is not a title")
    store.append_message(
        conv.id, "user", "\n\n  How do I   reverse a list in Python without copying it?\nThanks"
    )
    title = store.get_conversation(conv.id).title  # type: ignore[union-attr]
    assert title == "How do I reverse a list in Python…"
    assert len(title) <= 41 and "\n" not in title
    store.append_message(conv.id, "user", "second question")
    assert store.get_conversation(conv.id).title == title  # type: ignore[union-attr]
    named = store.create_conversation("My title")
    store.append_message(named.id, "user", "hello")
    assert store.get_conversation(named.id).title == "My title"  # type: ignore[union-attr]


def test_make_title() -> None:
    assert make_title("short") == "short"
    assert make_title("   \n  line two\nline three") == "line two"
    assert make_title("") == ""
    long_word = "x" * 100
    assert make_title(long_word) == "x" * 40 + "…"
    assert make_title("a" * 10 + " " + "b" * 60).startswith("a" * 10 + " " + "b")
    assert len(make_title("word " * 30)) <= 41


def test_search_title_and_content_case_insensitive(store: ChatStore, wall: FakeClock) -> None:
    a = store.create_conversation("Pasta recipes")
    store.append_message(a.id, "user", "How long to boil?")
    wall.advance(1)
    b = store.create_conversation("Math")
    store.append_message(b.id, "user", "What is 50% of 80?")
    store.append_message(b.id, "assistant", "It is 40. Also see snake_case and C:\\path")
    wall.advance(1)
    c = store.create_conversation("Straße")
    store.append_message(c.id, "user", "ÄRGER über 5 percent, snakeXcase")

    def ids(q: str) -> list[int]:
        return [x.id for x in store.search_conversations(q)]

    assert ids("pasta") == [a.id]
    assert ids("BOIL") == [a.id]
    assert ids("%") == [b.id]  # literal percent, not "anything"
    assert ids("50%") == [b.id]
    assert ids("0%") == [b.id]
    assert ids("5%") == []  # "5 percent" must not match 5%
    assert ids("_") == [b.id]  # literal underscore
    assert ids("snake_case") == [b.id]  # "snakeXcase" must not match
    assert ids("\\path") == [b.id]
    assert ids("ärger") == [c.id]  # non-ASCII case folding
    assert ids("STRASSE") == [c.id]
    assert ids("") == [c.id, b.id, a.id]
    assert ids("nothing like this") == []
    assert len(store.search_conversations("a", limit=1)) == 1


# ---------------------------------------------------------------------------------------------------------
# messages


def test_append_update_get_messages(store: ChatStore, wall: FakeClock) -> None:
    conv = store.create_conversation("t")
    m0 = store.append_message(conv.id, "user", "question")
    m1 = store.append_message(
        conv.id, "assistant", "answer", stats_json='{"tokens": 3}', draft_mask="2,4", status="complete"
    )
    assert (m0.position, m1.position) == (0, 1)
    assert m1.draft_mask == "2,4" and m1.stats_json == '{"tokens": 3}' and m1.status == "complete"
    assert store.get_messages(conv.id) == [m0, m1]

    wall.advance(3)
    m1b = store.update_message(m1.id, status="error", stats_json=None)
    assert (m1b.status, m1b.stats_json, m1b.content, m1b.draft_mask) == ("error", None, "answer", "2,4")
    assert m1b.updated_at == wall.t and m1b.created_at == m1.created_at
    assert store.get_conversation(conv.id).updated_at == wall.t  # type: ignore[union-attr]
    m1c = store.update_message(m1.id, content="edited")
    assert m1c.content == "edited" and m1c.draft_mask is None  # stale mask dropped
    m1d = store.update_message(m1.id, content="abc", draft_mask="0,3")
    assert m1d.draft_mask == "0,3"

    with pytest.raises(ValueError):
        store.append_message(conv.id, "robot", "x")
    with pytest.raises(ValueError):
        store.update_message(m1.id, status="done")  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        store.update_message(99999, content="x")
    assert store.get_message(99999) is None


def test_truncate_after(store: ChatStore) -> None:
    conv = store.create_conversation("t")
    for i in range(6):
        store.append_message(conv.id, "user" if i % 2 == 0 else "assistant", f"m{i}")
    # edit the user message at position 2 and resend: everything after it goes
    store.update_message(store.get_messages(conv.id)[2].id, content="m2 edited")
    assert store.truncate_after(conv.id, 2) == 3
    assert [m.content for m in store.get_messages(conv.id)] == ["m0", "m1", "m2 edited"]
    # new messages continue at the next position
    assert store.append_message(conv.id, "assistant", "new").position == 3
    # regenerate the last reply
    assert store.truncate_after(conv.id, 2) == 1
    assert store.truncate_after(conv.id, 10) == 0
    assert store.truncate_after(conv.id, -1) == 3
    assert store.get_messages(conv.id) == []
    with pytest.raises(KeyError):
        store.truncate_after(12345, 0)


# ---------------------------------------------------------------------------------------------------------
# draft masks


def test_draft_mask_examples() -> None:
    assert encode_draft_mask([]) == ""
    assert encode_draft_mask([False, False, False]) == "3"
    assert encode_draft_mask([True, True]) == "0,2"
    assert encode_draft_mask([False, True, True, False, False, True]) == "1,2,2,1"
    assert decode_draft_mask("1,2,2,1") == [False, True, True, False, False, True]
    assert decode_draft_mask("") == []
    assert draft_spans("3,5,2,1") == [(3, 8), (10, 11)]
    assert draft_spans("0,2") == [(0, 2)]
    for bad in ["x", "1,,2", "-1", "1,2,", " 1", "١"]:
        with pytest.raises(ValueError):
            decode_draft_mask(bad)


def test_draft_mask_round_trip_random() -> None:
    rng = random.Random(1234)
    for _ in range(300):
        n = rng.randrange(0, 60)
        p = rng.random()
        flags = [rng.random() < p for _ in range(n)]
        mask = encode_draft_mask(flags)
        assert decode_draft_mask(mask) == flags
        assert encode_draft_mask(decode_draft_mask(mask)) == mask
        assert all(flags[i] == any(s <= i < e for s, e in draft_spans(mask)) for i in range(n))


def test_draft_mask_builder_pieces() -> None:
    builder = DraftMaskBuilder()
    pieces = [("Hel", False), ("lo", True), (", w", True), ("", False), ("orld", False), ("!", True)]
    flags: list[bool] = []
    for text, from_draft in pieces:
        builder.add(len(text), from_draft)
        flags += [from_draft] * len(text)
    assert builder.length == len(flags)
    assert builder.encode() == encode_draft_mask(flags) == "3,5,4,1"


# ---------------------------------------------------------------------------------------------------------
# streaming


def test_reply_writer_throttles_with_fake_clock(store: ChatStore, db_path: Path) -> None:
    conv = store.create_conversation("t")
    store.append_message(conv.id, "user", "tell me")
    clock = FakeClock()
    writer = store.begin_reply(conv.id, flush_interval=0.5, clock=clock)
    reader = other_connection(db_path)

    def seen() -> tuple[str, str, str | None]:
        return reader.execute(
            "SELECT content, status, draft_mask FROM messages WHERE id = ?", (writer.message_id,)
        ).fetchone()

    assert seen() == ("", "streaming", "")
    assert writer.position == 1
    writer.append("Hel")
    clock.advance(0.25)
    writer.append("lo", from_draft=True)
    clock.advance(0.125)
    assert writer.flush_count == 0 and seen()[0] == ""  # < 0.5 s: nothing written yet
    clock.advance(0.125)
    writer.append(" wor", from_draft=True)  # 0.5 s since begin: written now, this piece included
    assert writer.flush_count == 1 and seen() == ("Hello wor", "streaming", "3,6")
    clock.advance(0.3)
    writer.append("ld")
    assert writer.flush_if_due() is False and writer.flush_count == 1
    clock.advance(0.3)
    assert writer.flush_if_due() is True  # a UI timer can push the tail out during a stall
    assert seen() == ("Hello world", "streaming", "3,6,2")
    clock.advance(5)
    assert writer.flush_if_due() is False  # nothing new
    for piece in ["a"] * 100:  # the first piece after the pause is written at once, the rest wait
        writer.append(piece)
    assert writer.flush_count == 3
    assert seen()[0] == "Hello worlda"
    writer.append("")  # no-op

    final = writer.finish("complete", stats_json=json.dumps({"accepted": 6}))
    assert final is not None
    assert final.content == "Hello world" + "a" * 100 == writer.text
    assert final.status == "complete" and json.loads(final.stats_json or "") == {"accepted": 6}
    assert final.draft_mask == "3,6,102"
    assert seen() == (final.content, "complete", "3,6,102")
    assert writer.finished
    with pytest.raises(StoreError):
        writer.append("more")
    with pytest.raises(StoreError):
        writer.finish()
    reader.close()


def test_reply_writer_zero_interval_and_statuses(store: ChatStore) -> None:
    conv = store.create_conversation("t")
    clock = FakeClock()
    w = store.begin_reply(conv.id, flush_interval=0, clock=clock)
    w.append("a")
    w.append("b", from_draft=True)
    assert w.flush_count == 2
    with pytest.raises(ValueError):
        w.finish("streaming")
    msg = w.finish("stopped")
    assert msg is not None and (msg.content, msg.status, msg.draft_mask) == ("ab", "stopped", "1,1")
    with pytest.raises(ValueError):
        store.begin_reply(conv.id, flush_interval=-1)


def test_reply_writer_context_manager(store: ChatStore) -> None:
    conv = store.create_conversation("t")
    with store.begin_reply(conv.id, clock=FakeClock()) as w:
        w.append("done")
    assert store.get_message(w.message_id).status == "complete"  # type: ignore[union-attr]
    with pytest.raises(RuntimeError):
        with store.begin_reply(conv.id, clock=FakeClock()) as w2:
            w2.append("partial")
            raise RuntimeError("engine failed")
    m = store.get_message(w2.message_id)
    assert m is not None and (m.content, m.status) == ("partial", "error")


def test_reply_finish_after_conversation_deleted(store: ChatStore) -> None:
    conv = store.create_conversation("t")
    w = store.begin_reply(conv.id, clock=FakeClock())
    w.append("x")
    store.delete_conversation(conv.id)
    w.flush()
    assert w.finish() is None


def test_recover_interrupted(store: ChatStore, db_path: Path) -> None:
    conv = store.create_conversation("t")
    w = store.begin_reply(conv.id, flush_interval=0, clock=FakeClock())
    w.append("half an ans")
    done = store.append_message(conv.id, "user", "complete one")
    # the app dies here; on the next start:
    conn2 = open_database(db_path)
    store2 = ChatStore(conn2)
    assert store2.recover_interrupted() == 1
    assert store2.recover_interrupted() == 0
    m = store2.get_message(w.message_id)
    assert m is not None and (m.content, m.status, m.draft_mask) == ("half an ans", "stopped", "11")
    assert store2.get_message(done.id).status == "complete"  # type: ignore[union-attr]
    conn2.close()


# ---------------------------------------------------------------------------------------------------------
# a real kill


CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from app.store.db import open_database
    from app.store.chats import ChatStore

    db_path, log_path = Path(sys.argv[1]), sys.argv[2]
    store = ChatStore(open_database(db_path))
    conv = store.create_conversation("killed chat")
    store.append_message(conv.id, "user", "write forever")
    writer = store.begin_reply(conv.id, flush_interval=0.2)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for i in range(1_000_000):
        # logged just before the append: a logged piece may be lost, a saved one is always logged
        os.write(log, f"{i} {time.monotonic()!r}\\n".encode())
        writer.append(f"<{i}>", from_draft=i % 3 == 0)
        time.sleep(0.005)
    """
)


def piece(i: int) -> str:
    return f"<{i}>"


def test_killed_process_keeps_partial_reply(tmp_path: Path) -> None:
    db_path = tmp_path / "tandem.sqlite3"
    log_path = tmp_path / "appended.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db_path), str(log_path)],
        cwd=REPO_ROOT,
        env=env,
        stderr=subprocess.PIPE,
    )
    reader: sqlite3.Connection | None = None
    try:
        deadline = time.monotonic() + 60
        seen = ""
        while not seen:
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "the child never saved any reply text"
            if reader is None and db_path.exists():
                reader = sqlite3.connect(db_path, timeout=5)
            if reader is not None:
                try:
                    row = reader.execute(
                        "SELECT content FROM messages WHERE role = 'assistant' AND status = 'streaming'"
                    ).fetchone()
                except sqlite3.OperationalError:  # tables not created yet
                    row = None
                seen = row[0] if row else ""
            time.sleep(0.02)
        time.sleep(0.37)  # let it stream on a little, then kill it mid-flight
    finally:
        child.kill()
        child.wait(timeout=30)
        if child.stderr:
            child.stderr.close()
        if reader is not None:
            reader.close()
    assert child.returncode != 0

    conn = open_database(db_path)
    try:
        store = ChatStore(conn)
        assert store.recover_interrupted() == 1
        (conv,) = store.list_conversations()
        assert conv.title == "killed chat"
        user, reply = store.get_messages(conv.id)
        assert (user.content, reply.role, reply.status) == ("write forever", "assistant", "stopped")
    finally:
        conn.close()

    appended: list[tuple[int, float]] = []
    for line in log_path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            appended.append((int(parts[0]), float(parts[1])))
    assert appended and [i for i, _ in appended] == list(range(len(appended)))

    # what was saved is exactly the first n pieces, with a matching draft mask
    n_saved = 0
    text = ""
    while text + piece(n_saved) == reply.content[: len(text) + len(piece(n_saved))] and len(text) < len(
        reply.content
    ):
        text += piece(n_saved)
        n_saved += 1
    assert text == reply.content and n_saved >= 1
    flags = [i % 3 == 0 for i in range(n_saved) for _ in piece(i)]
    assert decode_draft_mask(reply.draft_mask or "") == flags
    assert seen and reply.content.startswith(seen)

    assert n_saved <= len(appended)
    # lost: pieces appended (logged) but not saved. They all came after the last save, and a piece
    # arriving 0.2 s after it would have been saved, so they span less than one flush interval
    # (plus, at most, the one loop step during which the kill landed).
    times = dict(appended)
    lost = [i for i, _ in appended if i >= n_saved]
    if lost:
        span = times[lost[-1]] - times[lost[0]]
        assert span < 0.2 + 0.15, f"lost {len(lost)} pieces appended over {span:.3f} s"
