"""The local model library: the GGUF files in the user's model folders.

``LocalLibrary(folders, cache_path)`` walks the folders recursively for ``*.gguf`` files. Any layout
works, including LM Studio's ``publisher/repo/file.gguf``; hidden sub-folders (``.download-*`` and the
like) are skipped, and a file reached twice (overlapping folders, symlinks) is listed once.

* **Split models** (``name-00001-of-00003.gguf`` ...) become one entry named by the first part; the other
  parts are not listed. A missing part makes the entry *broken*, with a reason naming the missing parts.
  The naming rule is :mod:`app.engine.split_names`' (``-00001-of-00001`` is one ordinary file).
* **Non-model GGUFs** (vision projectors ``mmproj-*``, LoRA adapters, vocabulary-only files) are kept
  apart: :meth:`LocalLibrary.non_models` lists them with their ``kind``; they are not chat models.
* **Unreadable files** (truncated downloads, corrupt or foreign files) are listed with ``error`` set to
  the one-line reason from :func:`app.engine.gguf_info.inspect_gguf`; a scan never raises for a file.

Metadata comes from :func:`~app.engine.gguf_info.inspect_gguf` and is cached in a JSON file keyed by the
path with the size and ``mtime_ns`` of every part, so re-scanning hundreds of files reads nothing but
directory entries. Each model also gets a ``tokenizer_family``: a short hash of everything that decides
draft compatibility (tokenizer type, pre-tokenizer, BOS/EOS ids and flags, the full token list). Two
models of one family are always compatible; :meth:`LocalLibrary.compatible_drafts` uses the family to
run :func:`~app.engine.compat.check_draft_compatibility` once per family rather than once per file, and
returns that check's own verdict.

No Qt here: the UI runs :meth:`LocalLibrary.scan` in a worker thread. Methods are thread-safe; scans
are serialised, and reading :meth:`LocalLibrary.models` never waits for a scan.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from app.engine.compat import Verdict, check_draft_compatibility
from app.engine.errors import error_message, one_line
from app.engine.gguf_info import GGUFError, ModelInfo, inspect_gguf, to_json
from app.engine.split_names import model_stem, parse_split_name
from app.store.db import default_data_dir

__all__ = [
    "CACHE_FILENAME",
    "LocalLibrary",
    "LocalModel",
    "ScanProgress",
    "default_cache_path",
    "default_models_folder",
    "reveal_in_file_manager",
    "tokenizer_family",
]

CACHE_FILENAME = "library-cache.json"
_CACHE_VERSION = 1

#: ``progress(done, total, path)`` - called after each file of a scan, from the scanning thread.
ScanProgress = Callable[[int, int, Path], object]

# kinds of entries
MODEL = "model"
MMPROJ = "mmproj"
ADAPTER = "adapter"
VOCAB = "vocab"


def default_models_folder() -> Path:
    """``<data dir>/models``: ``$TANDEM_DATA_DIR/models``, else ``user_data_dir("tandem")/models``."""
    return default_data_dir() / "models"


def default_cache_path() -> Path:
    """Where the app keeps the library's metadata cache."""
    return default_data_dir() / CACHE_FILENAME


# ---------------------------------------------------------------------------------------------------------
# public data


@dataclass(frozen=True)
class LocalModel:
    """One entry of the library. ``error`` is set (and most metadata None) when the file cannot be used."""

    path: Path  # the file; the first part of a split model
    name: str
    architecture: str | None
    parameter_count: int | None
    quantization: str | None
    file_size: int  # bytes, all parts together
    context_length: int | None
    block_count: int | None
    tokenizer_family: str | None
    error: str | None = None
    split_paths: tuple[Path, ...] = ()  # every part of a split model (present or not); () for one file
    kind: str = MODEL  # "model", or for non-model GGUFs "mmproj", "adapter", "vocab"

    @property
    def file_name(self) -> str:
        """The file's name without .gguf and split suffix: what users recognise (general.name is often the
        same for every quantization of a model)."""
        return model_stem(self.path.name)

    @property
    def broken(self) -> bool:
        return self.error is not None

    @property
    def files(self) -> tuple[Path, ...]:
        """All files of the model (the parts of a split model)."""
        return self.split_paths or (self.path,)

    def missing_files(self) -> list[Path]:
        """The model's files that are not (or no longer) on disk."""
        return [p for p in self.files if not p.is_file()]


