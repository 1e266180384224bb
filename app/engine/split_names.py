"""The file names of split GGUF models, one rule for the GGUF reader, the local library and the Hub listing.

llama.cpp's ``gguf-split`` names part *i* of *n* ``<prefix>-<i:05d>-of-<n:05d>.gguf``
(``name-00001-of-00003.gguf`` ... ``name-00003-of-00003.gguf``). A name is a part of a split model when it
has that form with ``1 <= i <= n`` and ``n >= 2``.

``name-00001-of-00001.gguf`` (what gguf-split writes when everything fits in one part) is *not* a split:
it is one ordinary model file, which llama.cpp loads on its own. It is listed, downloaded and named like
any other file (its name keeps the suffix). So are look-alikes such as ``-00000-of-00002`` or
``-00004-of-00003``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SplitName", "model_stem", "parse_split_name"]

_SPLIT_RE = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_GGUF_SUFFIX_RE = re.compile(r"\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class SplitName:
    """``prefix-0000<part>-of-0000<count>.gguf``: part `part` (from 1) of a model in `count` files."""

    prefix: str
    part: int
    count: int

    def part_name(self, part: int) -> str:
        """The file name of part `part` (from 1) of the same model."""
        return f"{self.prefix}-{part:05d}-of-{self.count:05d}.gguf"

    @property
    def part_names(self) -> tuple[str, ...]:
        """The file names of every part, in order."""
        return tuple(self.part_name(i) for i in range(1, self.count + 1))


def parse_split_name(name: str) -> SplitName | None:
    """The split part `name` (a file name, no folder) names, or None for an ordinary file name."""
    m = _SPLIT_RE.match(name)
    if not m:
        return None
    part, count = int(m.group("no")), int(m.group("count"))
    if count < 2 or not 1 <= part <= count:
        return None
    return SplitName(m.group("prefix"), part, count)


def model_stem(name: str) -> str:
    """The model's name in a file name: without ``.gguf`` and, for a split part, without the part suffix."""
    split = parse_split_name(name)
    return split.prefix if split else _GGUF_SUFFIX_RE.sub("", name)
