"""What a chat turn is and how it ends, without Qt (the chat window only shows what these decide)."""

from __future__ import annotations

from app.engine.chat_template import Message
from app.engine.speculative import GenerationResult, GenerationStats
from app.service import chat_turn
from app.service.app_requests import stopped_before_start
from app.service.engine_service import CANCELLED, DONE, FAILED
from app.store.chats import ChatStore
from app.store.db import open_database


def _store(tmp_path):
    return ChatStore(open_database(tmp_path / "chats.sqlite3"))


def test_turn_messages_keep_finished_turns_and_merge_neighbours(tmp_path):
    store = _store(tmp_path)
    cid = store.create_conversation().id
    store.append_message(cid, "user", "one")
    failed = store.append_message(cid, "assistant", "", status="error")
    store.append_message(cid, "user", "two")
    store.append_message(cid, "assistant", "half", status="stopped")
    store.append_message(cid, "user", "three")
    writer = store.begin_reply(cid)
    msgs = chat_turn.turn_messages(store.get_messages(cid), exclude=writer.message_id)
    assert failed.status == "error"
    assert msgs == [Message("user", "one\n\ntwo"), Message("assistant", "half"), Message("user", "three")]


def _result(stop_reason: str) -> GenerationResult:
    return GenerationResult("text", [1], GenerationStats(stop_reason=stop_reason, generated_tokens=1))


def test_how_a_turn_ends():
    done = chat_turn.end_turn(DONE, _result("eos"), "", kind="send", reply_text="text")
    assert (done.status, done.error, done.restore_text) == ("complete", None, None)
    stopped = chat_turn.end_turn(DONE, _result("cancelled"), "", kind="send", reply_text="te")
    assert stopped.status == "stopped" and stopped.stats.generated_tokens == 1
    before = chat_turn.end_turn(CANCELLED, None, "", kind="send", reply_text="")
    assert before.status == "stopped" and before.stats is None
    assert chat_turn.end_turn(DONE, stopped_before_start(), "", kind="send", reply_text="").status == "stopped"


def test_a_failed_send_gives_the_text_back_only_when_nothing_was_written_and_the_box_is_empty():
    end = chat_turn.end_turn(FAILED, None, "the prompt does not fit", kind="send", reply_text="", user_text="hi",
                             conversation_id=1, user_message_id=2, reply_id=3, input_is_empty=True)
    assert end.status == "error" and end.error == "the prompt does not fit" and end.restore_text == "hi"
    assert end.failed == chat_turn.FailedTurn(1, 2, 3)
    for kw in ({"reply_text": "partial"}, {"input_is_empty": False}, {"kind": "regenerate"}):
        args = {"kind": "send", "reply_text": "", "user_text": "hi", "user_message_id": 2, "input_is_empty": True,
                **kw}
        other = chat_turn.end_turn(FAILED, None, "", **args)
        assert other.restore_text is None and other.failed is None and other.error == "generation failed"


def test_a_failed_turn_is_dropped_only_while_it_is_still_the_last_one(tmp_path):
    store = _store(tmp_path)
    cid = store.create_conversation().id
    store.append_message(cid, "user", "first")
    store.append_message(cid, "assistant", "ok")
    user = store.append_message(cid, "user", "too long")
    reply = store.append_message(cid, "assistant", "", status="error")
    failed = chat_turn.FailedTurn(cid, user.id, reply.id)
    assert chat_turn.failed_turn_to_drop(store.get_messages(cid), failed, cid) == user.position - 1
    assert chat_turn.failed_turn_to_drop(store.get_messages(cid), failed, cid + 1) is None
    assert chat_turn.failed_turn_to_drop(store.get_messages(cid), None, cid) is None
    store.append_message(cid, "user", "later")
    assert chat_turn.failed_turn_to_drop(store.get_messages(cid), failed, cid) is None


def test_waiting_notice_names_what_is_ahead():
    assert "local server" in chat_turn.waiting_notice(1, "server")
    assert "benchmark" in chat_turn.waiting_notice(1, "benchmark")
    assert "3 requests ahead" in chat_turn.waiting_notice(3, "chat")