# ---------------------------------------------------------------------------------------------------------
# tokenizer families


def tokenizer_family(info: ModelInfo) -> str:
    """A 16-hex-digit hash of everything `check_draft_compatibility` looks at. Reads the token list.

    Equal families are compatible with each other; different families may still be (llama.cpp tolerates
    differences in the first few ids and in padding), which only the real check can tell.
    """
    tokens = info.token_bytes()
    head = json.dumps(
        [
            info.tokenizer_model,
            info.tokenizer_pre,
            info.bos_token_id,
            info.eos_token_id,
            info.add_bos_token,
            info.add_eos_token,
            info.vocab_size,
            len(tokens),
        ]
    )
    h = hashlib.blake2b(head.encode(), digest_size=8)
    h.update(struct.pack(f"<{len(tokens)}I", *map(len, tokens)))
    h.update(b"".join(tokens))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# helpers


def _split_parts(path: Path) -> tuple[Path, ...]:
    """Every part of the split model `path` is a part of (present or not); () for an ordinary file."""
    split = parse_split_name(path.name)
    return tuple(path.with_name(name) for name in split.part_names) if split else ()


def _is_mmproj_name(path: Path) -> bool:
    return "mmproj" in path.name.lower()


def _stamp(paths: Sequence[Path]) -> list[list[int]] | None:
    out: list[list[int]] = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            return None
        out.append([st.st_size, st.st_mtime_ns])
    return out


def _kind_of(info: ModelInfo) -> str:
    general_type = info.metadata.get("general.type")
    if info.architecture == "clip" or general_type in ("mmproj", "clip-vision"):
        return MMPROJ
    if general_type == "adapter" or info.metadata.get("adapter.type") is not None:
        return ADAPTER
    if info.tensor_count == 0:
        return VOCAB
    return MODEL


_INFO_FIELDS = {f.name for f in fields(ModelInfo)} - {"metadata", "tensors"}


def _info_from_json(data: dict[str, Any]) -> ModelInfo:
    """A ModelInfo from `to_json` output (no metadata, no tensor list: enough for compatibility checks)."""
    kwargs = {k: data[k] for k in _INFO_FIELDS}
    kwargs["path"] = Path(kwargs["path"])
    kwargs["split_paths"] = tuple(Path(p) for p in kwargs["split_paths"])
    return ModelInfo(**kwargs)


def _folder_key(path: Path) -> str:
    try:
        return os.path.realpath(path)
    except OSError:  # pragma: no cover - realpath rarely fails
        return str(path)


# ---------------------------------------------------------------------------------------------------------
# the library


@dataclass
class _Record:
    """A cache entry: what one scan of one (possibly split) model found."""

    stamp: list[list[int]]
    kind: str
    info: dict[str, Any] | None = None
    family: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "stamp": self.stamp,
            "kind": self.kind,
            "info": self.info,
            "family": self.family,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Any) -> _Record | None:
        if not isinstance(data, dict) or not isinstance(data.get("stamp"), list):
            return None
        info = data.get("info")
        if info is not None and (not isinstance(info, dict) or not _INFO_FIELDS <= info.keys()):
            return None
        return cls(
            stamp=data["stamp"],
            kind=str(data.get("kind") or MODEL),
            info=info,
            family=data.get("family"),
            error=data.get("error"),
        )


