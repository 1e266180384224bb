"""Where a configuration's output departs from the plain run of the same prompt."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Divergence", "first_difference", "describe_divergence"]


@dataclass
class Divergence:
    config: str
    prompt_id: str
    repeat: int
    position: int  # index of the first differing generated token
    plain_tokens: list[int]  # the plain run's continuation from there
    other_tokens: list[int]  # this configuration's continuation from there
    plain_text: str = ""
    other_text: str = ""
    context_text: str = ""  # the shared text just before the difference


def first_difference(plain: Sequence[int], other: Sequence[int]) -> int | None:
    """Index of the first token where two outputs differ (the shorter length if one is a prefix); None if equal."""
    n = min(len(plain), len(other))
    for i in range(n):
        if plain[i] != other[i]:
            return i
    return None if len(plain) == len(other) else n


def describe_divergence(
    plain: Sequence[int],
    other: Sequence[int],
    detokenize: Callable[[Sequence[int]], str] | None = None,
    *,
    config: str = "",
    prompt_id: str = "",
    repeat: int = 0,
    tail: int = 16,
    context: int = 8,
) -> Divergence | None:
    """Where and how `other` departs from `plain`: the position and both continuations (None if identical)."""
    pos = first_difference(plain, other)
    if pos is None:
        return None
    a, b = list(plain[pos : pos + tail]), list(other[pos : pos + tail])
    d = Divergence(config, prompt_id, repeat, pos, a, b)
    if detokenize is not None:
        d.plain_text = detokenize(a)
        d.other_text = detokenize(b)
        d.context_text = detokenize(list(plain[max(0, pos - context) : pos]))
    return d
