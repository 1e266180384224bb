"""Where has the end of the conversation been written before, and what followed it? (No draft model.)

Two indexes answer it, both in time independent of how much text they hold:

* `SequenceIndex` — the live conversation (prompt + reply so far), growing token by token: every n-gram
  (n = 2..4) maps to the positions where it ended, the most recent last.
* `FrozenIndex` — a large fixed token array (past chats, read from disk): every 4-gram's hash is in one
  sorted numpy array, so a look-up is a binary search.

A query takes the last tokens of the history, finds the positions where its longest n-gram (4, else 3,
else 2 tokens) ended before, measures for each how far back the match really goes (up to `MAX_MATCH`
tokens, by comparing slices), and returns the candidates — match length, position, continuation. The
caller (`history_proposer.HistoryProposer`) ranks them: the longest match wins, agreeing continuations
add confidence. Proposing therefore costs O(candidates × log(match) + draft length), never O(history).

Token value -1 separates documents in an index: no match or continuation crosses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SEPARATOR", "MAX_MATCH", "Candidate", "SequenceIndex", "FrozenIndex", "backward_match"]

SEPARATOR = -1
MAX_MATCH = 64  # how far back a match is measured: beyond this, longer makes no difference to the choice
MAX_CANDIDATES = 8  # positions looked at per query (the most recent ones of the longest n-gram found)


@dataclass(frozen=True)
class Candidate:
    match: int  # tokens before the draft that agree with the history's end (at least the n-gram's length)
    end: int  # position in the index of the last matching token
    continuation: tuple[int, ...]  # what followed it there (up to the asked length, never across a document)
    recency: int  # larger = more recent (the live conversation ranks above past chats)


def backward_match(a: Sequence[int], a_end: int, b: Sequence[int], known: int, limit: int = MAX_MATCH) -> int:
    """How many tokens `a[..a_end]` and the end of `b` share, going backwards (`known` of them are known equal).

    Slices are compared in doubling steps, then bisected: O(log(match)) comparisons done in C.
    """
    n_b = len(b)
    limit = min(limit, a_end + 1, n_b)
    if known >= limit:
        return limit

    def same(length: int) -> bool:
        return a[a_end + 1 - length : a_end + 1] == b[n_b - length :]

    lo = known  # a match of `lo` tokens is known
    hi = lo * 2 if lo > 0 else 1
    while hi <= limit and same(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)  # a match of `hi` tokens is known not to hold (or is past the limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if same(mid):
            lo = mid
        else:
            hi = mid
    return lo


class SequenceIndex:
    """An incremental n-gram index over one growing token sequence.

    Positions are indexed once the sequence has grown past them (the n-grams ending at the last token are the
    query itself, not an earlier occurrence), so `extend()` costs O(n_max) per token.
    """

    def __init__(self, n_min: int = 2, n_max: int = 4) -> None:
        if not (1 <= n_min <= n_max):
            raise ValueError("an n-gram index needs 1 <= n_min <= n_max")
        self.n_min, self.n_max = n_min, n_max
        self.tokens: list[int] = []
        self._index: dict[tuple[int, ...], list[int]] = {}
        self._indexed = 0  # n-grams ending before this position are in the index

    def __len__(self) -> int:
        return len(self.tokens)

    def reset(self) -> None:
        self.tokens = []
        self._index = {}
        self._indexed = 0

    def extend(self, tokens: Sequence[int]) -> None:
        self.tokens.extend(tokens)
        toks, index = self.tokens, self._index
        stop = len(toks) - 1
        for end in range(self._indexed, stop):
            if toks[end] == SEPARATOR:
                continue
            for n in range(self.n_min, self.n_max + 1):
                start = end - n + 1
                if start < 0 or toks[start] == SEPARATOR:
                    break
                index.setdefault(tuple(toks[start : end + 1]), []).append(end)
        self._indexed = max(self._indexed, stop)

    def candidates(
        self, history: Sequence[int], n_max: int, recency_base: int = 0, *, own: bool = False
    ) -> list[Candidate]:
        """Earlier places where the end of `history` was written, with what followed them (longest n-gram first).

        `own`: `history` is this very sequence (the live conversation). Then a continuation that runs into the
        end of the history goes on periodically, as the text would if it kept repeating itself ("a, b, a, b"
        after "a, b": the match says the next tokens are the ones since the match, again).
        """
        toks = self.tokens
        for n in range(min(self.n_max, len(history)), self.n_min - 1, -1):
            ends = self._index.get(tuple(history[-n:]))
            if not ends:
                continue
            out = []
            for end in reversed(ends[-MAX_CANDIDATES:]):
                cont = _until_separator(toks[end + 1 : end + 1 + n_max])
                if own and cont and len(cont) < n_max and end + 1 + len(cont) == len(toks):
                    period = len(cont)
                    cont = tuple(cont[i % period] for i in range(n_max))
                if cont:
                    out.append(Candidate(backward_match(toks, end, history, n), end, cont, recency_base + end))
            if out:
                return out
        return []


class FrozenIndex:
    """A fixed token array (documents separated by -1) with a sorted hash of every 4-gram: binary-search look-ups.

    Built once (numpy sorts 8 bytes per token: about a second for 8 million tokens); the live conversation and
    the replies added since are in `SequenceIndex`es, so this never changes while it is in use.
    """

    N = 4

    def __init__(self, tokens: np.ndarray) -> None:
        self.tokens = np.ascontiguousarray(tokens, dtype=np.int32)
        n = len(self.tokens)
        if n < self.N:
            self._keys = np.empty(0, dtype=np.uint32)
            self._ends = np.empty(0, dtype=np.int32)
            return
        keys = _hash4(self.tokens)  # key of the 4-gram ending at position i + 3
        valid = np.ones(len(keys), dtype=bool)
        sep = self.tokens == SEPARATOR
        for k in range(self.N):
            valid &= ~sep[k : k + len(keys)]
        ends = (np.nonzero(valid)[0] + (self.N - 1)).astype(np.int32)
        keys = keys[valid]
        order = np.argsort(keys, kind="stable")  # equal keys stay in position order: the most recent last
        self._keys = keys[order]
        self._ends = ends[order]

    def __len__(self) -> int:
        return len(self.tokens)

    def candidates(self, history: Sequence[int], n_max: int) -> list[Candidate]:
        if len(history) < self.N or not len(self._keys):
            return []
        tail = np.asarray(history[-MAX_MATCH:], dtype=np.int32)
        key = _hash4(tail[-self.N :])[0]
        lo = int(np.searchsorted(self._keys, key, side="left"))
        hi = int(np.searchsorted(self._keys, key, side="right"))
        toks = self.tokens
        out = []
        for end in reversed(self._ends[max(lo, hi - MAX_CANDIDATES) : hi].tolist()):
            if not np.array_equal(toks[end - self.N + 1 : end + 1], tail[-self.N :]):
                continue  # a hash collision
            match = _backward_match_np(toks, end, tail, self.N)
            cont = _until_separator(toks[end + 1 : end + 1 + n_max].tolist())
            if cont:
                out.append(Candidate(match, end, cont, end))
        return out


def _backward_match_np(toks: np.ndarray, end: int, tail: np.ndarray, known: int) -> int:
    """`backward_match` for a numpy token array and a numpy history tail."""
    limit = min(len(tail), end + 1)
    if known >= limit:
        return limit
    a = toks[end + 1 - limit : end + 1][::-1]
    b = tail[len(tail) - limit :][::-1]
    diff = np.nonzero(a != b)[0]
    return int(diff[0]) if len(diff) else limit


def _until_separator(tokens: list[int]) -> tuple[int, ...]:
    """`tokens` up to the first document separator."""
    if SEPARATOR in tokens:
        tokens = tokens[: tokens.index(SEPARATOR)]
    return tuple(tokens)


def _hash4(tokens: np.ndarray) -> np.ndarray:
    """A 32-bit hash of every 4 consecutive tokens (multiply-xor, wrapping; the caller checks for collisions)."""
    t = tokens.astype(np.uint64)
    n = len(t) - 3
    with np.errstate(over="ignore"):
        h = t[:n] * np.uint64(0x9E3779B97F4A7C15)
        for k, mult in ((1, 0xC2B2AE3D27D4EB4F), (2, 0x165667B19E3779F9), (3, 0xD6E8FEB86659FD93)):
            h = (h ^ (t[k : k + n] * np.uint64(mult))) * np.uint64(0x100000001B3)
    return (h >> np.uint64(32)).astype(np.uint32)
