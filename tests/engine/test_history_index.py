"""The history indexes: longest earlier match of the conversation's end, live and frozen, never across documents."""

from __future__ import annotations

import random

import numpy as np

from app.engine.history_index import (
    MAX_CANDIDATES,
    MAX_MATCH,
    SEPARATOR,
    FrozenIndex,
    SequenceIndex,
    backward_match,
)


def _naive_backward(a, a_end, b, limit=MAX_MATCH):
    n = 0
    while n < limit and a_end - n >= 0 and n < len(b) and a[a_end - n] == b[len(b) - 1 - n]:
        n += 1
    return n


def test_backward_match_agrees_with_counting_one_by_one():
    rng = random.Random(1)
    for _ in range(3000):
        a = [rng.randint(0, 2) for _ in range(rng.randint(1, 90))]
        b = [rng.randint(0, 2) for _ in range(rng.randint(1, 90))]
        end = rng.randrange(len(a))
        ref = _naive_backward(a, end, b)
        known = min(ref, rng.randint(0, 3))
        assert backward_match(a, end, b, known) == ref


def test_live_index_finds_the_longest_earlier_match_and_its_continuation():
    idx = SequenceIndex()
    text = [5, 1, 2, 3, 4, 9, 9, 7, 1, 2, 3, 4, 8, 8, 0, 2, 3, 4]
    idx.extend(text)
    cands = idx.candidates(text, 3)
    # "2 3 4" ended at 3 and at 11 before; the query's own end (17) is not a candidate
    assert sorted(c.end for c in cands) == [4, 11]
    assert {c.end: c.continuation for c in cands} == {4: (9, 9, 7), 11: (8, 8, 0)}
    assert all(c.match == 3 for c in cands)
    # a longer match wins on length: "1 2 3 4" is at 4 and 11 too; the query "7 1 2 3 4" matches 4 only
    q = [*text, 7, 1, 2, 3, 4]
    idx.extend([7, 1, 2, 3, 4])
    best = max(idx.candidates(q, 2), key=lambda c: (c.match, c.recency))
    assert best.end == 11 and best.match == 5 and best.continuation == (8, 8)


def test_nothing_crosses_a_document_separator():
    idx = SequenceIndex()
    idx.extend([1, 2, 3, SEPARATOR, 4, 5])
    assert idx.candidates([9, 1, 2, 3], 4) == []  # 1 2 3 is followed by the end of its document
    assert idx.candidates([3, 4], 4) == []  # no n-gram spans the separator
    frozen = FrozenIndex(np.array([1, 2, 3, 4, SEPARATOR, 6, 7, 1, 2, 3, 4, 5], dtype=np.int32))
    (c,) = frozen.candidates([0, 1, 2, 3, 4], 4)
    assert c.end == 10 and c.continuation == (5,)


def test_frozen_index_matches_the_live_index_on_the_same_text():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 50, size=4000).astype(np.int32)
    frozen = FrozenIndex(base)
    live = SequenceIndex(n_min=4, n_max=4)
    live.extend([*base.tolist(), SEPARATOR])
    for start in range(0, 3900, 37):
        q = [*rng.integers(0, 50, size=10).tolist(), *base[start : start + 6].tolist()]
        a = sorted((c.end, c.match, c.continuation) for c in frozen.candidates(q, 5))
        b = sorted((c.end, c.match, c.continuation) for c in live.candidates(q, 5))
        assert a == b


def test_a_query_looks_at_a_bounded_number_of_places_however_long_the_conversation():
    rng = random.Random(7)
    words = [rng.randint(0, 4) for _ in range(8000)]  # a small alphabet: every 4-gram recurs
    idx = SequenceIndex()
    idx.extend(words)
    cands = idx.candidates(words, 8)
    tail = words[-4:]
    ends = [e for e in range(3, len(words) - 1) if words[e - 3 : e + 1] == tail]
    assert len(ends) > MAX_CANDIDATES  # the 4-gram recurs often ...
    assert sorted(c.end for c in cands) == ends[-MAX_CANDIDATES:]  # ... only its most recent places are looked at
