"""Draft/target compatibility: llama.cpp's vocabulary rule, on hand-made, tiny and real models."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine.compat import (
    MAX_VOCAB_SIZE_DIFFERENCE,
    Verdict,
    check_draft_compatibility,
    draft_size_advice,
    vocab_type_label,
)
from app.engine.gguf_info import ModelInfo, inspect_gguf
from tests.engine.test_gguf_info import make_tokens, write_model


def _model(tmp_path: Path, name: str, **kwargs: object) -> ModelInfo:
    return inspect_gguf(write_model(tmp_path / f"{name}.gguf", **kwargs))  # type: ignore[arg-type]


def test_same_vocabulary_is_compatible(tmp_path: Path) -> None:
    target = _model(tmp_path, "target", n_layer=4)
    draft = _model(tmp_path, "draft", n_layer=1)
    verdict = check_draft_compatibility(target, draft)
    assert verdict == Verdict(True, "compatible: same tokenizer (llama, 320 tokens)")
    assert verdict


def test_one_token_text_differs(tmp_path: Path) -> None:
    tokens = make_tokens()
    tokens[300] = "▁other"
    target = _model(tmp_path, "target")
    draft = _model(tmp_path, "draft", tokens=tokens)
    verdict = check_draft_compatibility(target, draft)
    assert not verdict.compatible
    assert (
        verdict.reason == "different tokenizer: token 300 is '▁w41' in the target and '▁other' in the draft"
    )


def test_first_five_tokens_are_not_compared(tmp_path: Path) -> None:
    tokens = make_tokens()
    tokens[0] = "<unknown>"
    tokens[4] = "<0xFF>"
    verdict = check_draft_compatibility(_model(tmp_path, "target"), _model(tmp_path, "draft", tokens=tokens))
    assert verdict.compatible, verdict.reason


def test_different_tokenizer_type(tmp_path: Path) -> None:
    target = _model(tmp_path, "target", tokenizer_model="gpt2", add_bos=False)
    draft = _model(tmp_path, "draft", tokenizer_model="llama")
    verdict = check_draft_compatibility(target, draft)
    assert not verdict.compatible
    assert (
        verdict.reason
        == "different tokenizer type: target uses 'gpt2' (BPE), draft uses 'llama' (SentencePiece)"
    )


def test_vocabulary_size_difference_limit(tmp_path: Path) -> None:
    target = _model(tmp_path, "target")
    near = _model(tmp_path, "near", tokens=make_tokens(320 + MAX_VOCAB_SIZE_DIFFERENCE))
    far = _model(tmp_path, "far", tokens=make_tokens(320 + MAX_VOCAB_SIZE_DIFFERENCE + 1))

    ok = check_draft_compatibility(target, near)
    assert ok.compatible
    assert ok.reason == "compatible: same tokenizer (llama, 320 tokens in the target, 448 in the draft)"

    bad = check_draft_compatibility(target, far)
    assert not bad.compatible
    assert bad.reason == "vocabulary sizes differ by 129 (320 vs 449; at most 128 allowed)"


@pytest.mark.parametrize(
    ("draft_kwargs", "expected"),
    [
        ({"bos": 0}, "different BOS token: id 1 '<s>' in the target, id 0 '<unk>' in the draft"),
        ({"eos": 0}, "different EOS token: id 2 '</s>' in the target, id 0 '<unk>' in the draft"),
        (
            {"add_bos": False},
            "different BOS handling: the target adds a BOS token, the draft does not add a BOS token",
        ),
        (
            {"add_eos": True},
            "different EOS handling: the target does not add an EOS token, the draft adds an EOS token",
        ),
    ],
)
def test_special_tokens_must_match(tmp_path: Path, draft_kwargs: dict[str, object], expected: str) -> None:
    verdict = check_draft_compatibility(_model(tmp_path, "target"), _model(tmp_path, "draft", **draft_kwargs))
    assert verdict == Verdict(False, expected)


def test_missing_special_token_keys_use_llama_cpp_defaults(tmp_path: Path) -> None:
    # a SentencePiece vocabulary adds BOS by default, and its default BOS/EOS ids are 1 and 2
    explicit = _model(tmp_path, "explicit", add_bos=True, add_eos=False, bos=1, eos=2)
    implicit = _model(tmp_path, "implicit", add_bos=None, add_eos=None, bos=None, eos=None)
    assert check_draft_compatibility(explicit, implicit).compatible
    # a BPE vocabulary does not add BOS by default, except for the Llama-3 pre-tokenizer family
    bpe = _model(tmp_path, "bpe", tokenizer_model="gpt2", add_bos=None)
    bpe_no = _model(tmp_path, "bpe_no", tokenizer_model="gpt2", add_bos=False)
    llama3 = _model(tmp_path, "llama3", tokenizer_model="gpt2", tokenizer_pre="llama-bpe", add_bos=None)
    assert check_draft_compatibility(bpe, bpe_no).compatible
    assert "BOS handling" in check_draft_compatibility(llama3, bpe_no).reason


def test_unreadable_vocabulary_is_reported(tmp_path: Path) -> None:
    target = _model(tmp_path, "target")
    draft = _model(tmp_path, "draft")
    draft.path.unlink()
    verdict = check_draft_compatibility(target, draft)
    assert not verdict.compatible
    assert verdict.reason.startswith("cannot read the vocabulary: no such file")


def test_vocab_type_label() -> None:
    assert vocab_type_label("gpt2") == "'gpt2' (BPE)"
    assert vocab_type_label("llama") == "'llama' (SentencePiece)"
    assert vocab_type_label("t5") == "'t5' (Unigram)"
    assert vocab_type_label("mystery") == "'mystery'"
    assert vocab_type_label(None) == "no tokenizer type"


def test_draft_size_advice(tmp_path: Path) -> None:
    big = _model(tmp_path, "big", n_layer=6, n_embd=64, n_ff=256, n_head=4)
    small = _model(tmp_path, "small", n_layer=1)
    assert draft_size_advice(big, small) is None
    same = draft_size_advice(big, big)
    assert same is not None and "not smaller than the target" in same
    half = _model(tmp_path, "half", n_layer=4, n_embd=64, n_ff=256, n_head=4)
    advice = draft_size_advice(big, half)
    assert advice is not None and "of the target's size" in advice and "\n" not in advice


# ---------------------------------------------------------------------------------------------------------
# the shared tiny models and the real ones


def test_tiny_models(tiny_target: Path, tiny_draft: Path, tiny_other_vocab: Path) -> None:
    target, draft, other = inspect_gguf(tiny_target), inspect_gguf(tiny_draft), inspect_gguf(tiny_other_vocab)
    assert check_draft_compatibility(target, draft).compatible
    verdict = check_draft_compatibility(target, other)
    assert not verdict.compatible
    assert verdict.reason.startswith("different tokenizer: token ")


def test_a_model_with_a_recurrent_state_is_refused_as_draft_or_target(
    tiny_target: Path, tiny_draft: Path, tiny_mamba: Path
) -> None:
    target, draft, mamba = inspect_gguf(tiny_target), inspect_gguf(tiny_draft), inspect_gguf(tiny_mamba)
    assert mamba.has_recurrent_state and not target.has_recurrent_state and not draft.has_recurrent_state
    as_draft = check_draft_compatibility(target, mamba)  # same vocabulary: only the state rules it out
    assert not as_draft.compatible and "the draft (mamba)" in as_draft.reason and "rolled back" in as_draft.reason
    as_target = check_draft_compatibility(mamba, draft)
    assert not as_target.compatible and "the target (mamba)" in as_target.reason


@pytest.mark.real_model
def test_real_smollm2_f16_and_q4_are_compatible(smollm2_f16_path: Path, smollm2_q4_path: Path) -> None:
    f16, q4 = inspect_gguf(smollm2_f16_path), inspect_gguf(smollm2_q4_path)
    verdict = check_draft_compatibility(f16, q4)
    assert verdict == Verdict(True, "compatible: same tokenizer (gpt2, 49152 tokens)")
    assert check_draft_compatibility(q4, f16).compatible
    assert draft_size_advice(f16, q4) is None  # a third of the bytes
    advice = draft_size_advice(q4, f16)
    assert advice is not None and "not smaller" in advice


@pytest.mark.real_model
def test_real_gemma_cannot_draft_for_smollm2(smollm2_q4_path: Path, gemma_path: Path) -> None:
    smollm2, gemma = inspect_gguf(smollm2_q4_path), inspect_gguf(gemma_path)
    verdict = check_draft_compatibility(smollm2, gemma)
    assert not verdict.compatible
    assert verdict.reason == (
        "different tokenizer type: target uses 'gpt2' (BPE), draft uses 'llama' (SentencePiece)"
    )
    assert "tokenizer" in check_draft_compatibility(gemma, smollm2).reason
