"""Read what a GGUF file says about its model without loading the model.

Only the header, the metadata and the tensor descriptions are parsed; tensor data is never read. The file
is memory-mapped, so a 10 GB model costs a few pages of RAM. Every length and count in the file is checked
against the bytes that are actually there before anything is allocated, and every problem surfaces as a
`GGUFError` with a one-line message meant for people, never as an IndexError or MemoryError.

GGUF layout (little-endian):

    magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
    kv_count x  (key: string, value_type: u32, value)
    tensor_count x  (name: string, n_dims: u32, dims: u64 x n_dims, ggml_type: u32, offset: u64)
    padding to `general.alignment` (default 32), then the tensor data

where a string is a u64 byte length followed by UTF-8 bytes and an array value is
(item_type: u32, count: u64, items).
"""

from __future__ import annotations

import functools
import mmap
import os
import re
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import gguf

from app.engine.errors import error_message
from app.engine.split_names import model_stem, parse_split_name

__all__ = [
    "GGML_TYPES",
    "GGUFError",
    "GGMLType",
    "ModelInfo",
    "TensorInfo",
    "file_type_name",
    "inspect_gguf",
    "to_json",
]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NESTING = 4  # arrays of arrays are legal in GGUF, but nobody nests deeper than this
SMALL_ARRAY = 64  # arrays up to this many items are kept in `ModelInfo.metadata`
# Beyond these sizes a length field is garbage, not a sign of a truncated download: real metadata items
# (vocabularies, merges) take tens of MB, real tensors tens of GB.
ABSURD_METADATA_BYTES = 1 << 30
ABSURD_TENSOR_BYTES = 1 << 44
MAX_GGML_TYPE = 256  # ggml has about 40 tensor types; ids this large are garbage


class GGUFError(Exception):
    """A GGUF file could not be read. `str(err)` is one human-readable line naming the file."""


# ---------------------------------------------------------------------------------------------------------
# ggml tensor types and llama.cpp file types


@dataclass(frozen=True)
class GGMLType:
    name: str
    block_size: int  # elements per block
    type_size: int  # bytes per block

    def nbytes(self, n_elements: int) -> int:
        return n_elements // self.block_size * self.type_size


# ggml_type id -> layout, from the gguf package (ggml's type traits); ids it does not know are sized from
# the gap to the next tensor when read
GGML_TYPES: Mapping[int, GGMLType] = MappingProxyType({
    int(qtype): GGMLType(qtype.name, block_size, type_size)
    for qtype, (block_size, type_size) in gguf.GGML_QUANT_SIZES.items()
})

# general.file_type (enum llama_ftype) -> the name people use for the quantization: the gguf package's
# LlamaFileType names without their MOSTLY_ / ALL_ prefix
_FILE_TYPES: Mapping[int, str] = MappingProxyType({
    int(ftype): ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    for ftype in gguf.LlamaFileType
    if ftype is not gguf.LlamaFileType.GUESSED
})
_FTYPE_GUESSED = int(gguf.LlamaFileType.GUESSED)  # llama.cpp ORs this flag in when it had to guess


def file_type_name(file_type: int) -> str | None:
    """'Q4_K_M' for 15, etc.; None for values llama.cpp does not know."""
    return _FILE_TYPES.get(file_type & ~_FTYPE_GUESSED)


# ---------------------------------------------------------------------------------------------------------
# public data


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length
    ggml_type: int
    n_elements: int
    n_bytes: int
    part: int = 0  # index into ModelInfo.split_paths

    @property
    def type_name(self) -> str:
        t = GGML_TYPES.get(self.ggml_type)
        return t.name if t else f"type{self.ggml_type}"

    @property
    def layer(self) -> int | None:
        """N for tensors named blk.N.*, else None."""
        m = _BLOCK_RE.match(self.name)
        return int(m.group(1)) if m else None


