"""Pinned conversations, whole-conversation writes, branches, and the Markdown / JSON exports and import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.store.chat_export import ChatImportError, from_json, import_json, to_json, to_markdown
from app.store.chats import BRANCH_SUFFIX, ChatStore, MessageData
from app.store.db import open_database


@pytest.fixture
def store(tmp_path: Path):
    conn = open_database(tmp_path / "t.sqlite3")
    t = [1000.0]

    def now() -> float:
        t[0] += 1.0
        return t[0]

    yield ChatStore(conn, now=now)
    conn.close()


def _chat(store: ChatStore, title: str = "Chat") -> int:
    c = store.create_conversation(title, "Be brief.")
    store.append_message(c.id, "user", "What is **2+2**?")
    store.append_message(c.id, "assistant", "```python\nprint(4)\n```", stats_json='{"tokens": 5}',
                         draft_mask="3,4,12")
    store.append_message(c.id, "user", "And 3+3?")
    store.append_message(c.id, "assistant", "6", status="stopped")
    return c.id


def test_pinned_conversations_come_first_and_keep_their_time(store):
    a = _chat(store, "A")
    b = _chat(store, "B")
    assert [c.id for c in store.list_conversations()] == [b, a]
    before = store.get_conversation(a).updated_at
    pinned = store.set_pinned(a, True)
    assert pinned.pinned and pinned.updated_at == before
    assert [c.id for c in store.list_conversations()] == [a, b]
    assert [c.id for c in store.search_conversations("2+2")] == [a, b]
    store.set_pinned(a, False)
    assert [c.id for c in store.list_conversations()] == [b, a]
    with pytest.raises(KeyError):
        store.set_pinned(9999, True)


def test_add_conversation_is_all_or_nothing(store):
    conv = store.add_conversation("Copy", "sys", [MessageData("user", "hi"), MessageData("assistant", "yo", "streaming")])
    assert [(m.role, m.content, m.status) for m in store.get_messages(conv.id)] == [
        ("user", "hi", "complete"), ("assistant", "yo", "stopped")]  # nothing streams into a copy
    count = len(store.list_conversations())
    with pytest.raises(ValueError):
        store.add_conversation("Bad", "", [MessageData("user", "ok"), MessageData("robot", "no")])
    assert len(store.list_conversations()) == count


def test_branch_copies_up_to_the_message_and_leaves_the_original(store):
    cid = _chat(store, "Maths")
    msgs = store.get_messages(cid)
    branch = store.branch_conversation(cid, msgs[1].id)
    assert branch.id != cid and branch.title == "Maths" + BRANCH_SUFFIX and branch.system_prompt == "Be brief."
    copied = store.get_messages(branch.id)
    assert [m.content for m in copied] == [msgs[0].content, msgs[1].content]
    assert copied[1].draft_mask == "3,4,12" and copied[1].stats_json == '{"tokens": 5}'
    assert len(store.get_messages(cid)) == 4
    other = _chat(store, "Other")
    with pytest.raises(KeyError):
        store.branch_conversation(cid, store.get_messages(other)[0].id)


def test_markdown_export(store):
    cid = _chat(store, "Maths")
    md = to_markdown(store.get_conversation(cid), store.get_messages(cid))
    assert md.startswith("# Maths\n")
    assert "> **System prompt:** Be brief." in md
    assert "## You\n\nWhat is **2+2**?" in md
    assert "## Assistant\n\n```python\nprint(4)\n```" in md
    assert "## Assistant (stopped)\n\n6" in md


def test_json_round_trip_keeps_everything(store):
    cid = _chat(store, "Maths")
    text = to_json(store.get_conversation(cid), store.get_messages(cid))
    copy = import_json(store, text)
    assert copy.id != cid and copy.title == "Maths" and copy.system_prompt == "Be brief."
    a, b = store.get_messages(cid), store.get_messages(copy.id)
    assert [(m.role, m.content, m.status, m.stats_json, m.draft_mask) for m in a] == [
        (m.role, m.content, m.status, m.stats_json, m.draft_mask) for m in b]


@pytest.mark.parametrize("text, why", [
    ("not json", "not JSON"),
    ("[]", "not a Tandem chat export"),
    ('{"format": "tandem-chat", "version": 99, "messages": []}', "version 99"),
    ('{"format": "tandem-chat", "version": 1, "messages": {}}', "'messages' must be a list"),
    ('{"format": "tandem-chat", "version": 1, "messages": [{"role": "robot", "content": "x"}]}',
     "message 1: unknown role"),
    ('{"format": "tandem-chat", "version": 1, "messages": [{"role": "user", "content": 5}]}',
     "message 1: 'content' must be text"),
    ('{"format": "tandem-chat", "version": 1, "messages": [{"role": "user", "status": "odd"}]}',
     "unknown status"),
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
])
def test_bad_imports_say_why_in_one_line_and_write_nothing(store, text, why):
    before = len(store.list_conversations())
    with pytest.raises(ChatImportError) as info:
        import_json(store, text)
    assert why in str(info.value) and "\n" not in str(info.value)
    assert len(store.list_conversations()) == before


def test_export_is_plain_json_with_the_format_name(store):
    cid = _chat(store)
    data = json.loads(to_json(store.get_conversation(cid), store.get_messages(cid)))
    assert data["format"] == "tandem-chat" and data["version"] == 1 and len(data["messages"]) == 4
    fields, messages = from_json(json.dumps(data))
    assert fields["title"] == "Chat" and messages[0].content == "What is **2+2**?"
