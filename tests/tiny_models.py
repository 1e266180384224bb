"""Tiny random-weight llama-architecture GGUF models, written with the `gguf` package in well under a second.

They are real models as far as llama.cpp is concerned (SentencePiece vocabulary with byte fallback, GQA
attention, SwiGLU feed-forward), just small and random. To make speculative decoding meaningful the
weights are shaped so that the next token depends mostly on the current one (a strong residual path from
the embedding to the output) and a little on the context (the transformer blocks). The draft shares the
target's embedding and output matrices but has fewer, different blocks: it agrees with the target most of
the time, not always — so both the accept and the reject paths of the loop run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

# A word-piece vocabulary for the SentencePiece tokenizer: whole words with the "▁" space marker, letters,
# then the 256 byte-fallback tokens, so any text can be tokenized.
_WORDS = (
    "the of and to in is was for on that with as by at from it an be this are or his which her had not "
    "but were they have one all their has its been more who also after first two new can other when only "
    "def return if else import class self print for while True False None value list dict key data code "
    "json name id type items true false null"
).split()


@dataclass(frozen=True)
class TinySpec:
    n_layer: int
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    block_scale: float = 0.05  # how much the blocks (the context) move the residual stream
    output_scale: float = 6.0  # how peaked the logits are
    weights_seed: int = 0  # seed of the shared embedding/output matrices
    blocks_seed: int = 1  # seed of the transformer blocks
    vocab_variant: int = 0  # 0 = the standard vocabulary; 1 = same size, different pieces
    # a token id after which the model (greedily) ends: the EOS row of the output matrix points along
    # that token's embedding (the draft shares the output matrix, so it predicts the end there too)
    eos_after: int | None = None
    name: str = "tiny"
    chat_template: str | None = None  # None: the shared template (_writer)


def vocabulary(variant: int = 0) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types of the tiny SentencePiece vocabulary."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    scores = [0.0, 0.0, 0.0]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(gguf.TokenType.BYTE)
        scores.append(0.0)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    pieces = ["▁"] + [f"▁{w}" for w in _WORDS] + letters + [f"▁{c}" for c in letters] + list(".,:;!?()[]{}=\"'-_0123456789")
    if variant == 1:
        # another tokenizer family: same size, other pieces (upper-cased words in another order)
        pieces = ["▁"] + [f"▁{w.upper()}" for w in reversed(_WORDS)] + letters + [f"▁{c}" for c in letters] + list(
            ".,:;!?()[]{}=\"'-_0123456789"
        )
    seen: set[str] = set(tokens)
    for i, p in enumerate(pieces):
        if p in seen:
            continue
        seen.add(p)
        tokens.append(p)
        types.append(gguf.TokenType.NORMAL)
        scores.append(-float(i) * 0.01 - (0.0 if len(p) > 2 else 5.0))
    return tokens, scores, [int(t) for t in types]


def _writer(path: Path, arch: str, name: str, vocab_variant: int, n_layer: int, n_embd: int,
            chat_template: str | None = None) -> gguf.GGUFWriter:
    """A GGUF writer with the shared header: sizes, the SentencePiece vocabulary, special tokens, template."""
    tokens, scores, types = vocabulary(vocab_variant)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(name)
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(chat_template or (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ))
    return w


def _finish(w: gguf.GGUFWriter, path: Path) -> Path:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_tiny_model(path: Path, spec: TinySpec) -> Path:
    """Write a tiny llama GGUF at `path` and return it."""
    n_vocab = len(vocabulary(spec.vocab_variant)[0])
    e, h, hkv, ff = spec.n_embd, spec.n_head, spec.n_head_kv, spec.n_ff
    head_dim = e // h

    shared = np.random.default_rng(spec.weights_seed)
    blocks = np.random.default_rng(spec.blocks_seed)

    w = _writer(path, "llama", spec.name, spec.vocab_variant, spec.n_layer, e, spec.chat_template)
    w.add_feed_forward_length(ff)
    w.add_head_count(h)
    w.add_head_count_kv(hkv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)

    def f32(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float32)

    # numpy shape (rows, cols) = (out_features, in_features); the gguf writer reverses it for ggml
    emb = shared.standard_normal((n_vocab, e))
    out = shared.standard_normal((n_vocab, e)) * spec.output_scale / np.sqrt(e)
    if spec.eos_after is not None:
        direction = emb[spec.eos_after] / np.linalg.norm(emb[spec.eos_after])
        out[2] = direction * 3.0 * spec.output_scale  # token 2 = </s>, the EOS
    w.add_tensor("token_embd.weight", f32(emb))
    for i in range(spec.n_layer):
        s = spec.block_scale
        w.add_tensor(f"blk.{i}.attn_norm.weight", f32(np.ones(e)))
        w.add_tensor(f"blk.{i}.attn_q.weight", f32(blocks.standard_normal((e, e)) / np.sqrt(e)))
        w.add_tensor(f"blk.{i}.attn_k.weight", f32(blocks.standard_normal((hkv * head_dim, e)) / np.sqrt(e)))
        w.add_tensor(f"blk.{i}.attn_v.weight", f32(blocks.standard_normal((hkv * head_dim, e)) / np.sqrt(e)))
        w.add_tensor(f"blk.{i}.attn_output.weight", f32(blocks.standard_normal((e, e)) * s / np.sqrt(e)))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", f32(np.ones(e)))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", f32(blocks.standard_normal((ff, e)) / np.sqrt(e)))
        w.add_tensor(f"blk.{i}.ffn_up.weight", f32(blocks.standard_normal((ff, e)) / np.sqrt(e)))
        w.add_tensor(f"blk.{i}.ffn_down.weight", f32(blocks.standard_normal((e, ff)) * s / np.sqrt(ff)))
    w.add_tensor("output_norm.weight", f32(np.ones(e)))
    w.add_tensor("output.weight", f32(out))
    return _finish(w, path)


def write_tiny_mamba(path: Path, n_layer: int = 2, n_embd: int = 64, seed: int = 5) -> Path:
    """A tiny Mamba (recurrent: one running state per sequence, no KV cache) with the standard vocabulary.

    Its memory cannot drop the last tokens of a sequence, so it cannot take part in speculative decoding;
    plain decoding works.
    """
    n_vocab = len(vocabulary(0)[0])
    d_inner, d_state, d_conv, dt_rank = 2 * n_embd, 8, 4, 4
    rng = np.random.default_rng(seed)
    w = _writer(path, "mamba", "tiny-mamba", 0, n_layer, n_embd)
    w.add_feed_forward_length(0)
    w.add_head_count(0)
    w.add_ssm_conv_kernel(d_conv)
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_state_size(d_state)
    w.add_ssm_time_step_rank(dt_rank)
    w.add_layer_norm_rms_eps(1e-5)

    def f32(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float32)

    # numpy shapes are (out, in): the reverse of ggml's
    w.add_tensor("token_embd.weight", f32(rng.standard_normal((n_vocab, n_embd))))
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", f32(np.ones(n_embd)))
        w.add_tensor(f"blk.{i}.ssm_in.weight", f32(rng.standard_normal((2 * d_inner, n_embd)) / np.sqrt(n_embd)))
        w.add_tensor(f"blk.{i}.ssm_conv1d.weight", f32(rng.standard_normal((d_inner, d_conv)) / np.sqrt(d_conv)))
        w.add_tensor(f"blk.{i}.ssm_conv1d.bias", f32(np.zeros(d_inner)))
        w.add_tensor(f"blk.{i}.ssm_x.weight", f32(rng.standard_normal((dt_rank + 2 * d_state, d_inner)) / np.sqrt(d_inner)))
        w.add_tensor(f"blk.{i}.ssm_dt.weight", f32(rng.standard_normal((d_inner, dt_rank)) / np.sqrt(dt_rank)))
        w.add_tensor(f"blk.{i}.ssm_dt.bias", f32(np.full(d_inner, -2.0)))
        w.add_tensor(f"blk.{i}.ssm_a", f32(-np.tile(np.arange(1, d_state + 1, dtype=np.float64), (d_inner, 1))))
        w.add_tensor(f"blk.{i}.ssm_d", f32(np.ones(d_inner)))
        w.add_tensor(f"blk.{i}.ssm_out.weight", f32(rng.standard_normal((n_embd, d_inner)) * 0.1 / np.sqrt(d_inner)))
    w.add_tensor("output_norm.weight", f32(np.ones(n_embd)))
    w.add_tensor("output.weight", f32(rng.standard_normal((n_vocab, n_embd)) * 6.0 / np.sqrt(n_embd)))
    return _finish(w, path)


TARGET = TinySpec(n_layer=4, blocks_seed=11, name="tiny-target")
DRAFT = TinySpec(n_layer=1, blocks_seed=22, name="tiny-draft")
OTHER_VOCAB = TinySpec(n_layer=1, blocks_seed=33, vocab_variant=1, name="tiny-other-vocab")


def write_tiny_set(folder: Path) -> dict[str, Path]:
    """Write the standard trio (target, compatible draft, incompatible draft) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "target": write_tiny_model(folder / "tiny-target.gguf", TARGET),
        "draft": write_tiny_model(folder / "tiny-draft.gguf", DRAFT),
        "other": write_tiny_model(folder / "tiny-other-vocab.gguf", OTHER_VOCAB),
    }