_BLOCK_RE = re.compile(r"blk\.(\d+)\.")


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    split_paths: tuple[Path, ...]
    file_size: int
    gguf_version: int
    architecture: str
    name: str
    parameter_count: int
    file_type: int | None
    quantization: str
    context_length: int | None
    block_count: int
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    key_length: int | None
    value_length: int | None
    vocab_size: int
    tokenizer_model: str | None
    tokenizer_pre: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    add_bos_token: bool | None
    add_eos_token: bool | None
    chat_template: str | None
    tensor_count: int
    n_kv: int
    # Scalars and short arrays of the (first part's) metadata; long arrays such as the vocabulary are
    # summarised as "<array of N TYPE>".
    metadata: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    tensors: tuple[TensorInfo, ...] = field(default=(), repr=False, compare=False)

    @property
    def display_name(self) -> str:
        return f"{self.name} ({self.quantization})"

    @property
    def has_recurrent_state(self) -> bool:
        """Whether the architecture keeps a running (recurrent) state: Mamba/SSM, RWKV, short-convolution
        layers — alone or in a hybrid with attention. Read from the metadata keys such models carry; llama.cpp
        says for sure once the model is loaded (`llama_backend.Model.memory_kind`)."""
        prefixes = tuple(f"{self.architecture}.{part}." for part in _RECURRENT_KEY_PARTS)
        return any(key.startswith(prefixes) for key in self.metadata)

    def token_bytes(self) -> tuple[bytes, ...]:
        """Raw text of every token, by id. Re-read from the file on demand and cached (a few, by path)."""
        st = _stat(self.path)
        return _read_tokens(str(self.path), st.st_size, st.st_mtime_ns)

    def tokens(self) -> tuple[str, ...]:
        """Token texts decoded as UTF-8 (invalid bytes replaced); compare `token_bytes()` for exactness."""
        return tuple(t.decode("utf-8", "replace") for t in self.token_bytes())


# metadata groups only models with a recurrent state have ("mamba.ssm.state_size", "rwkv7.wkv.head_size", ...)
_RECURRENT_KEY_PARTS = ("ssm", "wkv", "shortconv", "rwkv")


def to_json(info: ModelInfo) -> dict[str, Any]:
    """A JSON-serialisable summary of `info` (no token list, no per-tensor list)."""
    return {
        "path": str(info.path),
        "split_paths": [str(p) for p in info.split_paths],
        "file_size": info.file_size,
        "gguf_version": info.gguf_version,
        "architecture": info.architecture,
        "name": info.name,
        "parameter_count": info.parameter_count,
        "file_type": info.file_type,
        "quantization": info.quantization,
        "context_length": info.context_length,
        "block_count": info.block_count,
        "embedding_length": info.embedding_length,
        "head_count": info.head_count,
        "head_count_kv": info.head_count_kv,
        "key_length": info.key_length,
        "value_length": info.value_length,
        "vocab_size": info.vocab_size,
        "tokenizer_model": info.tokenizer_model,
        "tokenizer_pre": info.tokenizer_pre,
        "bos_token_id": info.bos_token_id,
        "eos_token_id": info.eos_token_id,
        "add_bos_token": info.add_bos_token,
        "add_eos_token": info.add_eos_token,
        "chat_template": info.chat_template,
        "tensor_count": info.tensor_count,
        "n_kv": info.n_kv,
    }


# ---------------------------------------------------------------------------------------------------------
# the parser