class LocalLibrary:
    """The GGUF models in `folders`, with metadata cached in `cache_path` (None: in memory only)."""

    def __init__(self, folders: Iterable[Path | str], cache_path: Path | str | None = None) -> None:
        self._folders = [Path(f).expanduser() for f in folders]
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self._lock = threading.RLock()  # short holds: state below
        self._scan_lock = threading.Lock()  # one scan at a time
        self._cache: dict[str, _Record] = {}
        self._cache_dirty = False
        self._models: list[LocalModel] = []
        self._non_models: list[LocalModel] = []
        self._verdicts: dict[tuple[str, str], Verdict] = {}
        self.folder_errors: list[str] = []  # folders of the last scan that could not be read
        self._load_cache()

    # -- folders --------------------------------------------------------------------------------------

    @property
    def folders(self) -> list[Path]:
        with self._lock:
            return list(self._folders)

    @folders.setter
    def folders(self, folders: Iterable[Path | str]) -> None:
        with self._lock:
            self._folders = [Path(f).expanduser() for f in folders]

    # -- results --------------------------------------------------------------------------------------

    def models(self) -> list[LocalModel]:
        """Chat models of the last scan (broken ones included, marked by `error`), sorted by name."""
        with self._lock:
            return list(self._models)

    def non_models(self) -> list[LocalModel]:
        """GGUF files of the last scan that are not chat models (mmproj, adapters, vocabularies)."""
        with self._lock:
            return list(self._non_models)

    def find(self, path: Path | str) -> LocalModel | None:
        """The listed model whose file (or one of whose parts) is `path`."""
        key = _folder_key(Path(path))
        for m in self.models():
            if any(_folder_key(p) == key for p in m.files):
                return m
        return None

    # -- scanning -------------------------------------------------------------------------------------

    def scan(self, progress: ScanProgress | None = None) -> list[LocalModel]:
        """Walk the folders, refresh the cache, return the chat models (as `models()` will)."""
        with self._scan_lock:
            folders = self.folders
            files, folder_errors = self._walk(folders)
            groups = self._group(files)
            models: list[LocalModel] = []
            non_models: list[LocalModel] = []
            total = len(groups)
            for done, (first, parts, missing) in enumerate(groups, start=1):
                entry = self._entry(first, parts, missing)
                (models if entry.kind == MODEL else non_models).append(entry)
                if progress is not None:
                    progress(done, total, first)
            key = lambda m: (m.name.casefold(), str(m.path))  # noqa: E731
            models.sort(key=key)
            non_models.sort(key=key)
            seen = {str(first) for first, _, _ in groups}
            with self._lock:
                self._models = models
                self._non_models = non_models
                self.folder_errors = folder_errors
                self._prune(seen)
            self._save_cache()
            return list(models)

    def describe(self, path: Path | str) -> LocalModel:
        """A LocalModel for any GGUF file (listed or not), through the cache. Never raises for the file."""
        path = Path(path).absolute()
        parts = _split_parts(path)
        files = parts or (path,)
        missing = [p for p in files if not p.is_file()]
        entry = self._entry(files[0], parts, missing)
        self._save_cache()
        return entry

    def _walk(self, folders: Sequence[Path]) -> tuple[list[Path], list[str]]:
        files: list[Path] = []
        errors: list[str] = []
        seen_files: set[str] = set()
        seen_dirs: set[str] = set()
        for folder in folders:
            folder = folder.absolute()
            if not folder.is_dir():
                errors.append(
                    f"folder not found: {folder}" if not folder.exists() else f"not a folder: {folder}"
                )
                continue

            def on_error(err: OSError, root: Path = folder) -> None:
                errors.append(f"cannot read {err.filename or root}: {err.strerror or err}")

            for dirpath, dirnames, filenames in os.walk(folder, onerror=on_error, followlinks=True):
                real = _folder_key(Path(dirpath))
                if real in seen_dirs:  # a symlink loop or an overlapping folder
                    dirnames[:] = []
                    continue
                seen_dirs.add(real)
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not name.lower().endswith(".gguf") or name.startswith("."):
                        continue
                    p = Path(dirpath) / name
                    rk = _folder_key(p)
                    if rk in seen_files:
                        continue
                    seen_files.add(rk)
                    files.append(p)
        return files, errors

    @staticmethod
    def _group(files: Sequence[Path]) -> list[tuple[Path, tuple[Path, ...], list[Path]]]:
        """(first file, split parts or (), missing parts) per entry, in walk order."""
        present = set(files)
        out: list[tuple[Path, tuple[Path, ...], list[Path]]] = []
        done_groups: set[Path] = set()
        for p in files:
            parts = _split_parts(p)
            if not parts:
                out.append((p, (), []))
                continue
            if parts[0] in done_groups:
                continue
            done_groups.add(parts[0])
            missing = [q for q in parts if q not in present and not q.is_file()]
            out.append((parts[0], parts, missing))
        return out

    def _entry(self, first: Path, parts: tuple[Path, ...], missing: list[Path]) -> LocalModel:
        files = parts or (first,)
        present = [p for p in files if p not in missing]
        name_guess = model_stem(first.name)
        if missing and not parts:
            return self._broken(first, name_guess, 0, f"no such file: {first}", parts, MODEL)
        if missing:
            size = sum(p.stat().st_size for p in present if p.is_file())
            if len(missing) == 1:
                i = files.index(missing[0]) + 1
                what = f"part {i} of {len(files)} is missing ({missing[0].name})"
            else:
                numbers = ", ".join(str(files.index(m) + 1) for m in missing)
                what = f"parts {numbers} of {len(files)} are missing"
            kind = MMPROJ if _is_mmproj_name(first) else MODEL
            return self._broken(first, name_guess, size, f"split GGUF is incomplete: {what}", parts, kind)

        if _is_mmproj_name(first):
            stamp = _stamp(files) or []
            size = sum(s[0] for s in stamp)
            return LocalModel(
                first, name_guess, "clip", None, None, size, None, None, None, None, parts, MMPROJ
            )

        stamp = _stamp(files)
        if stamp is None:
            return self._broken(first, name_guess, 0, f"no such file: {first}", parts, MODEL)
        key = str(first)
        with self._lock:
            record = self._cache.get(key)
        if record is None or record.stamp != stamp:
            record = self._read(first, stamp)
            with self._lock:
                if record.error is None or not record.error.startswith(("cannot read", "no such file")):
                    self._cache[key] = record  # access problems are not cached: they may go away
                    self._cache_dirty = True
        size = sum(s[0] for s in stamp)
        if record.error is not None or record.info is None:
            return self._broken(first, name_guess, size, record.error or "unreadable", parts, record.kind)
        info = record.info
        return LocalModel(
            path=first,
            name=str(info.get("name") or name_guess),
            architecture=info.get("architecture"),
            parameter_count=info.get("parameter_count"),
            quantization=info.get("quantization"),
            file_size=size,
            context_length=info.get("context_length"),
            block_count=info.get("block_count"),
            tokenizer_family=record.family,
            error=None,
            split_paths=parts,
            kind=record.kind,
        )

    @staticmethod
    def _broken(
        path: Path, name: str, size: int, error: str, parts: tuple[Path, ...], kind: str
    ) -> LocalModel:
        return LocalModel(path, name, None, None, None, size, None, None, None, one_line(error), parts, kind)

    @staticmethod
    def _read(first: Path, stamp: list[list[int]]) -> _Record:
        """Parse one model (the expensive part of a scan)."""
        try:
            info = inspect_gguf(first)
        except GGUFError as e:
            return _Record(stamp, MODEL, error=str(e))
        except Exception as e:  # noqa: BLE001 - a scan reports, it does not crash
            return _Record(stamp, MODEL, error=f"cannot read {first}: {error_message(e)}")
        kind = _kind_of(info)
        family = None
        if kind == MODEL:
            try:
                family = tokenizer_family(info)
            except GGUFError:
                family = None
        data = to_json(info)
        return _Record(stamp, kind, info=data, family=family)

    # -- the cache ------------------------------------------------------------------------------------

    def _load_cache(self) -> None:
        if self.cache_path is None:
            return
        try:
            data = json.loads(self.cache_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # absent or damaged: start empty, it is only a cache
        if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION:
            return
        entries = data.get("entries")
        if not isinstance(entries, dict):
            return
        for key, value in entries.items():
            record = _Record.from_json(value)
            if record is not None:
                self._cache[key] = record

    def _save_cache(self) -> None:
        with self._lock:
            if self.cache_path is None or not self._cache_dirty:
                return
            payload = {
                "version": _CACHE_VERSION,
                "entries": {k: r.to_json() for k, r in self._cache.items()},
            }
            self._cache_dirty = False
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_path.with_name(
                f"{self.cache_path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
            )
            tmp.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, self.cache_path)
        except OSError:
            with self._lock:
                self._cache_dirty = True  # try again next time; the library works without it

    def _prune(self, seen: set[str]) -> None:
        """Forget cache entries of files that are gone (entries of other folders' files are kept)."""
        for key in list(self._cache):
            if key not in seen and not os.path.exists(key):
                del self._cache[key]
                self._cache_dirty = True

    # -- compatibility --------------------------------------------------------------------------------

    def _info_for(self, model: LocalModel) -> ModelInfo | None:
        with self._lock:
            record = self._cache.get(str(model.path))
        if record is not None and record.info is not None:
            try:
                return _info_from_json(record.info)
            except (KeyError, TypeError, ValueError):
                pass
        try:
            return inspect_gguf(model.path)
        except GGUFError:
            return None

    def compatible_drafts(self, target: LocalModel) -> list[tuple[LocalModel, Verdict]]:
        """Every other chat model with its verdict as a draft for `target`: compatible ones first
        (smallest first), then the incompatible ones, then unreadable ones, by name. The check runs once
        per pair of tokenizer families; the verdict is `check_draft_compatibility`'s own."""
        candidates = [m for m in self.models() if not _same_model(m, target)]
        if target.error is not None:
            reason = f"the target cannot be used: {target.error}"
            return [(m, Verdict(False, reason)) for m in candidates]
        target_info: ModelInfo | None = None
        results: list[tuple[LocalModel, Verdict]] = []
        for m in candidates:
            if m.error is not None:
                results.append((m, Verdict(False, f"this file cannot be used: {m.error}")))
                continue
            key = None
            if target.tokenizer_family and m.tokenizer_family:
                key = (target.tokenizer_family, m.tokenizer_family)
            with self._lock:
                verdict = self._verdicts.get(key) if key else None
            if verdict is None:
                if target_info is None:
                    target_info = self._info_for(target)
                    if target_info is None:
                        reason = f"cannot read the target: {target.path}"
                        return [(c, Verdict(False, reason)) for c in candidates]
                draft_info = self._info_for(m)
                if draft_info is None:
                    verdict = Verdict(False, f"cannot read {m.path}")
                else:
                    verdict = check_draft_compatibility(target_info, draft_info)
                    # the verdict depends only on what the family hashes; read errors are not cached
                    if key and not verdict.reason.startswith("cannot read"):
                        with self._lock:
                            self._verdicts[key] = verdict
            results.append((m, verdict))
        results.sort(
            key=lambda mv: (
                not mv[1],
                mv[0].error is not None,
                mv[0].file_size if mv[1] else 0,
                mv[0].name.casefold(),
                str(mv[0].path),
            )
        )
        return results

    # -- file actions ---------------------------------------------------------------------------------

    def delete(self, model: LocalModel) -> list[Path]:
        """Delete every file of `model` (all parts of a split model); returns the deleted paths.

        Raises OSError (naming the file) when a part exists but cannot be deleted; parts already gone
        are skipped."""
        deleted: list[Path] = []
        failure: OSError | None = None
        for p in model.files:
            try:
                p.unlink()
                deleted.append(p)
            except FileNotFoundError:
                continue
            except OSError as e:
                failure = failure or OSError(e.errno, f"cannot delete {p}: {e.strerror or e}")
        with self._lock:
            self._models = [m for m in self._models if not _same_model(m, model)]
            self._non_models = [m for m in self._non_models if not _same_model(m, model)]
            if self._cache.pop(str(model.path), None) is not None:
                self._cache_dirty = True
        self._save_cache()
        if failure is not None:
            raise failure
        return deleted

    @staticmethod
    def reveal_in_file_manager(path: Path | str, **kwargs: Any) -> Verdict:
        """Show `path` in the system file manager (see :func:`reveal_in_file_manager`)."""
        return reveal_in_file_manager(path, **kwargs)


