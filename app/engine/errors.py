"""Error text for people: one line, whatever an exception's message looks like.

Messages reach a status bar, a table cell or a terminal line, never a traceback. Exceptions the app raises
for people (`GGUFError`, `EngineError`, ...) already say everything in their message; anything else gets
its class name in front, so an unexpected ``KeyError: 'x'`` does not read as a bare ``'x'``.
"""

from __future__ import annotations

__all__ = ["error_message", "one_line"]


def one_line(text: str | BaseException) -> str:
    """The first non-blank line of `text` (of ``str(exc)`` for an exception), whitespace collapsed.

    "" for blank text; an exception with a blank message gives its class name."""
    lines = str(text).splitlines()
    first = next((" ".join(line.split()) for line in lines if line.strip()), "")
    if not first and isinstance(text, BaseException):
        return type(text).__name__
    return first


def error_message(exc: BaseException, expected: tuple[type[BaseException], ...] = ()) -> str:
    """One line for `exc`: its message alone when it is one of the `expected` types (their messages are
    written for people), else ``ClassName: message`` (or the class name alone for a blank message)."""
    if isinstance(exc, expected):
        return one_line(exc)
    first = one_line(str(exc))
    name = type(exc).__name__
    return f"{name}: {first}" if first else name