# GGUF value types
(
    _UINT8,
    _INT8,
    _UINT16,
    _INT16,
    _UINT32,
    _INT32,
    _FLOAT32,
    _BOOL,
    _STRING,
    _ARRAY,
    _UINT64,
    _INT64,
    _FLOAT64,
) = range(13)
_SCALAR_FORMATS: dict[int, struct.Struct] = {
    _UINT8: struct.Struct("<B"),
    _INT8: struct.Struct("<b"),
    _UINT16: struct.Struct("<H"),
    _INT16: struct.Struct("<h"),
    _UINT32: struct.Struct("<I"),
    _INT32: struct.Struct("<i"),
    _FLOAT32: struct.Struct("<f"),
    _BOOL: struct.Struct("<?"),
    _UINT64: struct.Struct("<Q"),
    _INT64: struct.Struct("<q"),
    _FLOAT64: struct.Struct("<d"),
}
_TYPE_NAMES = {
    _UINT8: "uint8", _INT8: "int8", _UINT16: "uint16", _INT16: "int16", _UINT32: "uint32", _INT32: "int32",
    _FLOAT32: "float32", _BOOL: "bool", _STRING: "string", _ARRAY: "array", _UINT64: "uint64",
    _INT64: "int64", _FLOAT64: "float64",
}  # fmt: skip
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class _Parser:
    """Walks one GGUF file held in a buffer; `where` says what is being read, for error messages."""

    def __init__(self, buf: Any, size: int, path: Path) -> None:
        self.buf = buf
        self.size = size
        self.path = path
        self.pos = 0
        self.where = "the header"

    # -- errors -------------------------------------------------------------------------------------------

    def truncated(self) -> GGUFError:
        return GGUFError(
            f"truncated GGUF file: {self.path} ends at byte {self.size} while reading {self.where}"
        )

    def corrupt(self, what: str) -> GGUFError:
        return GGUFError(f"corrupt GGUF file: {what}, in {self.where} of {self.path}")

    def need(self, n: int, what: str) -> None:
        """Make sure `n` more bytes exist. Missing bytes mean a truncated file, unless the length is absurd:
        more than the whole file *and* more than any real metadata item needs."""
        if n > self.size - self.pos:
            if n > self.size and n > ABSURD_METADATA_BYTES:
                raise self.corrupt(
                    f"{what} is larger than the file (needs {n} bytes, the file has {self.size})"
                )
            raise self.truncated()

    def check_count(self, n: int, what: str) -> None:
        """Reject a count whose minimum size is absurd; a plausible one is left to the reading loop, which
        then stops at the exact place a truncated file ends."""
        if n > self.size - self.pos and n > self.size and n > ABSURD_METADATA_BYTES:
            raise self.corrupt(
                f"{what} is larger than the file (needs at least {n} bytes, the file has {self.size})"
            )

    # -- primitives ---------------------------------------------------------------------------------------

    def u32(self) -> int:
        if self.pos + 4 > self.size:
            raise self.truncated()
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self) -> int:
        if self.pos + 8 > self.size:
            raise self.truncated()
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def raw_string(self) -> bytes:
        n = self.u64()
        self.need(n, f"a string of {n} bytes")
        s = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return s

    def string(self) -> str:
        return self.raw_string().decode("utf-8", "replace")

    def value_type(self) -> int:
        t = self.u32()
        if t not in _TYPE_NAMES:
            raise self.corrupt(f"unknown value type {t}")
        return t

    # -- values -------------------------------------------------------------------------------------------

    def value(self, vtype: int, key: str, depth: int = 0) -> Any:
        fmt = _SCALAR_FORMATS.get(vtype)
        if fmt is not None:
            if self.pos + fmt.size > self.size:
                raise self.truncated()
            (v,) = fmt.unpack_from(self.buf, self.pos)
            self.pos += fmt.size
            return v
        if vtype == _STRING:
            return self.string()
        return self.array(key, depth)

    def array(self, key: str, depth: int, keep_strings: bool = False) -> Any:
        if depth >= MAX_NESTING:
            raise self.corrupt(f"arrays nested more than {MAX_NESTING} deep")
        item_type = self.value_type()
        count = self.u64()
        fmt = _SCALAR_FORMATS.get(item_type)
        min_item = fmt.size if fmt is not None else (8 if item_type == _STRING else 12)
        self.check_count(count * min_item, f"array of {count} elements")
        small = count <= SMALL_ARRAY
        if fmt is not None:
            self.need(count * fmt.size, f"array of {count} elements")
            start = self.pos
            self.pos += count * fmt.size
            if small:
                return [fmt.unpack_from(self.buf, start + i * fmt.size)[0] for i in range(count)]
            return _Summary(count, item_type)
        if item_type == _STRING:
            if keep_strings:
                return self.string_items(count, key)
            if small:
                return [self.string() for _ in range(count)]
            self.skip_strings(count, key)
            return _Summary(count, item_type)
        if small:
            return [self.array(key, depth + 1) for _ in range(count)]
        for _ in range(count):  # walk without keeping anything
            self.array(key, depth + 1)
        return _Summary(count, item_type)

    def skip_strings(self, count: int, key: str) -> None:
        """Step over `count` strings (hot loop: a 262k-token vocabulary is walked on every inspection)."""
        buf, size, pos = self.buf, self.size, self.pos
        unpack = _U64.unpack_from
        for _ in range(count):
            if pos + 8 > size:
                self.pos = pos
                raise self.truncated()
            n = unpack(buf, pos)[0]
            pos += 8 + n
            if pos > size:
                self.pos = pos - n
                self.need(n, f"a string of {n} bytes")
        self.pos = pos

    def string_items(self, count: int, key: str) -> tuple[bytes, ...]:
        buf, size, pos = self.buf, self.size, self.pos
        unpack = _U64.unpack_from
        out: list[bytes] = []
        append = out.append
        for _ in range(count):
            if pos + 8 > size:
                self.pos = pos
                raise self.truncated()
            n = unpack(buf, pos)[0]
            pos += 8
            if pos + n > size:
                self.pos = pos
                self.need(n, f"a string of {n} bytes")
            append(bytes(buf[pos : pos + n]))
            pos += n
        self.pos = pos
        return tuple(out)