def _same_model(a: LocalModel, b: LocalModel) -> bool:
    return a.path == b.path or _folder_key(a.path) == _folder_key(b.path)


def reveal_in_file_manager(
    path: Path | str,
    *,
    platform: str | None = None,
    run: Callable[[list[str]], object] | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> Verdict:
    """Open the folder holding `path` (selecting the file where the platform can) in the file manager.

    Uses ``explorer /select,`` on Windows, ``open -R`` on macOS and ``xdg-open <folder>`` elsewhere.
    Returns a falsy Verdict whose reason says why when the file manager cannot be started."""
    path = Path(path)
    platform = platform or sys.platform
    run = run or (lambda cmd: subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    folder = path if path.is_dir() else path.parent
    if not folder.is_dir():
        return Verdict(False, f"the folder no longer exists: {folder}")
    if platform.startswith("win"):
        cmd = ["explorer", f"/select,{path}"] if path.exists() else ["explorer", str(folder)]
    elif platform == "darwin":
        cmd = ["open", "-R", str(path)] if path.exists() else ["open", str(folder)]
    else:
        opener = which("xdg-open") or which("gio")
        if opener is None:
            return Verdict(
                False, f"no file manager found (xdg-open is not installed); the file is in {folder}"
            )
        cmd = [opener, "open", str(folder)] if Path(opener).name == "gio" else [opener, str(folder)]
    try:
        run(cmd)
    except OSError as e:
        return Verdict(
            False, f"cannot start the file manager ({cmd[0]}): {e.strerror or e}; the file is in {folder}"
        )
    return Verdict(True, f"opened {folder}")
