"""A conversation as a file: Markdown (to read or share) and JSON (to import again, here or on another computer).

* :func:`to_markdown` — the title, the system prompt and each message under its role; nothing is imported
  back from Markdown.
* :func:`to_json` / :func:`from_json` — :data:`FORMAT` version :data:`VERSION`: the conversation's fields
  and every message with its status, stats and draft mask. :func:`import_json` writes the copy as a new
  conversation (:meth:`ChatStore.add_conversation`, one transaction): existing chats are never touched.

Bad input gives :class:`ChatImportError` with a one-line message (never a traceback); nothing is written then.
"""

from __future__ import annotations

import json
from typing import Any

from app.store.chats import ROLES, STATUSES, ChatStore, Conversation, MessageData, StoredMessage

__all__ = ["FORMAT", "VERSION", "ChatImportError", "from_json", "import_json", "to_json", "to_markdown"]

FORMAT = "tandem-chat"
VERSION = 1
_ROLE_HEADINGS = {"user": "You", "assistant": "Assistant", "system": "System", "tool": "Tool"}


class ChatImportError(ValueError):
    """The file is not a Tandem chat export (the message says why, in one line)."""


def to_markdown(conv: Conversation, messages: list[StoredMessage]) -> str:
    """The conversation as Markdown: ``# title``, the system prompt as a quote, then ``## You`` /
    ``## Assistant`` sections with the messages as written (replies are Markdown already)."""
    lines = [f"# {conv.title or 'New chat'}", ""]
    if conv.system_prompt.strip():
        lines += ["> **System prompt:** " + conv.system_prompt.strip().replace("\n", "\n> "), ""]
    for m in messages:
        heading = _ROLE_HEADINGS.get(m.role, m.role.capitalize())
        if m.status in ("stopped", "error"):
            heading += f" ({m.status})"
        lines += [f"## {heading}", "", m.content.rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def to_json(conv: Conversation, messages: list[StoredMessage]) -> str:
    """The conversation as a JSON export (see :func:`from_json`)."""
    data = {
        "format": FORMAT,
        "version": VERSION,
        "title": conv.title,
        "system_prompt": conv.system_prompt,
        "created_at": conv.created_at,
        "model_path": conv.model_path,
        "draft_path": conv.draft_path,
        "settings_json": conv.settings_json,
        "messages": [
            {"role": m.role, "content": m.content, "status": m.status, "stats_json": m.stats_json,
             "draft_mask": m.draft_mask, "created_at": m.created_at}
            for m in messages
        ],
    }
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def _text(data: dict[str, Any], key: str, default: str | None = "") -> str | None:
    value = data.get(key, default)
    if value is not None and not isinstance(value, str):
        raise ChatImportError(f"'{key}' must be text")
    return value


def _number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ChatImportError(f"'{key}' must be a number")
    return float(value)


def from_json(text: str) -> tuple[dict[str, Any], list[MessageData]]:
    """Parse an export: ``(conversation fields, messages)``. Raises :class:`ChatImportError`."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ChatImportError("the JSON is nested too deeply") from None
    except ValueError as e:
        raise ChatImportError(f"not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ChatImportError(f"not a Tandem chat export (no \"format\": \"{FORMAT}\")")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
        raise ChatImportError(f"export version {version!r} is not supported (this Tandem reads up to {VERSION})")
    raw_messages = data.get("messages")
    if not isinstance(raw_messages, list):
        raise ChatImportError("'messages' must be a list")
    messages: list[MessageData] = []
    for i, m in enumerate(raw_messages, 1):
        if not isinstance(m, dict):
            raise ChatImportError(f"message {i} is not an object")
        try:
            role = _text(m, "role", None)
            content = _text(m, "content")
            status = _text(m, "status", "complete")
            if role not in ROLES:
                raise ChatImportError(f"unknown role {role!r}")
            if status not in STATUSES:
                raise ChatImportError(f"unknown status {status!r}")
            stats = _text(m, "stats_json", None)
            mask = _text(m, "draft_mask", None)
            created = _number(m, "created_at")
        except ChatImportError as e:
            raise ChatImportError(f"message {i}: {e}") from None
        messages.append(MessageData(role, content or "", status, stats, mask, created))  # type: ignore[arg-type]
    fields = {
        "title": _text(data, "title") or "",
        "system_prompt": _text(data, "system_prompt") or "",
        "model_path": _text(data, "model_path", None),
        "draft_path": _text(data, "draft_path", None),
        "settings_json": _text(data, "settings_json", None),
    }
    return fields, messages


def import_json(store: ChatStore, text: str) -> Conversation:
    """Write an export as a new conversation; raises :class:`ChatImportError` (and writes nothing)."""
    fields, messages = from_json(text)
    return store.add_conversation(
        fields["title"], fields["system_prompt"], messages, model_path=fields["model_path"],
        draft_path=fields["draft_path"], settings_json=fields["settings_json"],
    )