@dataclass(frozen=True)
class _Summary:
    """Stands in for an array too long to keep."""

    count: int
    item_type: int

    def __len__(self) -> int:
        return self.count

    def __str__(self) -> str:
        return f"<array of {self.count} {_TYPE_NAMES[self.item_type]}>"


@dataclass
class _Part:
    version: int
    kv: dict[str, Any]
    tensors: list[TensorInfo]
    size: int
    n_kv: int
    tokens: tuple[bytes, ...] | None


def _stat(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise GGUFError(f"no such file: {path}") from None
    except OSError as e:
        raise GGUFError(f"cannot read {path}: {e.strerror or e}") from None
    return st


def _parse_file(path: Path, part: int = 0, want_tokens: bool = False) -> _Part:
    st = _stat(path)
    if not os.path.isfile(path):
        raise GGUFError(f"not a file: {path}")
    size = st.st_size
    if size == 0:
        raise GGUFError(f"empty file: {path}")
    try:
        with open(path, "rb") as f:
            if size < 4:
                head = f.read(4)
                raise GGUFError(f"not a GGUF file: {path} (only {size} bytes: {head!r})")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _parse_buffer(mm, size, path, part, want_tokens)
    except GGUFError:
        raise
    except OSError as e:
        raise GGUFError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, IndexError, struct.error, OverflowError, MemoryError) as e:
        # a safety net: every length is checked before use, so this means a file changed while being read
        # or a case the checks above do not foresee
        raise GGUFError(f"corrupt GGUF file: {path} ({error_message(e)})") from None


