"""GGUF inspection: metadata of small hand-made files, splits, every kind of broken file, the real models."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import gguf
import numpy as np
import pytest

from app.engine.gguf_info import GGML_TYPES, GGUFError, ModelInfo, file_type_name, inspect_gguf, to_json

# ---------------------------------------------------------------------------------------------------------
# a small GGUF writer shared by the engine tests


def make_tokens(n: int = 320, variant: str = "") -> list[str]:
    """A SentencePiece-like vocabulary of `n` tokens: specials, byte tokens, then words."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    i = 0
    while len(tokens) < n:
        tokens.append(f"▁w{variant}{i}")
        i += 1
    return tokens[:n]


def write_model(
    path: Path,
    *,
    arch: str = "llama",
    name: str | None = "test model",
    n_layer: int = 2,
    n_embd: int = 16,
    n_head: int = 4,
    n_head_kv: int | None = 2,
    n_ff: int = 32,
    tokens: Sequence[str] | None = None,
    tokenizer_model: str = "llama",
    tokenizer_pre: str | None = None,
    bos: int | None = 1,
    eos: int | None = 2,
    add_bos: bool | None = True,
    add_eos: bool | None = False,
    file_type: int | None = int(gguf.LlamaFileType.ALL_F32),
    weight_dtype: type = np.float32,
    tied_output: bool = False,
    chat_template: str | None = None,
    extra: Callable[[gguf.GGUFWriter], None] | None = None,
    split_max_tensors: int = 0,
) -> Path:
    """Write a small llama-style GGUF (tensors filled with zeros) and return its path."""
    tokens = list(tokens if tokens is not None else make_tokens())
    n_vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors)
    if name is not None:
        w.add_name(name)
    w.add_context_length(2048)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    if n_head_kv is not None:
        w.add_head_count_kv(n_head_kv)
    if file_type is not None:
        w.add_file_type(file_type)
    w.add_tokenizer_model(tokenizer_model)
    if tokenizer_pre is not None:
        w.add_tokenizer_pre(tokenizer_pre)
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types([1] * n_vocab)
    if bos is not None:
        w.add_bos_token_id(bos)
    if eos is not None:
        w.add_eos_token_id(eos)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    if add_eos is not None:
        w.add_add_eos_token(add_eos)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    if extra is not None:
        extra(w)

    kv_dim = (n_head_kv or n_head) * (n_embd // n_head)

    def weight(rows: int, cols: int) -> np.ndarray:
        return np.zeros((rows, cols), dtype=weight_dtype)

    w.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", weight(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.attn_k.weight", weight(kv_dim, n_embd))
        w.add_tensor(f"blk.{i}.attn_v.weight", weight(kv_dim, n_embd))
        w.add_tensor(f"blk.{i}.attn_output.weight", weight(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", weight(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_up.weight", weight(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_down.weight", weight(n_embd, n_ff))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    if not tied_output:
        w.add_tensor("output.weight", weight(n_vocab, n_embd))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def assert_one_line_error(path: Path, *fragments: str) -> str:
    """inspect_gguf(path) must raise GGUFError (nothing else) with a one-line message containing `fragments`."""
    with pytest.raises(GGUFError) as exc_info:
        inspect_gguf(path)
    msg = str(exc_info.value)
    assert msg and "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "small.gguf", chat_template="{{ messages }}")


# ---------------------------------------------------------------------------------------------------------
# metadata


def test_inspect_small_model(small_model: Path) -> None:
    info = inspect_gguf(small_model)
    assert info.path == small_model
    assert info.split_paths == (small_model,)
    assert info.file_size == small_model.stat().st_size
    assert info.gguf_version == 3
    assert info.architecture == "llama"
    assert info.name == "test model"
    assert info.file_type == 0 and info.quantization == "F32"
    assert info.context_length == 2048
    assert info.block_count == 2
    assert info.embedding_length == 16
    assert (info.head_count, info.head_count_kv) == (4, 2)
    assert (info.key_length, info.value_length) == (4, 4)  # 16 // 4
    assert info.vocab_size == 320
    assert (info.tokenizer_model, info.tokenizer_pre) == ("llama", None)
    assert (info.bos_token_id, info.eos_token_id) == (1, 2)
    assert (info.add_bos_token, info.add_eos_token) == (True, False)
    assert info.chat_template == "{{ messages }}"
    assert info.tensor_count == 1 + 2 * 9 + 2
    assert info.display_name == "test model (F32)"


def test_counts_match_gguf_reader(small_model: Path) -> None:
    info = inspect_gguf(small_model)
    reader = gguf.GGUFReader(small_model)
    assert info.n_kv == len(reader.fields) - 3  # the reader adds GGUF.version/tensor_count/kv_count
    assert info.tensor_count == len(reader.tensors)
    assert info.parameter_count == sum(int(t.n_elements) for t in reader.tensors)
    for mine, theirs in zip(info.tensors, reader.tensors, strict=True):
        assert mine.name == theirs.name
        assert mine.n_elements == int(theirs.n_elements)
        assert mine.n_bytes == int(theirs.n_bytes)
        assert mine.shape == tuple(int(d) for d in theirs.shape)


def test_tokens_are_read_lazily_and_exactly(small_model: Path) -> None:
    info = inspect_gguf(small_model)
    assert "tokens" not in vars(info)
    assert info.tokens() == tuple(make_tokens())
    assert info.token_bytes()[300] == "▁w41".encode()
    assert info.token_bytes() is info.token_bytes()  # cached


def test_tokens_are_reread_when_the_file_changes(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf")
    info = inspect_gguf(path)
    assert info.tokens()[300] == "▁w41"
    tokens = make_tokens()
    tokens[300] = "▁changed-and-longer"
    write_model(path, tokens=tokens)
    assert info.tokens()[300] == "▁changed-and-longer"


def test_to_json_is_serialisable_without_tokens(small_model: Path) -> None:
    data = to_json(inspect_gguf(small_model))
    text = json.dumps(data)
    assert "<0x41>" not in text and "▁w1" not in text
    assert data["vocab_size"] == 320 and data["quantization"] == "F32"
    assert data["path"] == str(small_model)


def test_defaults_when_keys_are_missing(tmp_path: Path) -> None:
    path = write_model(
        tmp_path / "My-Model.Q8.gguf", name=None, n_head_kv=None, file_type=None, weight_dtype=np.float16,
        add_bos=None, add_eos=None, bos=None,
    )  # fmt: skip
    info = inspect_gguf(path)
    assert info.name == "My-Model.Q8"  # the file stem
    assert info.head_count_kv == info.head_count == 4
    assert info.file_type is None
    assert info.quantization == "F16"  # the most common type of the 2-D weights
    assert info.add_bos_token is None and info.add_eos_token is None and info.bos_token_id is None
    assert info.chat_template is None


def test_explicit_head_dims_and_per_layer_head_counts(tmp_path: Path) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_key_length(8)
        w.add_value_length(6)

    info = inspect_gguf(write_model(tmp_path / "m.gguf", extra=extra))
    assert (info.key_length, info.value_length) == (8, 6)


def test_nested_and_long_arrays_are_summarised(tmp_path: Path) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_array("test.nested", [[1, 2], [3]])
        w.add_array("test.long", list(range(1000)))
        w.add_array("test.words", ["a", "b"])

    info = inspect_gguf(write_model(tmp_path / "m.gguf", extra=extra))
    assert info.metadata["test.nested"] == [[1, 2], [3]]
    assert info.metadata["test.long"] == "<array of 1000 int32>"
    assert info.metadata["test.words"] == ["a", "b"]
    assert info.metadata["tokenizer.ggml.tokens"] == "<array of 320 string>"
    assert info.metadata["general.architecture"] == "llama"


def test_quantization_names() -> None:
    assert file_type_name(15) == "Q4_K_M"
    assert file_type_name(3) == "Q4_1"
    assert file_type_name(1) == "F16"
    assert file_type_name(15 | 1024) == "Q4_K_M"  # the "guessed" flag
    assert file_type_name(999) is None
    for ftype in gguf.LlamaFileType:
        if ftype.name.startswith("MOSTLY_") or ftype.name == "ALL_F32":
            expected = ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")
            assert file_type_name(int(ftype)) == expected, ftype


def test_ggml_type_layouts() -> None:
    layouts = {i: (t.name, t.block_size, t.type_size) for i, t in GGML_TYPES.items()}
    assert layouts[0] == ("F32", 1, 4)
    assert layouts[3] == ("Q4_1", 32, 20)
    assert layouts[12] == ("Q4_K", 256, 144)
    assert layouts[30] == ("BF16", 1, 2)
    assert GGML_TYPES[12].nbytes(4096 * 256) == 4096 * 144


def test_model_info_is_frozen_and_hashable(small_model: Path) -> None:
    info = inspect_gguf(small_model)
    with pytest.raises(AttributeError):
        info.name = "x"  # type: ignore[misc]
    assert hash(info) == hash(inspect_gguf(small_model))
    assert isinstance(info, ModelInfo)


# ---------------------------------------------------------------------------------------------------------
# split models


def test_split_model(tmp_path: Path) -> None:
    base = tmp_path / "big.gguf"
    write_model(base, n_layer=3, split_max_tensors=8)
    parts = sorted(tmp_path.glob("big-*-of-*.gguf"))
    assert len(parts) >= 3
    whole = inspect_gguf(write_model(tmp_path / "whole.gguf", n_layer=3))

    info = inspect_gguf(parts[-1])  # any part leads to the first
    assert info.path == parts[0]
    assert info.split_paths == tuple(parts)
    assert info.file_size == sum(p.stat().st_size for p in parts)
    assert info.parameter_count == whole.parameter_count
    assert info.tensor_count == whole.tensor_count
    assert info.vocab_size == 320 and info.block_count == 3
    assert info.name == "test model"
    assert info.tokens() == whole.tokens()


def test_split_model_with_a_missing_part(tmp_path: Path) -> None:
    write_model(tmp_path / "big.gguf", n_layer=3, split_max_tensors=8)
    parts = sorted(tmp_path.glob("big-*-of-*.gguf"))
    parts[1].unlink()
    assert_one_line_error(parts[0], "split GGUF is incomplete", f"part 2 of {len(parts)}", parts[1].name)


def test_renamed_split_part(tmp_path: Path) -> None:
    write_model(tmp_path / "big.gguf", n_layer=3, split_max_tensors=8)
    first = sorted(tmp_path.glob("big-*-of-*.gguf"))[0]
    renamed = first.rename(tmp_path / "renamed.gguf")
    assert_one_line_error(renamed, "split GGUF mismatch", "renamed.gguf")


# ---------------------------------------------------------------------------------------------------------
# broken files


def test_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(tmp_path / "nope.gguf", "no such file", "nope.gguf")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    assert_one_line_error(path, "empty file", str(path))


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.gguf"
    folder.mkdir()
    assert_one_line_error(folder, "folder.gguf")


@pytest.mark.parametrize(
    "content", [b"PK\x03\x04" + b"\0" * 100, b"\x7fELF" + b"\0" * 60, b"GG", b"ggufxxxxxxxx"]
)
def test_wrong_magic(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    assert_one_line_error(path, "not a GGUF file", str(path))


def test_zip_magic_is_shown(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    assert_one_line_error(path, "magic b'PK\\x03\\x04'")


@pytest.mark.parametrize(
    ("version", "fragment"),
    [(1, "version 1"), (0, "version 0"), (4, "version 4"), (99, "version 99"), (0x03000000, "big-endian")],
)
def test_unsupported_versions(small_model: Path, version: int, fragment: str) -> None:
    data = bytearray(small_model.read_bytes())
    data[4:8] = struct.pack("<I", version)
    small_model.write_bytes(bytes(data))
    assert_one_line_error(small_model, "unsupported GGUF file", fragment)


def _truncated_copies(source: Path, folder: Path, offsets: Iterable[int]) -> Iterator[tuple[int, Path]]:
    """A copy of `source` cut to each of `offsets` bytes in turn (longest first: os.truncate is cheap)."""
    cut = folder / "cut.gguf"
    shutil.copyfile(source, cut)
    for n in sorted(offsets, reverse=True):
        os.truncate(cut, n)
        yield n, cut


def test_truncated_at_every_7th_byte(tmp_path: Path) -> None:
    tiny = write_model(tmp_path / "tiny.gguf", n_layer=1, n_embd=4, n_head=2, n_head_kv=1, n_ff=8,
                       tokens=make_tokens(270), chat_template="{{ x }}")  # fmt: skip
    offsets = range(1, tiny.stat().st_size, 7)
    assert len(offsets) > 2000
    for n, cut in _truncated_copies(tiny, tmp_path, offsets):
        msg = assert_one_line_error(cut, str(cut))
        assert msg.startswith(("truncated GGUF file", "corrupt GGUF file", "not a GGUF file")), (n, msg)


def test_truncated_in_the_header_at_every_byte(small_model: Path, tmp_path: Path) -> None:
    for n, cut in _truncated_copies(small_model, tmp_path, range(4, 64)):
        assert_one_line_error(cut, "truncated GGUF file", f"ends at byte {n}")


def _token_array_offset(data: bytes) -> int:
    """Offset of the first token string (its u64 length) in a file written by write_model."""
    key = b"tokenizer.ggml.tokens"
    at = data.index(key) + len(key)
    assert struct.unpack_from("<II", data, at) == (9, 8)  # ARRAY of STRING
    return at + 8 + 8


def test_truncated_inside_the_token_array(small_model: Path, tmp_path: Path) -> None:
    start = _token_array_offset(small_model.read_bytes())
    for n, cut in _truncated_copies(small_model, tmp_path, range(start, start + 3000, 5)):
        msg = assert_one_line_error(cut, "truncated GGUF file", f"ends at byte {n}", "tokenizer.ggml.tokens")
        assert "metadata key" in msg


def test_truncated_in_the_tensor_data(small_model: Path, tmp_path: Path) -> None:
    data = small_model.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 100])
    assert_one_line_error(cut, "truncated GGUF file", "incomplete download")


def test_absurd_array_length(small_model: Path) -> None:
    data = bytearray(small_model.read_bytes())
    count_at = _token_array_offset(data) - 8
    data[count_at : count_at + 8] = struct.pack("<Q", 4_000_000_000_000)
    small_model.write_bytes(bytes(data))
    assert_one_line_error(
        small_model, "corrupt GGUF file", "array of 4000000000000 elements", "larger than the file",
        "tokenizer.ggml.tokens",
    )  # fmt: skip


def test_absurd_string_length_in_array(small_model: Path) -> None:
    data = bytearray(small_model.read_bytes())
    at = _token_array_offset(data)  # step to the 4th string's length field
    for _ in range(3):
        (n,) = struct.unpack_from("<Q", data, at)
        at += 8 + n
    data[at : at + 8] = struct.pack("<Q", 2**63)
    small_model.write_bytes(bytes(data))
    assert_one_line_error(small_model, "corrupt GGUF file", "string of 9223372036854775808 bytes")


def test_absurd_key_length(small_model: Path) -> None:
    data = bytearray(small_model.read_bytes())
    data[24:32] = struct.pack("<Q", 2**64 - 1)  # the first key's length
    small_model.write_bytes(bytes(data))
    assert_one_line_error(small_model, "corrupt GGUF file", "larger than the file", "metadata key 1 of")


@pytest.mark.parametrize(("field", "offset"), [("tensor count", 8), ("metadata count", 16)])
def test_absurd_counts(small_model: Path, field: str, offset: int) -> None:
    data = bytearray(small_model.read_bytes())
    data[offset : offset + 8] = struct.pack("<Q", 2**62)
    small_model.write_bytes(bytes(data))
    assert_one_line_error(small_model, "corrupt GGUF file", f"a {field} of {2**62}")


def test_bad_value_type(small_model: Path) -> None:
    data = bytearray(small_model.read_bytes())
    key = b"general.name"
    at = data.index(key) + len(key)
    assert struct.unpack_from("<I", data, at) == (8,)
    data[at : at + 4] = struct.pack("<I", 99)
    small_model.write_bytes(bytes(data))
    assert_one_line_error(small_model, "corrupt GGUF file", "unknown value type 99", "general.name")


def test_bad_array_item_type(small_model: Path) -> None:
    data = bytearray(small_model.read_bytes())
    key = b"tokenizer.ggml.tokens"
    at = data.index(key) + len(key) + 4
    data[at : at + 4] = struct.pack("<I", 13)
    small_model.write_bytes(bytes(data))
    assert_one_line_error(small_model, "corrupt GGUF file", "unknown value type 13")


def test_too_many_tensor_dimensions(small_model: Path) -> None:
    data = bytearray(small_model.read_bytes())
    name = b"blk.0.attn_q.weight"
    at = data.index(name) + len(name)
    assert struct.unpack_from("<I", data, at) == (2,)
    data[at : at + 4] = struct.pack("<I", 9)
    small_model.write_bytes(bytes(data))
    assert_one_line_error(small_model, "corrupt GGUF file", "9 dimensions", "blk.0.attn_q.weight")


@pytest.mark.parametrize(("ggml_type", "fragment"), [(77, None), (5000, "unknown tensor type 5000")])
def test_unknown_tensor_type(small_model: Path, ggml_type: int, fragment: str | None) -> None:
    data = bytearray(small_model.read_bytes())
    name = b"blk.0.attn_q.weight"
    at = data.index(name) + len(name) + 4 + 2 * 8  # after n_dims and the two dims
    assert struct.unpack_from("<I", data, at) == (0,)  # F32
    data[at : at + 4] = struct.pack("<I", ggml_type)
    small_model.write_bytes(bytes(data))
    if fragment is None:  # a newer type than this code knows: its size is the gap to the next tensor
        info = inspect_gguf(small_model)
        t = next(t for t in info.tensors if t.name == "blk.0.attn_q.weight")
        assert t.type_name == "type77" and t.n_bytes >= 16 * 16 * 4
    else:
        assert_one_line_error(small_model, "corrupt GGUF file", fragment, "blk.0.attn_q.weight")


def test_absurd_tensor_shape(small_model: Path) -> None:
    data = bytearray(small_model.read_bytes())
    name = b"blk.0.attn_q.weight"
    at = data.index(name) + len(name) + 4
    data[at : at + 8] = struct.pack("<Q", 2**40)
    small_model.write_bytes(bytes(data))
    assert_one_line_error(small_model, "corrupt GGUF file", "blk.0.attn_q.weight", "larger than the file")


def test_random_corruption_never_escapes_as_another_exception(small_model: Path, tmp_path: Path) -> None:
    data = small_model.read_bytes()
    header_end = _token_array_offset(data) + 4000  # mutate the header, metadata and tensor infos
    rng = random.Random(1234)
    bad = tmp_path / "bad.gguf"
    failures = 0
    for _ in range(400):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(0, min(header_end, len(data)))
            mutated[at] = rng.randrange(256)
        bad.write_bytes(bytes(mutated))
        try:
            inspect_gguf(bad)
        except GGUFError as e:
            failures += 1
            assert "\n" not in str(e)
    assert failures > 0


# ---------------------------------------------------------------------------------------------------------
# the real models


def _timed_inspect(path: Path) -> tuple[ModelInfo, float]:
    inspect_gguf(path)  # warm the page cache: the test measures parsing, not the disk
    start = time.perf_counter()
    info = inspect_gguf(path)
    return info, time.perf_counter() - start


@pytest.mark.real_model
def test_real_smollm2_q4(smollm2_q4_path: Path) -> None:
    info, seconds = _timed_inspect(smollm2_q4_path)
    assert seconds < 0.5, f"inspecting took {seconds:.2f} s"
    assert info.architecture == "llama"
    assert info.block_count == 30
    assert info.vocab_size == 49152
    assert info.context_length == 8192
    assert info.embedding_length == 576
    assert (info.head_count, info.head_count_kv, info.key_length) == (9, 3, 64)
    assert info.quantization == "Q4_1" and info.file_type == 3
    assert info.tokenizer_model == "gpt2" and info.tokenizer_pre == "smollm"
    assert (info.bos_token_id, info.eos_token_id, info.add_bos_token) == (1, 2, False)
    assert info.tensor_count == 272
    assert 134_000_000 < info.parameter_count < 135_000_000
    assert info.chat_template and "<|im_start|>" in info.chat_template
    tokens = info.tokens()
    assert len(tokens) == 49152 and tokens[0] == "<|endoftext|>" and tokens[1] == "<|im_start|>"


@pytest.mark.real_model
def test_real_smollm2_f16(smollm2_f16_path: Path, smollm2_q4_path: Path) -> None:
    f16, q4 = inspect_gguf(smollm2_f16_path), inspect_gguf(smollm2_q4_path)
    assert f16.quantization == "F16"
    assert f16.parameter_count == q4.parameter_count
    assert f16.block_count == 30 and f16.vocab_size == 49152
    assert f16.file_size > 2 * q4.file_size
    assert f16.token_bytes() == q4.token_bytes()


@pytest.mark.real_model
def test_real_gemma(gemma_path: Path) -> None:
    info, seconds = _timed_inspect(gemma_path)
    assert seconds < 0.5, f"inspecting took {seconds:.2f} s"
    assert info.architecture == "gemma3"
    assert info.quantization == "Q4_K_M" and info.file_type == 15
    assert info.block_count == 18
    assert info.vocab_size == 262144
    assert (info.head_count, info.head_count_kv, info.key_length, info.value_length) == (4, 1, 256, 256)
    assert info.tokenizer_model == "llama"
    assert (info.bos_token_id, info.eos_token_id, info.add_bos_token, info.add_eos_token) == (
        2,
        1,
        True,
        False,
    )
    assert 260_000_000 < info.parameter_count < 275_000_000
    start = time.perf_counter()
    tokens = info.token_bytes()
    assert time.perf_counter() - start < 2.0
    assert len(tokens) == 262144 and tokens[2] == b"<bos>"
    json.dumps(to_json(info))
