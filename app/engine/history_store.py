"""Past chats, remembered as tokens, so a new chat can draft from what earlier ones said.

One store per tokenizer family (`tokenizer_fingerprint`): a model can only draft tokens of its own
vocabulary. A store is one append-only file of records, each ``[u32 token count][u32 crc32][int32 tokens]``
after an 8-byte magic and a version. Appending a record is one write + fsync; a crash mid-write leaves a
damaged tail, which the next open detects (length or checksum), logs in one line, and cuts off — it never
fails the app. When the file grows past `max_bytes`, the oldest records go: the newest three quarters are
rewritten to a temporary file, fsynced and renamed over the old one, so the store is always either the old
or the new file. An identical record (the same turn sent twice, a benchmark run again) is stored once.

With `enabled=False` nothing is read or written (the privacy switch); `clear()` deletes the file.
The records read at open are searched through one `FrozenIndex` (built on first use); the records added
since, through a `SequenceIndex`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from app.engine.history_index import SEPARATOR, FrozenIndex, SequenceIndex

__all__ = ["HistoryStore", "tokenizer_fingerprint", "DEFAULT_MAX_BYTES"]

_MAGIC = b"TNDMHIST"
_VERSION = 1
_HEADER = struct.Struct("<8sI")
_RECORD = struct.Struct("<II")
DEFAULT_MAX_BYTES = 32 * 1000 * 1000
_MIN_TOKENS = 8  # shorter documents teach nothing worth a record

log = logging.getLogger("tandem.history")


def tokenizer_fingerprint(token_bytes: Sequence[bytes]) -> str:
    """A short name for a vocabulary: models with the same token texts share a store."""
    h = hashlib.sha256()
    for t in token_bytes:
        h.update(len(t).to_bytes(4, "little"))
        h.update(t)
    return h.hexdigest()[:16]


class HistoryStore:
    """The past-chats token store of one tokenizer family (see the module docstring). Thread-safe."""

    def __init__(
        self,
        path: Path | None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        enabled: bool = True,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        if max_bytes < 4096:
            raise ValueError(f"the history store needs at least 4096 bytes, got {max_bytes}")
        self.path = path
        self.max_bytes = int(max_bytes)
        self.enabled = enabled
        self._warn = on_warning or log.warning
        self._lock = threading.Lock()
        self._loaded: list[np.ndarray] = []  # records read at open
        self._added: list[np.ndarray] = []  # records added since
        self._seen: set[tuple[int, int]] = set()  # (length, crc) of every record held
        self._frozen: FrozenIndex | None = None
        self._recent = SequenceIndex(n_min=4, n_max=4)
        self._opened = False

    # -- reading -----------------------------------------------------------------------------------------
    def _open(self) -> None:
        if self._opened:
            return
        self._opened = True
        if not self.enabled or self.path is None or not self.path.exists():
            return
        try:
            data = self.path.read_bytes()
        except OSError as e:
            self._warn(f"history cache {self.path.name}: cannot read it ({e}); starting without past chats")
            return
        records, good = _parse(data)
        if good < len(data):
            what = "the file is not a history cache" if good == 0 else f"{len(data) - good} damaged bytes at its end"
            self._warn(f"history cache {self.path.name}: ignored {what}")
            self._cut_to(good)
        for rec in records:
            self._seen.add(_record_id(rec))
        self._loaded = records

    def _cut_to(self, good: int) -> None:
        try:
            if good == 0:
                self.path.unlink()
            else:
                os.truncate(self.path, good)
        except OSError as e:
            self._warn(f"history cache {self.path.name}: cannot repair it ({e})")

    @property
    def n_tokens(self) -> int:
        """Tokens remembered (0 while switched off)."""
        with self._lock:
            if not self.enabled:
                return 0
            self._open()
            return sum(len(r) for r in self._loaded) + sum(len(r) for r in self._added)

    def indexes(self) -> tuple[FrozenIndex | None, SequenceIndex]:
        """(past chats read at open, records added since), for look-ups (nothing while switched off)."""
        with self._lock:
            if not self.enabled:
                return None, SequenceIndex(n_min=4, n_max=4)
            self._open()
            if self._frozen is None and self._loaded:
                self._frozen = FrozenIndex(_join(self._loaded))
            return self._frozen, self._recent

    # -- writing -----------------------------------------------------------------------------------------
    def add(self, tokens: Sequence[int]) -> bool:
        """Remember one document (a turn: the new prompt part and the reply). False when not stored."""
        if not self.enabled or len(tokens) < _MIN_TOKENS:
            return False
        rec = np.asarray(tokens, dtype=np.int32)
        if (rec < 0).any():
            raise ValueError("token ids are never negative")
        with self._lock:
            self._open()
            rid = _record_id(rec)
            if rid in self._seen:
                return False
            self._seen.add(rid)
            self._added.append(rec)
            self._recent.extend([*rec.tolist(), SEPARATOR])
            if self.path is not None:
                self._write(rec)
        return True

    def _write(self, rec: np.ndarray) -> None:
        payload = rec.astype("<i4").tobytes()
        blob = _RECORD.pack(len(rec), zlib.crc32(payload)) + payload
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            size = self.path.stat().st_size if self.path.exists() else 0
            if size + len(blob) > self.max_bytes:
                self._compact()
                return
            with open(self.path, "ab") as f:
                if size == 0:
                    f.write(_HEADER.pack(_MAGIC, _VERSION))
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            self._warn(f"history cache {self.path.name}: cannot write it ({e})")

    def _compact(self) -> None:
        """Keep the newest records within three quarters of the limit: one atomic rewrite."""
        records = [*self._loaded, *self._added]
        budget = self.max_bytes * 3 // 4 - _HEADER.size
        kept: list[np.ndarray] = []
        for rec in reversed(records):
            cost = _RECORD.size + 4 * len(rec)
            if cost > budget:
                break
            kept.append(rec)
            budget -= cost
        kept.reverse()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(_HEADER.pack(_MAGIC, _VERSION))
            for rec in kept:
                payload = rec.astype("<i4").tobytes()
                f.write(_RECORD.pack(len(rec), zlib.crc32(payload)) + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        # what is searched stays as it is for this session; the seen-set follows the file
        self._seen = {_record_id(r) for r in kept}

    def clear(self) -> None:
        """Forget every past chat: in memory and on disk."""
        with self._lock:
            self._loaded, self._added = [], []
            self._seen = set()
            self._frozen = None
            self._recent = SequenceIndex(n_min=4, n_max=4)
            self._opened = True
            if self.path is not None:
                for p in (self.path, self.path.with_name(self.path.name + ".tmp")):
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        pass


def _parse(data: bytes) -> tuple[list[np.ndarray], int]:
    """The records of a store file and the length of its good part (0: not a store at all)."""
    if len(data) < _HEADER.size:
        return [], 0
    magic, version = _HEADER.unpack_from(data, 0)
    if magic != _MAGIC or version != _VERSION:
        return [], 0
    records: list[np.ndarray] = []
    pos = _HEADER.size
    while pos + _RECORD.size <= len(data):
        n, crc = _RECORD.unpack_from(data, pos)
        start, end = pos + _RECORD.size, pos + _RECORD.size + 4 * n
        if n == 0 or end > len(data):
            break
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            break
        records.append(np.frombuffer(payload, dtype="<i4").astype(np.int32))
        pos = end
    return records, pos


def _record_id(rec: np.ndarray) -> tuple[int, int]:
    return len(rec), zlib.crc32(rec.astype("<i4").tobytes())


def _join(records: list[np.ndarray]) -> np.ndarray:
    sep = np.array([SEPARATOR], dtype=np.int32)
    return np.concatenate([part for rec in records for part in (rec, sep)])
