"""The past-chats store: survives a restart, bounded, crash-safe, clearable, and silent when switched off."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine.history_store import HistoryStore, tokenizer_fingerprint


def _doc(seed: int, n: int = 50) -> list[int]:
    return [(seed * 7919 + i * 31) % 5000 for i in range(n)]


def _all_tokens(store: HistoryStore) -> list[list[int]]:
    frozen, recent = store.indexes()
    out = []
    for toks in ((frozen.tokens.tolist() if frozen is not None else []), recent.tokens):
        doc: list[int] = []
        for t in toks:
            if t == -1:
                out.append(doc)
                doc = []
            else:
                doc.append(t)
    return out


def test_documents_survive_a_restart_and_duplicates_are_stored_once(tmp_path: Path):
    path = tmp_path / "h" / "family.tokens"
    s = HistoryStore(path)
    assert s.add(_doc(1)) and s.add(_doc(2))
    assert not s.add(_doc(1))  # the same turn again
    assert not s.add([1, 2, 3])  # too short to teach anything
    again = HistoryStore(path)
    assert _all_tokens(again) == [_doc(1), _doc(2)]
    assert not again.add(_doc(2))
    frozen, _ = again.indexes()
    q = [9, 9, *_doc(2)[10:20]]
    (c,) = frozen.candidates(q, 5)
    assert c.continuation == tuple(_doc(2)[20:25]) and c.match == 10


def test_the_store_stays_under_its_limit_keeping_the_newest(tmp_path: Path):
    path = tmp_path / "f.tokens"
    s = HistoryStore(path, max_bytes=8192)
    for i in range(60):
        s.add(_doc(i, 40))  # 60 x 168 bytes: past the limit several times
        assert path.stat().st_size <= 8192
    kept = _all_tokens(HistoryStore(path, max_bytes=8192))
    assert kept and kept[-1] == _doc(59, 40)
    assert _doc(0, 40) not in kept
    assert len(kept) < 60


def test_a_damaged_tail_is_ignored_with_one_line_and_repaired(tmp_path: Path):
    path = tmp_path / "f.tokens"
    s = HistoryStore(path)
    s.add(_doc(1))
    s.add(_doc(2))
    good = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\x10\x00\x00\x00garbage")  # a record cut short by a crash
    warnings: list[str] = []
    again = HistoryStore(path, on_warning=warnings.append)
    assert _all_tokens(again) == [_doc(1), _doc(2)]
    assert len(warnings) == 1 and "damaged" in warnings[0]
    assert path.stat().st_size == good  # cut back to the good records, so appending works again
    assert again.add(_doc(3))
    assert _all_tokens(HistoryStore(path)) == [_doc(1), _doc(2), _doc(3)]


@pytest.mark.parametrize("content", [b"", b"not a history cache at all", b"TNDMHIST\x07\x00\x00\x00"])
def test_a_file_that_is_not_a_store_is_ignored(tmp_path: Path, content: bytes):
    path = tmp_path / "f.tokens"
    path.write_bytes(content)
    warnings: list[str] = []
    s = HistoryStore(path, on_warning=warnings.append)
    assert s.n_tokens == 0
    assert len(warnings) == (1 if content else 0)
    assert s.add(_doc(4))
    assert _all_tokens(HistoryStore(path)) == [_doc(4)]


def test_clear_forgets_everything(tmp_path: Path):
    path = tmp_path / "f.tokens"
    s = HistoryStore(path)
    s.add(_doc(1))
    s.clear()
    assert not path.exists() and s.n_tokens == 0
    assert HistoryStore(path).n_tokens == 0
    assert s.add(_doc(1))  # and it learns again


def test_switched_off_it_reads_and_writes_nothing(tmp_path: Path):
    path = tmp_path / "f.tokens"
    HistoryStore(path).add(_doc(1))
    before = path.read_bytes()
    off = HistoryStore(path, enabled=False)
    assert not off.add(_doc(2))
    frozen, recent = off.indexes()
    assert frozen is None and len(recent) == 0
    assert path.read_bytes() == before


def test_an_unwritable_folder_is_a_warning_not_a_crash(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    warnings: list[str] = []
    s = HistoryStore(blocker / "sub" / "f.tokens", on_warning=warnings.append)
    assert s.add(_doc(1))  # remembered for this session
    assert warnings and "cannot write" in warnings[0]


def test_fingerprint_names_a_vocabulary():
    a = tokenizer_fingerprint([b"a", b"b", b"cd"])
    assert a == tokenizer_fingerprint([b"a", b"b", b"cd"])
    assert a != tokenizer_fingerprint([b"a", b"bc", b"d"])  # same bytes, other tokens
    assert len(a) == 16
