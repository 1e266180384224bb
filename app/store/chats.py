"""Conversations and their messages, with crash-safe streaming saves.

``ChatStore(conn)`` works on a connection from :func:`app.store.db.open_database` and belongs to
that connection's thread. Timestamps are Unix seconds (floats, wall clock). Message positions
start at 0 and are contiguous within a conversation.

Streaming replies
-----------------
:meth:`ChatStore.begin_reply` inserts an empty assistant message with status ``'streaming'`` and
returns a :class:`ReplyWriter`. The UI feeds it text pieces as they arrive; it writes the whole
text so far (and its draft mask) to SQLite at most every ``flush_interval`` seconds, and on
:meth:`ReplyWriter.finish`. Each write is one autocommitted ``UPDATE`` (WAL, ``synchronous=NORMAL``),
durable once it returns even if the process is killed, so a crash loses at most the pieces that
arrived during the last flush interval. Throttling is checked when a piece arrives; a UI that wants
the tail saved while the stream stalls can call :meth:`ReplyWriter.flush_if_due` from a timer.

After a crash the message is still ``'streaming'``. The app calls
:meth:`ChatStore.recover_interrupted` **once at startup, before any reply begins** (not on every
connection: a second connection would otherwise mark a live stream as stopped); it marks such
messages ``'stopped'`` and keeps their text.

Copies
------
:meth:`ChatStore.add_conversation` writes a whole conversation in one transaction (an imported chat, see
:mod:`app.store.chat_export`); :meth:`ChatStore.branch_conversation` copies a conversation up to one of its
messages into a new one. Neither touches an existing conversation: nothing the user wrote is lost.

Draft masks
-----------
``StoredMessage.draft_mask`` records which characters of the content came from accepted draft
tokens, so the UI can colour them after a reload. It is a run-length encoding: comma-separated
decimal run lengths that alternate, starting with a run of *non-draft* characters (which may be
0). ``"3,5,2"`` = 3 target characters, 5 draft characters, 2 target characters. Lengths count
Python ``str`` characters (Unicode code points); ``""`` is the mask of empty text and ``None``
means "unknown" (a message not written through a :class:`ReplyWriter`). See
:func:`encode_draft_mask`, :func:`decode_draft_mask`, :func:`draft_spans` and :class:`DraftMaskBuilder`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from app.store.db import StoreError, transaction

__all__ = [
    "ROLES",
    "STATUSES",
    "TITLE_MAX_CHARS",
    "Conversation",
    "ChatStore",
    "BRANCH_SUFFIX",
    "DraftMaskBuilder",
    "MessageData",
    "MessageStatus",
    "ReplyWriter",
    "StoredMessage",
    "decode_draft_mask",
    "draft_spans",
    "encode_draft_mask",
    "make_title",
]

MessageStatus = Literal["complete", "streaming", "stopped", "error"]
STATUSES: frozenset[str] = frozenset(get_args(MessageStatus))
ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool"})
TITLE_MAX_CHARS = 40
DEFAULT_FLUSH_INTERVAL = 0.5
BRANCH_SUFFIX = " (branch)"


@dataclass(frozen=True, slots=True)
class Conversation:
    id: int
    title: str  # "" until the first user message gives it one (see make_title)
    system_prompt: str
    created_at: float
    updated_at: float
    model_path: str | None
    draft_path: str | None
    settings_json: str | None
    pinned: bool = False  # pinned conversations are listed first


@dataclass(frozen=True, slots=True)
class MessageData:
    """A message to write into a new conversation (:meth:`ChatStore.add_conversation`)."""

    role: str
    content: str
    status: MessageStatus = "complete"
    stats_json: str | None = None
    draft_mask: str | None = None
    created_at: float | None = None  # None: now


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    conversation_id: int
    position: int
    role: str
    content: str
    status: MessageStatus
    stats_json: str | None
    draft_mask: str | None
    created_at: float
    updated_at: float


_CONV_COLS = "id, title, system_prompt, created_at, updated_at, model_path, draft_path, settings_json, pinned"
_CONV_ORDER = "pinned DESC, updated_at DESC, id DESC"
_MSG_COLS = (
    "id, conversation_id, position, role, content, status, stats_json, draft_mask, created_at, updated_at"
)
_UNSET: Any = object()


# ---------------------------------------------------------------------------------------------------------
# draft masks


def encode_draft_mask(flags: Iterable[bool]) -> str:
    """Run-length encode per-character "came from the draft" flags (see the module docstring)."""
    builder = DraftMaskBuilder()
    for flag in flags:
        builder.add(1, bool(flag))
    return builder.encode()


def decode_draft_mask(mask: str) -> list[bool]:
    """Per-character flags of an encoded mask; raises ``ValueError`` on a malformed mask."""
    flags: list[bool] = []
    for length, from_draft in _runs(mask):
        flags.extend([from_draft] * length)
    return flags


def draft_spans(mask: str) -> list[tuple[int, int]]:
    """``(start, end)`` character ranges (end exclusive) that came from the draft."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for length, from_draft in _runs(mask):
        if from_draft and length:
            spans.append((pos, pos + length))
        pos += length
    return spans


