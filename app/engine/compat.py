"""Can a model serve as the speculative draft for another?

The draft proposes token ids and the target verifies them, so both must speak the same vocabulary. The
rule follows llama.cpp's check for speculative decoding:

1. the same vocabulary type (tokenizer.ggml.model: SentencePiece, BPE, ...);
2. the same "add BOS" and "add EOS" behaviour and the same BOS and EOS token ids;
3. vocabulary sizes that differ by at most 128 (models often pad their vocabulary with unused tokens);
4. the same text for every token id from 5 up to the smaller vocabulary size (the first ids are
   special tokens whose text differs harmlessly between exports).

Where a GGUF leaves a special-token setting out, llama.cpp falls back to a default that depends on the
vocabulary type; the same defaults are applied here before comparing.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.engine.gguf_info import GGUFError, ModelInfo
from app.engine.units import format_bytes, format_count

__all__ = [
    "MAX_VOCAB_SIZE_DIFFERENCE",
    "FIRST_CHECKED_TOKEN_ID",
    "Verdict",
    "check_draft_compatibility",
    "draft_size_advice",
    "vocab_type_label",
]

MAX_VOCAB_SIZE_DIFFERENCE = 128
FIRST_CHECKED_TOKEN_ID = 5

# tokenizer.ggml.model -> the vocabulary type llama.cpp derives from it
_VOCAB_TYPES = {
    "llama": "SentencePiece",
    "gpt2": "BPE",
    "bert": "WordPiece",
    "t5": "Unigram",
    "rwkv": "RWKV",
    "plamo2": "PLaMo-2",
    "no_vocab": "no vocabulary",
    "none": "no vocabulary",
}

# Defaults llama.cpp uses when the GGUF does not set them: (bos id, eos id, add_bos, add_eos)
_DEFAULTS: dict[str, tuple[int | None, int | None, bool, bool]] = {
    "llama": (1, 2, True, False),
    "gpt2": (11, 11, False, False),
    "bert": (101, None, True, False),
    "t5": (None, 1, False, True),
    "rwkv": (None, None, False, False),
}
# BPE pre-tokenizers of the Llama-3 family add a BOS token by default
_BPE_ADD_BOS_PRE = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral"}


@dataclass(frozen=True)
class Verdict:
    """A yes or no with one line saying why; falsy for no.

    The answer of `check_draft_compatibility`, and of actions elsewhere that can fail without it being
    exceptional (the library's "show in file manager"): `compatible` is the yes, `reason` the line.
    """

    compatible: bool
    reason: str

    def __bool__(self) -> bool:
        return self.compatible


def vocab_type_label(tokenizer_model: str | None) -> str:
    """ "'gpt2' (BPE)" for messages."""
    if tokenizer_model is None:
        return "no tokenizer type"
    kind = _VOCAB_TYPES.get(tokenizer_model)
    return f"{tokenizer_model!r} ({kind})" if kind else repr(tokenizer_model)


@dataclass(frozen=True)
class _Special:
    bos: int | None
    eos: int | None
    add_bos: bool | None
    add_eos: bool | None


def _special(info: ModelInfo) -> _Special:
    bos, eos, add_bos, add_eos = _DEFAULTS.get(info.tokenizer_model or "", (None, None, None, None))
    if info.tokenizer_model == "gpt2" and info.tokenizer_pre in _BPE_ADD_BOS_PRE:
        add_bos = True
    return _Special(
        bos=info.bos_token_id if info.bos_token_id is not None else bos,
        eos=info.eos_token_id if info.eos_token_id is not None else eos,
        add_bos=info.add_bos_token if info.add_bos_token is not None else add_bos,
        add_eos=info.add_eos_token if info.add_eos_token is not None else add_eos,
    )


def _show(token: bytes, limit: int = 40) -> str:
    text = token.decode("utf-8", "replace")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text)


def _token_text(tokens: tuple[bytes, ...] | None, token_id: int | None) -> str:
    if token_id is None:
        return "none"
    if tokens is not None and 0 <= token_id < len(tokens):
        return f"id {token_id} {_show(tokens[token_id])}"
    return f"id {token_id}"


def _adds(flag: bool | None, token: str) -> str:
    article = "an" if token == "EOS" else "a"
    return f"adds {article} {token} token" if flag else f"does not add {article} {token} token"


def check_draft_compatibility(target: ModelInfo, draft: ModelInfo) -> Verdict:
    """Whether `draft` can propose tokens for `target`; `reason` says why (not) in one line."""
    for info, role in ((target, "target"), (draft, "draft")):
        if info.has_recurrent_state:
            return Verdict(
                False,
                f"the {role} ({info.architecture}) keeps a recurrent state that cannot be rolled back to drop "
                "rejected guesses: it cannot take part in speculative decoding",
            )
    if target.tokenizer_model != draft.tokenizer_model:
        return Verdict(
            False,
            f"different tokenizer type: target uses {vocab_type_label(target.tokenizer_model)}, "
            f"draft uses {vocab_type_label(draft.tokenizer_model)}",
        )
    for info, role in ((target, "target"), (draft, "draft")):
        if info.vocab_size <= 0:
            return Verdict(False, f"the {role} model has no vocabulary in its GGUF file")

    t, d = _special(target), _special(draft)
    if t.add_bos != d.add_bos:
        return Verdict(
            False,
            f"different BOS handling: the target {_adds(t.add_bos, 'BOS')}, the draft {_adds(d.add_bos, 'BOS')}",
        )
    if t.add_eos != d.add_eos:
        return Verdict(
            False,
            f"different EOS handling: the target {_adds(t.add_eos, 'EOS')}, the draft {_adds(d.add_eos, 'EOS')}",
        )

    try:
        t_tokens, d_tokens = target.token_bytes(), draft.token_bytes()
    except GGUFError as e:
        return Verdict(False, f"cannot read the vocabulary: {e}")

    for label, a, b in (("BOS", t.bos, d.bos), ("EOS", t.eos, d.eos)):
        if a != b:
            return Verdict(
                False,
                f"different {label} token: {_token_text(t_tokens, a)} in the target, "
                f"{_token_text(d_tokens, b)} in the draft",
            )

    n_t, n_d = len(t_tokens), len(d_tokens)
    diff = abs(n_t - n_d)
    if diff > MAX_VOCAB_SIZE_DIFFERENCE:
        return Verdict(
            False,
            f"vocabulary sizes differ by {diff} ({n_t} vs {n_d}; at most {MAX_VOCAB_SIZE_DIFFERENCE} allowed)",
        )

    for i in range(FIRST_CHECKED_TOKEN_ID, min(n_t, n_d)):
        if t_tokens[i] != d_tokens[i]:
            return Verdict(
                False,
                f"different tokenizer: token {i} is {_show(t_tokens[i])} in the target "
                f"and {_show(d_tokens[i])} in the draft",
            )

    sizes = f"{n_t} tokens" if n_t == n_d else f"{n_t} tokens in the target, {n_d} in the draft"
    return Verdict(True, f"compatible: same tokenizer ({target.tokenizer_model}, {sizes})")


def draft_size_advice(target: ModelInfo, draft: ModelInfo) -> str | None:
    """A warning when the draft is too big to speed anything up, else None.

    Generating a token is bound by memory bandwidth, so a draft's cost per token is roughly its weight
    bytes relative to the target's. Speculation pays off when the draft costs a small fraction of the
    target; past half the target's size the drafting time eats most of the gain.
    """
    t_bytes, d_bytes = max(target.file_size, 1), draft.file_size
    ratio = d_bytes / t_bytes
    p_t, p_d = format_count(target.parameter_count), format_count(draft.parameter_count)
    s_t, s_d = format_bytes(t_bytes), format_bytes(d_bytes)
    if ratio >= 1.0:
        return (
            f"the draft ({p_d} parameters, {s_d}) is not smaller than the target ({p_t}, {s_t}): "
            "speculative decoding will be slower than the target alone"
        )
    if ratio > 0.5:
        return (
            f"the draft ({p_d} parameters, {s_d}) is {ratio:.0%} of the target's size ({p_t}, {s_t}): "
            "expect little or no speed-up; a draft under a fifth of the target works best"
        )
    return None