def _parse_buffer(buf: Any, size: int, path: Path, part: int, want_tokens: bool) -> _Part:
    p = _Parser(buf, size, path)
    magic = bytes(buf[0:4])
    if magic != GGUF_MAGIC:
        raise GGUFError(f"not a GGUF file: {path} (magic {magic!r})")
    p.pos = 4
    version = p.u32()
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0 and (version >> 24) in SUPPORTED_VERSIONS:
            raise GGUFError(
                f"unsupported GGUF file: {path} is big-endian; only little-endian files are supported"
            )
        if version == 1:
            raise GGUFError(
                f"unsupported GGUF file: {path} uses GGUF version 1, which llama.cpp no longer reads"
            )
        raise GGUFError(f"unsupported GGUF file: {path} has GGUF version {version} (supported: 2 and 3)")
    n_tensors = p.u64()
    n_kv = p.u64()
    # every kv takes at least 8 (key length) + 4 (type) + 1 bytes, every tensor info at least 8 + 4 + 4 + 8
    p.check_count(n_kv * 13, f"a metadata count of {n_kv}")
    p.check_count(n_kv * 13 + n_tensors * 24, f"a tensor count of {n_tensors}")

    kv: dict[str, Any] = {}
    tokens: tuple[bytes, ...] | None = None
    for i in range(n_kv):
        p.where = f"metadata key {i + 1} of {n_kv}"
        key = p.string()
        p.where = f"metadata key {i + 1} of {n_kv} ({key!r})"
        vtype = p.value_type()
        if want_tokens and key == "tokenizer.ggml.tokens" and vtype == _ARRAY:
            p.where = f"metadata key {i + 1} of {n_kv} ({key!r})"
            arr = p.array(key, 0, keep_strings=True)
            tokens = arr if isinstance(arr, tuple) else tuple(s.encode() for s in arr)
            kv[key] = _Summary(len(tokens), _STRING)
        else:
            kv[key] = p.value(vtype, key)

    alignment = kv.get("general.alignment", DEFAULT_ALIGNMENT)
    if (
        not isinstance(alignment, int)
        or isinstance(alignment, bool)
        or alignment <= 0
        or alignment & (alignment - 1)
    ):
        p.where = "the metadata"
        raise p.corrupt(f"general.alignment {alignment!r} is not a power of two")

    raw: list[tuple[str, tuple[int, ...], int, int]] = []
    for i in range(n_tensors):
        p.where = f"tensor info {i + 1} of {n_tensors}"
        name = p.string()
        p.where = f"tensor info {i + 1} of {n_tensors} ({name!r})"
        n_dims = p.u32()
        if n_dims > MAX_DIMS:
            raise p.corrupt(f"{n_dims} dimensions (at most {MAX_DIMS})")
        dims = tuple(p.u64() for _ in range(n_dims))
        ggml_type = p.u32()
        offset = p.u64()
        raw.append((name, dims, ggml_type, offset))

    data_start = -(-p.pos // alignment) * alignment
    tensors: list[TensorInfo] = []
    by_offset = sorted(range(len(raw)), key=lambda j: raw[j][3])
    next_offset: dict[int, int] = {}
    for a, b in zip(by_offset, by_offset[1:], strict=False):
        next_offset[a] = raw[b][3]
    for j, (name, dims, ggml_type, offset) in enumerate(raw):
        p.where = f"tensor {name!r}"
        n_el = 1
        for d in dims:
            n_el *= d
        gt = GGML_TYPES.get(ggml_type)
        if gt is not None:
            if n_el % gt.block_size:
                raise p.corrupt(
                    f"{n_el} elements, not a multiple of the {gt.name} block size {gt.block_size}"
                )
            n_bytes = gt.nbytes(n_el)
        elif (
            ggml_type < MAX_GGML_TYPE
        ):  # a type newer than this table: its size is the gap to the next tensor
            n_bytes = next_offset.get(j, size - data_start) - offset
            if n_bytes < 0:
                raise p.corrupt(f"data offset {offset} beyond the end of the file")
        else:
            raise p.corrupt(f"unknown tensor type {ggml_type}")
        if offset % alignment:
            raise p.corrupt(f"offset {offset} not aligned to {alignment}")
        end = data_start + offset + n_bytes
        if end > size:
            if n_bytes > size and n_bytes > ABSURD_TENSOR_BYTES:
                raise p.corrupt(f"{n_el} elements ({n_bytes} bytes) larger than the file ({size} bytes)")
            raise GGUFError(
                f"truncated GGUF file: {path} has {size} bytes but tensor {name!r} ends at byte {end}"
                " (incomplete download?)"
            )
        tensors.append(TensorInfo(name, dims, ggml_type, n_el, n_bytes, part))
    return _Part(version, kv, tensors, size, n_kv, tokens)


@functools.lru_cache(maxsize=4)
def _read_tokens(path: str, size: int, mtime_ns: int) -> tuple[bytes, ...]:
    # size and mtime are part of the cache key so a replaced file is re-read
    part = _parse_file(Path(path), want_tokens=True)
    return part.tokens or ()


# ---------------------------------------------------------------------------------------------------------
# splits and the ModelInfo


def _split_paths(path: Path) -> tuple[Path, ...]:
    split = parse_split_name(path.name)
    if split is None:
        return (path,)
    paths = tuple(path.with_name(name) for name in split.part_names)
    for i, p in enumerate(paths, start=1):
        if not p.exists():
            raise GGUFError(f"split GGUF is incomplete: part {i} of {split.count} is missing ({p})")
    return paths


def _int(kv: Mapping[str, Any], key: str) -> int | None:
    v = kv.get(key)
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, list) and v and all(isinstance(x, int) for x in v):
        return max(v)  # per-layer values (e.g. head_count_kv of some architectures): the largest
    return None


