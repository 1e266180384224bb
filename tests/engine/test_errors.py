"""One-line error text: the first non-blank line of a message, the class name where it helps."""

from __future__ import annotations

from app.engine.errors import error_message, one_line
from app.engine.gguf_info import GGUFError


def test_one_line_keeps_the_first_non_blank_line_with_whitespace_collapsed() -> None:
    assert one_line("\n  cannot   read\tx.gguf  \n  details: 42\n") == "cannot read x.gguf"
    assert one_line(OSError("disk\nfull")) == "disk"
    assert one_line("") == "" and one_line(" \n ") == ""


def test_one_line_names_an_exception_without_a_message() -> None:
    assert one_line(KeyError()) == "KeyError"
    assert one_line(ValueError("  ")) == "ValueError"


def test_error_message_prefixes_the_class_of_unexpected_exceptions() -> None:
    assert error_message(KeyError("x")) == "KeyError: 'x'"
    assert error_message(RuntimeError()) == "RuntimeError"
    assert error_message(GGUFError("not a GGUF file: a.bin\n(magic b'PK')"), (GGUFError, OSError)) == (
        "not a GGUF file: a.bin"
    )
    assert error_message(FileNotFoundError("gone"), (GGUFError, OSError)) == "gone"
    assert error_message(ValueError("bad"), (GGUFError, OSError)) == "ValueError: bad"
