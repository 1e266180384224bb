"""The benchmark's prompts: the built-in set (bench_prompts.jsonl, next to this file) and JSONL prompt files."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from app.engine.bench.error import BenchError

__all__ = ["CATEGORIES", "BenchPrompt", "builtin_prompts", "load_prompts"]

# single requests, then multi-turn chats (what people iterate on: the reply copies the conversation), last open chat
CATEGORIES = ("code", "json", "rewrite", "prose", "chat", "iteration", "edit", "quote", "letter", "open")
BUILTIN_FILE = "bench_prompts.jsonl"
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class BenchPrompt:
    """One benchmark request: a single user message (`prompt`), or a whole chat (`messages`, ending with the
    user's turn) rendered with the target's chat template, as the app does."""

    id: str
    category: str
    prompt: str = ""
    system: str = ""
    raw: bool = False  # send the text as is, without the chat template
    max_tokens: int | None = None  # overrides the benchmark's max tokens for this prompt
    messages: tuple[tuple[str, str], ...] = ()  # (role, content), the last one the user's

    def chat(self) -> list[tuple[str, str]]:
        """The conversation to render: `messages`, or the one user message."""
        return list(self.messages) if self.messages else [("user", self.prompt)]


def _parse_messages(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise BenchError(f"{where}: \"messages\" must be a non-empty list of {{\"role\", \"content\"}} objects")
    out = []
    for i, m in enumerate(value, 1):
        if not isinstance(m, dict):
            raise BenchError(f"{where}: message {i} must be an object with \"role\" and \"content\"")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise BenchError(f"{where}: message {i} has role {role!r}; use one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise BenchError(f"{where}: message {i} needs a non-empty \"content\" string")
        out.append((role, content))
    if out[-1][0] != "user":
        raise BenchError(f"{where}: the last message must be the user's (the reply is what gets measured)")
    return tuple(out)


def _parse_prompt(obj: object, where: str, index: int) -> BenchPrompt:
    if not isinstance(obj, dict):
        raise BenchError(f"{where}: expected a JSON object")
    text = obj.get("prompt", "")
    messages: tuple[tuple[str, str], ...] = ()
    if "messages" in obj:
        if "prompt" in obj:
            raise BenchError(f"{where}: give \"prompt\" or \"messages\", not both")
        messages = _parse_messages(obj["messages"], where)
    elif not isinstance(text, str) or not text.strip():
        raise BenchError(f"{where}: \"prompt\" must be a non-empty string (or give \"messages\")")
    category = obj.get("category", "other")
    if not isinstance(category, str) or not category.strip():
        raise BenchError(f"{where}: \"category\" must be a non-empty string")
    pid = obj.get("id", f"prompt-{index + 1}")
    if not isinstance(pid, str) or not pid:
        raise BenchError(f"{where}: \"id\" must be a non-empty string")
    system = obj.get("system", "")
    if not isinstance(system, str):
        raise BenchError(f"{where}: \"system\" must be a string")
    raw = obj.get("raw", False)
    if not isinstance(raw, bool):
        raise BenchError(f"{where}: \"raw\" must be true or false")
    if raw and messages:
        raise BenchError(f"{where}: a chat (\"messages\") is always rendered with the chat template: drop \"raw\"")
    max_tokens = obj.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise BenchError(f"{where}: \"max_tokens\" must be a whole number of at least 1")
    return BenchPrompt(pid, category.strip(), text, system, raw, max_tokens, messages)


def _parse_jsonl(text: str, name: str) -> list[BenchPrompt]:
    prompts: list[BenchPrompt] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BenchError(f"{name} line {lineno}: not valid JSON ({e.msg})") from None
        prompts.append(_parse_prompt(obj, f"{name} line {lineno}", len(prompts)))
    if not prompts:
        raise BenchError(f"{name}: no prompts (one JSON object per line, with a \"prompt\" or \"messages\")")
    seen: set[str] = set()
    for p in prompts:
        if p.id in seen:
            raise BenchError(f"{name}: the prompt id {p.id!r} is used twice")
        seen.add(p.id)
    return prompts


def builtin_prompts() -> list[BenchPrompt]:
    """The built-in set: code, structured JSON, rewrite/edit of a given text, prose, short chat answers; then
    multi-turn chats: code iteration, structured edits, quoting a document, letter fixes, open chat."""
    text = resources.files(__package__).joinpath(BUILTIN_FILE).read_text(encoding="utf-8")
    return _parse_jsonl(text, BUILTIN_FILE)


def load_prompts(path: str | os.PathLike[str]) -> list[BenchPrompt]:
    """A user prompt file: JSONL, one object per line: {"prompt": ..., "category": ..., "id": ..., ...}, or a chat:
    {"id": ..., "category": ..., "messages": [{"role": "user", "content": ...}, ...]} ending with the user."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"prompt file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BenchError(f"cannot read prompt file {p}: {e}") from None
    return _parse_jsonl(text, p.name)