def _str(kv: Mapping[str, Any], key: str) -> str | None:
    v = kv.get(key)
    return v if isinstance(v, str) else None


def _bool(kv: Mapping[str, Any], key: str) -> bool | None:
    v = kv.get(key)
    return v if isinstance(v, bool) else None


def _plain(v: Any) -> Any:
    if isinstance(v, _Summary):
        return str(v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def inspect_gguf(path: str | os.PathLike[str]) -> ModelInfo:
    """Describe the model in `path` (any part of a split model) from its metadata. Raises GGUFError."""
    path = Path(path)
    _stat(path)  # "no such file" before any talk of split parts
    paths = _split_paths(path)
    parts = [_parse_file(p, part=i) for i, p in enumerate(paths)]
    first = parts[0]
    kv = first.kv
    where = paths[0]

    split_count = _int(kv, "split.count")
    if split_count is not None and split_count > 1 and split_count != len(paths):
        raise GGUFError(
            f"split GGUF mismatch: {where} is one of {split_count} parts, but {len(paths)} were found "
            "(parts must keep their -0000N-of-0000M.gguf names)"
        )

    arch = _str(kv, "general.architecture")
    if not arch:
        raise GGUFError(f"not a model GGUF: {where} has no general.architecture")

    tensors = tuple(t for part in parts for t in part.tensors)
    block_count = _int(kv, f"{arch}.block_count")
    if block_count is None:
        layers = [t.layer for t in tensors if t.layer is not None]
        block_count = max(layers) + 1 if layers else 0

    embd = _int(kv, f"{arch}.embedding_length")
    n_head = _int(kv, f"{arch}.attention.head_count")
    n_head_kv = _int(kv, f"{arch}.attention.head_count_kv")
    if n_head_kv is None:
        n_head_kv = n_head
    default_head_dim = embd // n_head if embd and n_head else None
    key_length = _int(kv, f"{arch}.attention.key_length") or default_head_dim
    value_length = _int(kv, f"{arch}.attention.value_length") or default_head_dim

    tok = kv.get("tokenizer.ggml.tokens")
    if isinstance(tok, _Summary | list):
        vocab_size = len(tok)
    else:
        vocab_size = _int(kv, f"{arch}.vocab_size") or 0

    file_type = _int(kv, "general.file_type")
    quant = file_type_name(file_type) if file_type is not None else None
    if quant is None:
        weights = Counter(t.type_name for t in tensors if len(t.shape) == 2 and t.name.endswith(".weight"))
        if not weights:
            weights = Counter(t.type_name for t in tensors)
        quant = weights.most_common(1)[0][0] if weights else "unknown"

    name = _str(kv, "general.name") or model_stem(paths[0].name)
    metadata = MappingProxyType({k: _plain(v) for k, v in kv.items()})
    return ModelInfo(
        path=paths[0],
        split_paths=paths,
        file_size=sum(p.size for p in parts),
        gguf_version=first.version,
        architecture=arch,
        name=name,
        parameter_count=sum(t.n_elements for t in tensors),
        file_type=file_type,
        quantization=quant,
        context_length=_int(kv, f"{arch}.context_length"),
        block_count=block_count,
        embedding_length=embd,
        head_count=n_head,
        head_count_kv=n_head_kv,
        key_length=key_length,
        value_length=value_length,
        vocab_size=vocab_size,
        tokenizer_model=_str(kv, "tokenizer.ggml.model"),
        tokenizer_pre=_str(kv, "tokenizer.ggml.pre"),
        bos_token_id=_int(kv, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_int(kv, "tokenizer.ggml.eos_token_id"),
        add_bos_token=_bool(kv, "tokenizer.ggml.add_bos_token"),
        add_eos_token=_bool(kv, "tokenizer.ggml.add_eos_token"),
        chat_template=_str(kv, "tokenizer.chat_template"),
        tensor_count=len(tensors),
        n_kv=first.n_kv,
        metadata=metadata,
        tensors=tensors,
    )

