"""What a chat turn is, how it ends, and what a failed or stopped turn leaves behind. No Qt.

A *turn* is one reply the chat window asks for: sending a message ("send"), generating the last reply
again ("regenerate") or editing a user message ("edit"). Its request carries the conversation's complete
and stopped user/assistant messages (`turn_messages`). It ends as

* ``complete`` — the service's DONE;
* ``stopped`` — CANCELLED: Stop (or closing the app, or deleting the conversation) during or before it;
  the text generated so far is kept;
* ``error`` — FAILED: the partial text is kept with the one-line reason.

A send that failed before writing anything (e.g. the prompt does not fit the context) gives the user's
text back (`TurnEnd.restore_text`), and the failed turn is dropped when the text is sent again
(`failed_turn_to_drop`), so a retry replaces it instead of repeating it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.engine.chat_template import Message
from app.engine.speculative import GenerationResult, GenerationStats
from app.service.app_requests import BENCHMARK
from app.service.engine_service import CANCELLED, DONE, FAILED, SERVER
from app.store.chats import StoredMessage

__all__ = ["SEND", "REGENERATE", "EDIT", "TURN_KINDS", "FailedTurn", "TurnEnd", "turn_messages", "end_turn",
           "failed_turn_to_drop", "waiting_notice"]

SEND, REGENERATE, EDIT = "send", "regenerate", "edit"
TURN_KINDS = (SEND, REGENERATE, EDIT)


@dataclass(frozen=True)
class FailedTurn:
    """A send whose reply failed empty: the conversation, its user message and the empty error reply."""

    conversation_id: int
    user_message_id: int
    reply_id: int


@dataclass(frozen=True)
class TurnEnd:
    status: str  # "complete" | "stopped" | "error"
    stats: GenerationStats | None
    error: str | None
    restore_text: str | None = None  # the user's text to put back in the input box
    failed: FailedTurn | None = None  # the turn to drop when that text is sent again


def turn_messages(messages: Sequence[StoredMessage], exclude: int | None = None) -> list[Message]:
    """A turn's request messages: complete/stopped user and assistant turns with text, same-role neighbours
    merged (an error reply left out must not make two user turns in a row); `exclude`: the reply being written."""
    out: list[Message] = []
    for m in messages:
        if m.id == exclude or m.role not in ("user", "assistant") or m.status not in ("complete", "stopped"):
            continue
        if not m.content:
            continue
        if out and out[-1].role == m.role:
            out[-1] = Message(m.role, f"{out[-1].content}\n\n{m.content}")
        else:
            out.append(Message(m.role, m.content))
    return out


def end_turn(outcome: str, result: GenerationResult | None, error: str, *, kind: str, reply_text: str,
             user_text: str = "", conversation_id: int = 0, user_message_id: int | None = None,
             reply_id: int = 0, input_is_empty: bool = True) -> TurnEnd:
    """How a turn ended: the reply's status and stats, and what to give back.

    `reply_text`: what the reply holds; `input_is_empty`: the input box has no text of the user's (text
    given back never overwrites anything)."""
    if outcome == DONE and result is not None and result.stats.stop_reason != "cancelled":
        return TurnEnd("complete", result.stats, None)
    if outcome in (DONE, CANCELLED):
        return TurnEnd("stopped", result.stats if result is not None else None, None)
    if outcome != FAILED:
        raise ValueError(f"unknown outcome {outcome!r}")
    message = error or "generation failed"
    if kind == SEND and not reply_text and input_is_empty:
        failed = FailedTurn(conversation_id, user_message_id, reply_id) if user_message_id is not None else None
        return TurnEnd("error", None, message, restore_text=user_text, failed=failed)
    return TurnEnd("error", None, message)


def failed_turn_to_drop(messages: Sequence[StoredMessage], failed: FailedTurn | None,
                        conversation_id: int) -> int | None:
    """The position to truncate the conversation after, so that the failed turn is gone (None: keep all).

    Only when the conversation still ends with exactly that user message and its empty error reply."""
    if failed is None or failed.conversation_id != conversation_id or len(messages) < 2:
        return None
    user, reply = messages[-2], messages[-1]
    if (user.id == failed.user_message_id and reply.id == failed.reply_id and reply.status == "error"
            and not reply.content):
        return user.position - 1
    return None


def waiting_notice(ahead: int, ahead_kind: str | None) -> str:
    """What the chat says while its turn waits in the engine's queue."""
    who = {SERVER: "the local server is answering a request", BENCHMARK: "a benchmark is running"}.get(
        ahead_kind or "", "the engine is busy")
    more = f" ({ahead} requests ahead)" if ahead > 1 else ""
    return f"Waiting: {who}{more}. Your reply starts when it is done."
