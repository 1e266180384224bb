"""What a reply's code blocks and reasoning look like, without Qt: Pygments colour runs, language labels,
and the ``<think>…</think>`` split.

* :func:`highlight_runs` — ``(start, end, TokenStyle)`` for each coloured token of ``code`` in ``language``
  (Pygments' "default" style on a light background, "monokai" on a dark one); an unknown or missing language
  is plain text (no runs): guessing misleads more often than it helps.
* :func:`language_label` — the name shown above a code block ("Python", "JSON", or "code").
* :func:`fenced_block_lines` — how many lines each fenced code block of a Markdown text holds (Qt's Markdown
  reader gives two back-to-back fences the same block format, so their boundary comes from here).
* :func:`split_think` — a reply starting with ``<think>``: its reasoning, whether it is closed yet, and where
  the answer starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.styles import get_style_by_name
from pygments.util import ClassNotFound

__all__ = ["DARK_STYLE", "LIGHT_STYLE", "THINK_CLOSE", "THINK_OPEN", "TokenStyle", "fenced_block_lines",
           "highlight_runs", "language_label", "split_think"]

LIGHT_STYLE = "default"
DARK_STYLE = "monokai"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# a fence line: its container prefix (block quotes, list indentation), then ``` or ~~~ (3 or more) and the rest
_FENCE = re.compile(r"^(?P<prefix>(?:[ \t]*>)*[ \t]*(?:(?:[-*+]|\d{1,9}[.)])[ \t]+)?)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class TokenStyle:
    color: str  # "#rrggbb"
    bold: bool = False
    italic: bool = False


@lru_cache(maxsize=64)
def _lexer(language: str) -> Lexer | None:
    name = language.strip().lower()
    if not name:
        return None
    try:
        return get_lexer_by_name(name, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


@lru_cache(maxsize=4)
def _styles(dark: bool) -> dict:
    style = get_style_by_name(DARK_STYLE if dark else LIGHT_STYLE)
    return {ttype: s for ttype, s in style}


def _token_style(ttype, dark: bool) -> TokenStyle | None:
    styles = _styles(dark)
    t = ttype
    while t is not None:
        s = styles.get(t)
        if s and (s.get("color") or s.get("bold") or s.get("italic")):
            return TokenStyle("#" + s["color"] if s.get("color") else "", bool(s.get("bold")), bool(s.get("italic")))
        t = t.parent
    return None


def highlight_runs(code: str, language: str, dark: bool = False) -> list[tuple[int, int, TokenStyle]]:
    """Coloured runs of ``code`` (end exclusive); [] when the language is unknown or missing."""
    lexer = _lexer(language)
    if lexer is None:
        return []
    out: list[tuple[int, int, TokenStyle]] = []
    for index, ttype, value in lexer.get_tokens_unprocessed(code):
        if not value.strip():
            continue
        style = _token_style(ttype, dark)
        if style is None or not style.color:
            continue
        end = min(index + len(value), len(code))
        if out and out[-1][1] == index and out[-1][2] == style:
            out[-1] = (out[-1][0], end, style)
        else:
            out.append((index, end, style))
    return out


def language_label(language: str, code: str = "") -> str:
    """The label of a code block: the lexer's name for a known language, else the fence's word, else "code"."""
    lexer = _lexer(language)
    if lexer is not None:
        return str(lexer.name)
    return language.strip() or "code"


def split_think(text: str) -> tuple[str | None, bool, int]:
    """``(reasoning, closed, answer start)`` of a reply: reasoning is None when the reply does not start with
    ``<think>``; ``closed`` says whether ``</think>`` came; the answer is ``text[answer start:]``."""
    stripped = text.lstrip()
    if not stripped.startswith(THINK_OPEN):
        return None, False, 0
    begin = len(text) - len(stripped) + len(THINK_OPEN)
    end = text.find(THINK_CLOSE, begin)
    if end < 0:
        return text[begin:], False, len(text)
    return text[begin:end], True, end + len(THINK_CLOSE)


def fenced_block_lines(markdown: str) -> list[int]:
    """The number of content lines of each fenced code block in ``markdown``, in order; empty fences are
    left out (they render no block), and an unclosed fence runs to the end (a reply still streaming)."""
    sizes: list[int] = []
    fence = ""  # the open fence's characters ("" outside one)
    count = 0
    for line in markdown.split("\n"):
        m = _FENCE.match(line)
        if not fence:
            if m and not (m["fence"][0] == "`" and "`" in m["info"]):
                fence, count = m["fence"], 0
            continue
        closing = m is not None and m["fence"][0] == fence[0] and len(m["fence"]) >= len(fence) and not m["info"].strip()
        if closing:
            if count:
                sizes.append(count)
            fence = ""
        else:
            count += 1
    if fence:
        if markdown.endswith("\n") and count:
            count -= 1  # the text's last line break opens no line of its own
        if count:
            sizes.append(count)
    return sizes