def _runs(mask: str) -> list[tuple[int, bool]]:
    if not mask:
        return []
    runs: list[tuple[int, bool]] = []
    for i, part in enumerate(mask.split(",")):
        if not part.isdigit() or not part.isascii():
            raise ValueError(f"malformed draft mask {mask[:60]!r}")
        runs.append((int(part), i % 2 == 1))
    return runs


class DraftMaskBuilder:
    """Builds a draft mask incrementally, piece by piece."""

    __slots__ = ("_runs", "length")

    def __init__(self) -> None:
        self._runs: list[int] = []  # alternating: non-draft, draft, non-draft, ...
        self.length = 0

    def add(self, n_chars: int, from_draft: bool) -> None:
        if n_chars < 0:
            raise ValueError("n_chars must be >= 0")
        if n_chars == 0:
            return
        self.length += n_chars
        want_odd = bool(from_draft)  # draft runs sit at odd indexes
        if not self._runs:
            if want_odd:
                self._runs.append(0)
            self._runs.append(n_chars)
            return
        last_is_draft = (len(self._runs) - 1) % 2 == 1
        if last_is_draft == want_odd:
            self._runs[-1] += n_chars
        else:
            self._runs.append(n_chars)

    def encode(self) -> str:
        return ",".join(map(str, self._runs))


# ---------------------------------------------------------------------------------------------------------
# titles


