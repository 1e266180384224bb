"""The thin llama.cpp layer: loading, tokens, KV bookkeeping, batch invariance of the build."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.llama_backend import Context, EngineError, LoadCancelled, Model, backend_info


@pytest.fixture(scope="module")
def model(tiny_target):
    m = Model(tiny_target)
    yield m
    m.close()


def test_build_is_batch_invariant():
    """Tandem's promise 'same output as without speculation' needs a llama.cpp build whose batched matmul
    gives the same numbers as one-token decoding: built with GGML_LLAMAFILE=OFF (README's install)."""
    info = backend_info()
    assert info["batch_invariant_cpu"], info["system_info"]


def test_verify_batch_gives_bit_identical_logits_to_one_token_decoding(model):
    toks = model.tokenize("the value of data is in the list of items")
    with Context(model, n_ctx=256, n_threads=2) as ctx:
        ctx.decode(toks[:3])
        single = []
        for t in toks[3:9]:
            ctx.decode([t])
            single.append(ctx.logits(-1).copy())
        ctx.truncate(3)
        rows = ctx.decode(toks[3:9], outputs="all")
        assert rows == 6
        for i, ref in enumerate(single):
            assert np.array_equal(ctx.logits(i), ref), f"row {i} differs"


def test_tokens_mirror_the_kv_cache_and_truncate_rolls_back(model):
    toks = model.tokenize("hello world this is a test")
    with Context(model, n_ctx=128, n_threads=2) as ctx:
        ctx.decode(toks)
        assert ctx.tokens == toks and ctx.n_past == len(toks)
        ctx.truncate(2)
        assert ctx.tokens == toks[:2]
        # decoding after a rollback continues at the right position: same logits as a fresh context
        ctx.decode(toks[2:])
        a = ctx.logits(-1).copy()
        ctx.clear()
        ctx.decode(toks)
        assert np.array_equal(a, ctx.logits(-1))
        assert ctx.common_prefix(toks[:4] + [5, 6]) == 4


def test_context_overflow_is_a_clear_error(model):
    with Context(model, n_ctx=32, n_threads=2) as ctx:
        with pytest.raises(EngineError, match="context full"):
            ctx.decode(list(range(10, 10 + ctx.n_ctx + 1)))
        assert ctx.tokens == []


def test_detokenize_roundtrip_and_bytes(model):
    text = "the value of data: déjà vu €"
    toks = model.tokenize(text, add_special=False)
    assert model.detokenize(toks).strip() == text
    assert model.is_eog(model.eos)
    assert not model.is_eog(toks[0])


def test_missing_file_and_cancelled_load(tmp_path, tiny_target):
    with pytest.raises(EngineError, match="not found"):
        Model(tmp_path / "nope.gguf")
    with pytest.raises(LoadCancelled):
        Model(tiny_target, progress=lambda f: False)
    seen = []
    Model(tiny_target, progress=lambda f: seen.append(f) or True).close()
    assert seen and seen[-1] == pytest.approx(1.0)


def test_too_small_context_is_refused(model):
    with pytest.raises(EngineError, match="too small"):
        Context(model, n_ctx=8)