def make_title(text: str, max_chars: int = TITLE_MAX_CHARS) -> str:
    """A one-line title from a message: its first non-blank line, whitespace collapsed, cut to
    about ``max_chars`` characters at a word boundary with "…" when shortened; "" for blank text."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = " ".join(line.split())
    if len(line) <= max_chars:
        return line
    cut = line[:max_chars]
    space = cut.rfind(" ")
    if space >= max_chars // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "…"


def _like_pattern(query: str) -> str:
    """A LIKE pattern matching ``query`` anywhere, with \\, % and _ escaped (use ESCAPE '\\')."""
    escaped = query.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _fold(value: object) -> object:
    return value.casefold() if isinstance(value, str) else value


def _conversation_row(row: tuple) -> Conversation:
    return Conversation(*row[:-1], pinned=bool(row[-1]))


# ---------------------------------------------------------------------------------------------------------
# the store


class ChatStore:
    """Conversations and messages on one connection (one thread). See the module docstring."""

    def __init__(self, conn: sqlite3.Connection, *, now: Callable[[], float] = time.time) -> None:
        self.conn = conn
        self._now = now
        # Unicode-aware case folding for search (SQLite's own LIKE folds ASCII only).
        conn.create_function("tandem_fold", 1, _fold, deterministic=True)

    # -- conversations ---------------------------------------------------------------------------------

    def create_conversation(
        self,
        title: str = "",
        system_prompt: str = "",
        *,
        model_path: str | None = None,
        draft_path: str | None = None,
        settings_json: str | None = None,
    ) -> Conversation:
        now = self._now()
        cur = self.conn.execute(
            "INSERT INTO conversations (title, system_prompt, created_at, updated_at, model_path, draft_path,"
            " settings_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (title, system_prompt, now, now, model_path, draft_path, settings_json),
        )
        return self._conversation(int(cur.lastrowid or 0))

    def get_conversation(self, conversation_id: int) -> Conversation | None:
        row = self.conn.execute(
            f"SELECT {_CONV_COLS} FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        return _conversation_row(row) if row else None

    def list_conversations(self, limit: int | None = None) -> list[Conversation]:
        """All conversations: pinned ones first, then the most recently updated first."""
        rows = self.conn.execute(
            f"SELECT {_CONV_COLS} FROM conversations ORDER BY {_CONV_ORDER} LIMIT ?",
            (-1 if limit is None else limit,),
        ).fetchall()
        return [_conversation_row(r) for r in rows]

    def search_conversations(self, query: str, limit: int | None = None) -> list[Conversation]:
        """Conversations whose title or any message contains ``query`` (case-insensitive, literal:
        ``%`` and ``_`` match themselves), in the order of :meth:`list_conversations`. "" matches all."""
        pattern = _like_pattern(query)
        rows = self.conn.execute(
            f"SELECT {_CONV_COLS} FROM conversations AS c"
            " WHERE tandem_fold(c.title) LIKE :p ESCAPE '\\'"
            "    OR EXISTS (SELECT 1 FROM messages AS m WHERE m.conversation_id = c.id"
            "               AND tandem_fold(m.content) LIKE :p ESCAPE '\\')"
            f" ORDER BY {_CONV_ORDER} LIMIT :limit",
            {"p": pattern, "limit": -1 if limit is None else limit},
        ).fetchall()
        return [_conversation_row(r) for r in rows]

    def rename_conversation(self, conversation_id: int, title: str) -> Conversation:
        return self._update_conversation(conversation_id, title=title)

    def set_system_prompt(self, conversation_id: int, system_prompt: str) -> Conversation:
        return self._update_conversation(conversation_id, system_prompt=system_prompt)

    def set_conversation_models(
        self, conversation_id: int, model_path: str | None, draft_path: str | None
    ) -> Conversation:
        return self._update_conversation(conversation_id, model_path=model_path, draft_path=draft_path)

    def set_conversation_settings(self, conversation_id: int, settings_json: str | None) -> Conversation:
        return self._update_conversation(conversation_id, settings_json=settings_json)

    def set_pinned(self, conversation_id: int, pinned: bool) -> Conversation:
        """Pin (listed first) or unpin a conversation; its "last changed" time stays as it was."""
        cur = self.conn.execute(
            "UPDATE conversations SET pinned = ? WHERE id = ?", (int(bool(pinned)), conversation_id)
        )
        if cur.rowcount == 0:
            raise KeyError(f"no conversation {conversation_id}")
        return self._conversation(conversation_id)

    def add_conversation(
        self,
        title: str,
        system_prompt: str,
        messages: Iterable[MessageData],
        *,
        model_path: str | None = None,
        draft_path: str | None = None,
        settings_json: str | None = None,
    ) -> Conversation:
        """A new conversation holding ``messages`` in order, written in one transaction (all or nothing).

        A ``'streaming'`` message is stored as ``'stopped'``: nothing streams into a copy. Raises
        ``ValueError`` for an unknown role or status (and writes nothing)."""
        items = list(messages)
        for m in items:
            _check_role(m.role)
            _check_status(m.status)
        now = self._now()
        with transaction(self.conn):
            cur = self.conn.execute(
                "INSERT INTO conversations (title, system_prompt, created_at, updated_at, model_path, draft_path,"
                " settings_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (title, system_prompt, now, now, model_path, draft_path, settings_json),
            )
            cid = int(cur.lastrowid or 0)
            self.conn.executemany(
                "INSERT INTO messages (conversation_id, position, role, content, status, stats_json,"
                " draft_mask, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (cid, i, m.role, m.content, "stopped" if m.status == "streaming" else m.status, m.stats_json,
                     m.draft_mask, now if m.created_at is None else m.created_at, now)
                    for i, m in enumerate(items)
                ],
            )
        return self._conversation(cid)

    def branch_conversation(self, conversation_id: int, through_message_id: int) -> Conversation:
        """A copy of the conversation up to and including one of its messages (title + " (branch)"); the
        original is unchanged. ``KeyError`` when the message is not in that conversation."""
        conv = self._conversation(conversation_id)
        messages = self.get_messages(conversation_id)
        last = next((m for m in messages if m.id == through_message_id), None)
        if last is None:
            raise KeyError(f"no message {through_message_id} in conversation {conversation_id}")
        kept = [m for m in messages if m.position <= last.position]
        first_user = next((m.content for m in kept if m.role == "user"), "")
        title = (conv.title or make_title(first_user)) + BRANCH_SUFFIX
        return self.add_conversation(
            title, conv.system_prompt,
            [MessageData(m.role, m.content, m.status, m.stats_json, m.draft_mask, m.created_at) for m in kept],
            model_path=conv.model_path, draft_path=conv.draft_path, settings_json=conv.settings_json,
        )

    def delete_conversation(self, conversation_id: int) -> bool:
        """Delete a conversation and its messages; False when there was none."""
        cur = self.conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        return cur.rowcount > 0

    # -- messages --------------------------------------------------------------------------------------

    def append_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        status: MessageStatus = "complete",
        stats_json: str | None = None,
        draft_mask: str | None = None,
    ) -> StoredMessage:
        """Add a message at the end. The first user message titles an untitled conversation."""
        _check_role(role)
        _check_status(status)
        now = self._now()
        with transaction(self.conn):
            conv = self._conversation(conversation_id)
            (position,) = self.conn.execute(
                "SELECT coalesce(max(position), -1) + 1 FROM messages WHERE conversation_id = ?",
                (conversation_id,),
            ).fetchone()
            cur = self.conn.execute(
                "INSERT INTO messages (conversation_id, position, role, content, status, stats_json,"
                " draft_mask, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, position, role, content, status, stats_json, draft_mask, now, now),
            )
            title = conv.title
            if role == "user" and not title:
                title = make_title(content)
            self.conn.execute(
                "UPDATE conversations SET title = ?, updated_at = ? WHERE id = ?",
                (title, now, conversation_id),
            )
        message = self.get_message(int(cur.lastrowid or 0))
        assert message is not None
        return message

    def get_message(self, message_id: int) -> StoredMessage | None:
        row = self.conn.execute(f"SELECT {_MSG_COLS} FROM messages WHERE id = ?", (message_id,)).fetchone()
        return StoredMessage(*row) if row else None

    def get_messages(self, conversation_id: int) -> list[StoredMessage]:
        """The conversation's messages in order of position."""
        rows = self.conn.execute(
            f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id = ? ORDER BY position",
            (conversation_id,),
        ).fetchall()
        return [StoredMessage(*r) for r in rows]

    def update_message(
        self,
        message_id: int,
        *,
        content: str = _UNSET,
        status: MessageStatus = _UNSET,
        stats_json: str | None = _UNSET,
        draft_mask: str | None = _UNSET,
    ) -> StoredMessage:
        """Change the given fields of a message. Changing ``content`` without a ``draft_mask``
        clears the mask (it would no longer match the text). Raises ``KeyError`` for no such message."""
        changes: dict[str, Any] = {}
        if content is not _UNSET:
            changes["content"] = content
            changes["draft_mask"] = None
        if status is not _UNSET:
            _check_status(status)
            changes["status"] = status
        if stats_json is not _UNSET:
            changes["stats_json"] = stats_json
        if draft_mask is not _UNSET:
            changes["draft_mask"] = draft_mask
        now = self._now()
        with transaction(self.conn):
            row = self.conn.execute(
                "SELECT conversation_id FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                raise KeyError(f"no message {message_id}")
            if changes:
                assignments = ", ".join(f"{col} = :{col}" for col in changes)
                self.conn.execute(
                    f"UPDATE messages SET {assignments}, updated_at = :now WHERE id = :id",
                    {**changes, "now": now, "id": message_id},
                )
                self._touch(row[0], now)
        message = self.get_message(message_id)
        assert message is not None
        return message

    def truncate_after(self, conversation_id: int, position: int) -> int:
        """Delete the messages after ``position`` (``-1`` deletes all); returns how many went.

        Editing a past user message and resending: ``update_message`` it, then
        ``truncate_after(its position)``. Regenerating a reply: ``truncate_after(position - 1)``.
        """
        now = self._now()
        with transaction(self.conn):
            self._conversation(conversation_id)
            cur = self.conn.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND position > ?", (conversation_id, position)
            )
            if cur.rowcount:
                self._touch(conversation_id, now)
        return cur.rowcount

    # -- streaming -------------------------------------------------------------------------------------

    def begin_reply(
        self,
        conversation_id: int,
        *,
        role: str = "assistant",
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> ReplyWriter:
        """Insert an empty ``'streaming'`` message and return the writer that fills it."""
        message = self.append_message(conversation_id, role, "", status="streaming", draft_mask="")
        return ReplyWriter(self, message, flush_interval=flush_interval, clock=clock)

    def recover_interrupted(self) -> int:
        """Mark messages left ``'streaming'`` by a killed app as ``'stopped'`` (text kept); returns
        how many. Call once at startup, before any reply begins."""
        cur = self.conn.execute(
            "UPDATE messages SET status = 'stopped', updated_at = ? WHERE status = 'streaming'",
            (self._now(),),
        )
        return cur.rowcount

    # -- internals -------------------------------------------------------------------------------------

    def _conversation(self, conversation_id: int) -> Conversation:
        conv = self.get_conversation(conversation_id)
        if conv is None:
            raise KeyError(f"no conversation {conversation_id}")
        return conv

    def _update_conversation(self, conversation_id: int, **changes: Any) -> Conversation:
        assignments = ", ".join(f"{col} = :{col}" for col in changes)
        cur = self.conn.execute(
            f"UPDATE conversations SET {assignments}, updated_at = :now WHERE id = :id",
            {**changes, "now": self._now(), "id": conversation_id},
        )
        if cur.rowcount == 0:
            raise KeyError(f"no conversation {conversation_id}")
        return self._conversation(conversation_id)

    def _touch(self, conversation_id: int, now: float) -> None:
        self.conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown message role {role!r} (expected one of {sorted(ROLES)})")


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown message status {status!r} (expected one of {sorted(STATUSES)})")


# ---------------------------------------------------------------------------------------------------------
# the streaming writer


class ReplyWriter:
    """Accumulates a streamed reply and saves it, throttled; see the module docstring.

    Use from the thread that owns the store's connection. Usable as a context manager: leaving the
    block normally finishes with ``'complete'`` (unless already finished), an exception with ``'error'``.
    """

    def __init__(
        self,
        store: ChatStore,
        message: StoredMessage,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if flush_interval < 0:
            raise ValueError("flush_interval must be >= 0")
        self._store = store
        self.message_id = message.id
        self.conversation_id = message.conversation_id
        self.position = message.position
        self.flush_interval = flush_interval
        self._clock = clock
        self._chunks: list[str] = [message.content]
        self._mask = DraftMaskBuilder()
        self._mask.add(len(message.content), False)
        self._dirty = False
        self._last_flush = clock()
        self._finished = False
        self.flush_count = 0  # writes to the database so far (for tests and diagnostics)

    @property
    def text(self) -> str:
        if len(self._chunks) > 1:
            self._chunks = ["".join(self._chunks)]
        return self._chunks[0]

    @property
    def draft_mask(self) -> str:
        return self._mask.encode()

    @property
    def finished(self) -> bool:
        return self._finished

    def append(self, text: str, from_draft: bool = False) -> None:
        """Add a piece of the reply; ``from_draft``: it came from accepted draft tokens."""
        if self._finished:
            raise StoreError("this reply is already finished")
        if not text:
            return
        self._chunks.append(text)
        self._mask.add(len(text), from_draft)
        self._dirty = True
        self.flush_if_due()

    def flush_if_due(self) -> bool:
        """Write unsaved text when ``flush_interval`` has passed since the last write."""
        if self._dirty and not self._finished and self._clock() - self._last_flush >= self.flush_interval:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Write the text so far now (no-op when nothing changed)."""
        if not self._dirty or self._finished:
            return
        self._write()

    def finish(
        self, status: MessageStatus = "complete", stats_json: str | None = None
    ) -> StoredMessage | None:
        """Save the full text with its final status; returns the message, or None when it was deleted
        meanwhile (conversation deleted or truncated during the stream). Finishing twice is an error."""
        if status == "streaming":
            raise ValueError("a finished reply cannot stay 'streaming'")
        _check_status(status)
        if self._finished:
            raise StoreError("this reply is already finished")
        self._finished = True
        store = self._store
        now = store._now()
        with transaction(store.conn):
            cur = store.conn.execute(
                "UPDATE messages SET content = ?, draft_mask = ?, status = ?, stats_json = ?, updated_at = ?"
                " WHERE id = ?",
                (self.text, self.draft_mask, status, stats_json, now, self.message_id),
            )
            if cur.rowcount:
                store._touch(self.conversation_id, now)
        self._dirty = False
        self.flush_count += 1
        return store.get_message(self.message_id)

    def _write(self) -> None:
        self._store.conn.execute(
            "UPDATE messages SET content = ?, draft_mask = ?, updated_at = ? WHERE id = ?",
            (self.text, self.draft_mask, self._store._now(), self.message_id),
        )
        self._last_flush = self._clock()
        self._dirty = False
        self.flush_count += 1

    def __enter__(self) -> ReplyWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._finished:
            self.finish("error" if exc_type is not None else "complete")
