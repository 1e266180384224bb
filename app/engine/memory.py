"""How much RAM and VRAM a load plan needs, estimated from the GGUF metadata alone.

Per model, split between GPU and CPU the way llama.cpp places things (formulas in bytes; float = 4):

Weights
    Exact tensor sizes from the tensor descriptions. Tensors named ``blk.N.*`` belong to layer N.
    llama.cpp offloads the *last* ``n_gpu_layers`` layers; the output layer (``output.weight``,
    ``output_norm.weight`` and other tensors outside the blocks) goes to the GPU only when
    ``n_gpu_layers > block_count`` (or -1); the input embeddings (``token_embd.weight``) always stay on
    the CPU. A model without ``output.weight`` reuses the embeddings as output matrix, so a fully
    offloaded one also holds a GPU copy of ``token_embd``. Weights in RAM are memory-mapped from the
    file: they count once they have been read, which happens while loading and on every token.

KV cache
    ``n_ctx * head_count_kv * (key_length * bpe_k + value_length * bpe_v)`` per layer, on the device of
    its layer. Bytes per element (bpe): f32 4, f16/bf16 2, q8_0 34/32, q4_0 18/32, q4_1 20/32,
    q5_0 22/32, q5_1 24/32, iq4_nl 18/32. Sliding-window layers count in full, as llama.cpp allocates
    them by default (``swa_full``).

Compute
    llama.cpp *reserves* scratch memory for the worst case, a micro-batch of ``n_ubatch`` tokens that
    all produce logits; the largest live tensors are the logits (``n_vocab`` floats per token) and,
    without flash attention, the attention scores and masks (``(n_head + n_masks) * n_ctx`` floats per
    token; ``n_masks`` is 2 for models with sliding-window layers, else 1)::

        reserved = 4 * n_ubatch * (max(n_vocab, (n_head + n_masks) * n_ctx) + n_embd + n_ff)

    On the GPU that reservation is real memory. In RAM only the pages that are used become resident,
    and generation asks for ``n_outputs`` rows of logits, not ``n_ubatch``; what a full-context prompt
    really touches is::

        working = 4 * max(n_outputs * n_vocab, n_ubatch * (n_head + n_masks) * n_ctx)
                  + 4 * n_ubatch * (n_embd + n_ff)
                  + 2 * n_ubatch * n_head * n_ctx          (f16 copy of the scores for the KQ*V product)

    With flash attention there is no score matrix: the ``n_ctx`` terms become ``2 * n_ubatch * n_ctx *
    n_masks`` (f16 masks). ``ModelLoad.flash_attn`` defaults to False, the larger figure; llama.cpp's
    "auto" setting turns flash attention on where the backend supports it (the CPU does). Plus the
    logits output buffer, ``4 * n_vocab * n_outputs``.

Overhead
    The vocabulary and bookkeeping llama.cpp builds in RAM, ``12 MiB + 180 bytes * n_vocab`` (fitted to
    SmolLM2 and Gemma 3), and the file's metadata pages (file size minus tensor data).

A process that uses the GPU at all also pays for the CUDA context; `GPU_CONTEXT_BYTES` is an allowance
for it (not measured here: the machine this was calibrated on has no GPU). Memory used by Python, Qt and
llama.cpp's own code is not part of the estimate. docs/memory-estimate.md compares all this with
measurements.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from app.engine.gguf_info import ModelInfo
from app.engine.units import format_memory

__all__ = [
    "CACHE_TYPE_BYTES",
    "GPU_CONTEXT_BYTES",
    "MemoryEstimate",
    "ModelEstimate",
    "ModelLoad",
    "compute_reserved_bytes",
    "compute_working_bytes",
    "estimate_load",
    "estimate_model",
    "estimate_split",
    "kv_cache_bytes",
    "rough_load_bytes",
]

# bytes per element of the KV cache types llama.cpp accepts (--cache-type-k / -v)
CACHE_TYPE_BYTES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
    "q4_1": 20 / 32,
    "q5_0": 22 / 32,
    "q5_1": 24 / 32,
    "iq4_nl": 18 / 32,
}

_MIB = 1024**2
GPU_CONTEXT_BYTES = 300 * _MIB  # CUDA context + cuBLAS workspace: an allowance, once per process
VOCAB_BASE_BYTES = 12 * _MIB
VOCAB_BYTES_PER_TOKEN = 180


@dataclass
class ModelLoad:
    """How one model is to be loaded.

    n_gpu_layers: -1 (or anything above block_count) offloads every layer and the output layer.
    n_ubatch: the micro-batch llama.cpp computes at once (its compute buffers scale with it).
    n_outputs: how many tokens of a batch need logits (1 for plain generation; the target of
    speculative decoding needs one per drafted token plus one).
    flash_attn: whether flash attention is on (no attention-score scratch then).
    """

    info: ModelInfo
    n_gpu_layers: int
    n_ctx: int
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    n_ubatch: int = 512
    n_outputs: int = 1
    flash_attn: bool = False

    def __post_init__(self) -> None:
        for name in ("cache_type_k", "cache_type_v"):
            value = str(getattr(self, name)).lower()
            if value not in CACHE_TYPE_BYTES:
                known = ", ".join(CACHE_TYPE_BYTES)
                raise ValueError(f"unknown KV cache type {value!r} for {name} (known: {known})")
            setattr(self, name, value)
        if self.n_ctx <= 0:
            raise ValueError(f"context size must be positive, got {self.n_ctx}")
        if self.n_ubatch <= 0:
            raise ValueError(f"micro-batch size must be positive, got {self.n_ubatch}")


@dataclass(frozen=True)
class ModelEstimate:
    name: str
    gpu_layers: int  # repeating layers on the GPU
    output_on_gpu: bool
    weights_gpu: int
    weights_cpu: int
    kv_gpu: int
    kv_cpu: int
    compute_gpu: int  # reserved compute buffer in VRAM
    compute_cpu: int  # resident compute scratch + logits output buffer in RAM
    compute_cpu_reserved: int  # what llama.cpp allocates in RAM for it (only partly resident)
    overhead_cpu: int  # vocabulary, bookkeeping and file metadata

    @property
    def gpu_bytes(self) -> int:
        return self.weights_gpu + self.kv_gpu + self.compute_gpu

    @property
    def cpu_bytes(self) -> int:
        """Expected resident RAM (what RSS shows) once a full-context prompt has been processed."""
        return self.weights_cpu + self.kv_cpu + self.compute_cpu + self.overhead_cpu

    @property
    def cpu_buffer_bytes(self) -> int:
        """Host buffers as llama.cpp reports them when loading (model + KV + output + compute)."""
        return self.weights_cpu + self.kv_cpu + self.compute_cpu_reserved

    def describe(self) -> str:
        """'SmolLM2 (Q4_1): weights 92 MiB RAM, KV cache 45 MiB RAM, compute 67 MiB RAM, other 20 MiB RAM'."""

        def part(label: str, gpu: int, cpu: int) -> str:
            where = []
            if gpu:
                where.append(f"{format_memory(gpu)} VRAM")
            if cpu or not gpu:
                where.append(f"{format_memory(cpu)} RAM")
            return f"{label} {' + '.join(where)}"

        return (
            f"{self.name}: {part('weights', self.weights_gpu, self.weights_cpu)}, "
            f"{part('KV cache', self.kv_gpu, self.kv_cpu)}, {part('compute', self.compute_gpu, self.compute_cpu)}, "
            f"other {format_memory(self.overhead_cpu)} RAM"
        )


@dataclass(frozen=True)
class MemoryEstimate:
    models: tuple[ModelEstimate, ...]
    gpu_overhead: int = 0  # GPU_CONTEXT_BYTES when anything is on the GPU

    @property
    def gpu_bytes(self) -> int:
        return sum(m.gpu_bytes for m in self.models) + self.gpu_overhead

    @property
    def cpu_bytes(self) -> int:
        return sum(m.cpu_bytes for m in self.models)

    def fits(self, *, available_ram: int, free_vram: int, gpu_count: int) -> tuple[bool, str]:
        """Whether the plan fits in `available_ram` bytes of RAM and `free_vram` bytes of VRAM (summed over
        `gpu_count` GPUs), and one line saying so (or what to do about it)."""
        problems: list[str] = []
        if self.gpu_bytes > 0:
            if gpu_count == 0:
                problems.append(
                    f"needs {format_memory(self.gpu_bytes)} VRAM but no NVIDIA GPU was found — set GPU layers to 0"
                )
            elif self.gpu_bytes > free_vram:
                problems.append(
                    f"needs {format_memory(self.gpu_bytes)} VRAM, {format_memory(free_vram)} free — "
                    "offload fewer layers or use a smaller context"
                )
        if self.cpu_bytes > available_ram:
            problems.append(
                f"needs {format_memory(self.cpu_bytes)} RAM, {format_memory(available_ram)} available — "
                "close other programs or use a smaller context"
            )
        if problems:
            return False, "; ".join(problems)
        msg = f"fits: {format_memory(self.cpu_bytes)} RAM of {format_memory(available_ram)} available"
        if self.gpu_bytes:
            msg += f", {format_memory(self.gpu_bytes)} VRAM of {format_memory(free_vram)} free"
        return True, msg


# ---------------------------------------------------------------------------------------------------------
# the pieces


def kv_cache_bytes(
    info: ModelInfo,
    n_ctx: int,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    n_layers: int | None = None,
) -> int:
    """KV cache of `n_layers` layers (default: all) for `n_ctx` tokens."""
    layers = info.block_count if n_layers is None else n_layers
    n_kv = info.head_count_kv or info.head_count or 0
    k = n_ctx * n_kv * (info.key_length or 0) * CACHE_TYPE_BYTES[cache_type_k.lower()]
    v = n_ctx * n_kv * (info.value_length or 0) * CACHE_TYPE_BYTES[cache_type_v.lower()]
    return int(layers * (k + v))


def _metadata_int(info: ModelInfo, key: str) -> int | None:
    v = info.metadata.get(f"{info.architecture}.{key}")
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, list) and v and all(isinstance(x, int) for x in v):
        return max(v)
    return None


def _feed_forward_length(info: ModelInfo) -> int:
    return _metadata_int(info, "feed_forward_length") or 4 * (info.embedding_length or 0)


def _mask_count(info: ModelInfo) -> int:
    """Attention masks llama.cpp builds: a second one for the sliding-window layers."""
    return 2 if (_metadata_int(info, "attention.sliding_window") or 0) > 0 else 1


def _attention_floats_per_token(info: ModelInfo, n_ctx: int, flash_attn: bool) -> int:
    if flash_attn:
        return 0
    return ((info.head_count or 0) + _mask_count(info)) * n_ctx


def compute_reserved_bytes(info: ModelInfo, n_ctx: int, n_ubatch: int = 512, flash_attn: bool = False) -> int:
    """The compute buffer llama.cpp allocates (worst case: every token of a micro-batch wants logits)."""
    attention = _attention_floats_per_token(info, n_ctx, flash_attn)
    rest = (info.embedding_length or 0) + _feed_forward_length(info)
    return 4 * n_ubatch * (max(info.vocab_size, attention) + rest)


def compute_working_bytes(
    info: ModelInfo, n_ctx: int, n_ubatch: int = 512, n_outputs: int = 1, flash_attn: bool = False
) -> int:
    """The part of the compute scratch a full-context prompt with `n_outputs` logits rows really touches."""
    attention = _attention_floats_per_token(info, n_ctx, flash_attn)
    rest = (info.embedding_length or 0) + _feed_forward_length(info)
    if flash_attn:  # no score matrix; the masks are f16
        extra = 2 * n_ubatch * n_ctx * _mask_count(info)
    else:  # f16 copy of the scores for the KQ*V product
        extra = 2 * n_ubatch * (info.head_count or 0) * n_ctx
    return 4 * max(n_outputs * info.vocab_size, n_ubatch * attention) + 4 * n_ubatch * rest + extra


def _layer_weights(info: ModelInfo) -> tuple[list[int], int, int, int]:
    """(bytes per layer, input-embedding bytes, output-layer bytes, bytes of a tied output copy)."""
    per_layer = [0] * info.block_count
    embeddings = output = 0
    has_output = False
    for t in info.tensors:
        layer = t.layer
        if layer is not None and 0 <= layer < info.block_count:
            per_layer[layer] += t.n_bytes
        elif t.name.startswith("token_embd."):
            embeddings += t.n_bytes
        else:
            output += t.n_bytes  # output.weight, output_norm.*, rope factors, ...
            has_output = has_output or t.name == "output.weight"
    tied_copy = 0 if has_output else sum(t.n_bytes for t in info.tensors if t.name == "token_embd.weight")
    return per_layer, embeddings, output, tied_copy


def estimate_model(load: ModelLoad) -> ModelEstimate:
    info = load.info
    n_layer = info.block_count
    requested = load.n_gpu_layers
    if requested < 0 or requested > n_layer:
        gpu_layers, output_on_gpu = n_layer, True
    else:
        gpu_layers, output_on_gpu = requested, False

    per_layer, embeddings, output, tied_copy = _layer_weights(info)
    first_gpu = n_layer - gpu_layers  # llama.cpp offloads the last layers
    weights_gpu = sum(per_layer[first_gpu:])
    weights_cpu = sum(per_layer[:first_gpu]) + embeddings
    if output_on_gpu:
        weights_gpu += output + tied_copy
    else:
        weights_cpu += output

    kv_gpu = kv_cache_bytes(info, load.n_ctx, load.cache_type_k, load.cache_type_v, gpu_layers)
    kv_cpu = kv_cache_bytes(info, load.n_ctx, load.cache_type_k, load.cache_type_v, n_layer - gpu_layers)

    n_outputs = max(1, load.n_outputs)
    logits = 4 * info.vocab_size * n_outputs
    reserved = compute_reserved_bytes(info, load.n_ctx, load.n_ubatch, load.flash_attn)
    working = compute_working_bytes(info, load.n_ctx, load.n_ubatch, n_outputs, load.flash_attn)
    staging = 4 * load.n_ubatch * 2 * (info.embedding_length or 0)
    if gpu_layers == 0 and not output_on_gpu:  # CPU only
        compute_gpu, compute_cpu, compute_cpu_reserved = 0, working + logits, reserved + logits
    elif gpu_layers < n_layer:  # split: the CPU computes its layers' attention too
        compute_gpu, compute_cpu, compute_cpu_reserved = reserved, working + logits, reserved + logits
    else:
        compute_gpu, compute_cpu, compute_cpu_reserved = reserved, staging + logits, staging + logits

    tensor_bytes = sum(t.n_bytes for t in info.tensors)
    metadata_pages = max(0, info.file_size - tensor_bytes)
    overhead = VOCAB_BASE_BYTES + VOCAB_BYTES_PER_TOKEN * info.vocab_size + metadata_pages

    return ModelEstimate(
        name=info.display_name,
        gpu_layers=gpu_layers,
        output_on_gpu=output_on_gpu,
        weights_gpu=weights_gpu,
        weights_cpu=weights_cpu,
        kv_gpu=kv_gpu,
        kv_cpu=kv_cpu,
        compute_gpu=compute_gpu,
        compute_cpu=compute_cpu,
        compute_cpu_reserved=compute_cpu_reserved,
        overhead_cpu=overhead,
    )


def estimate_load(loads: Iterable[ModelLoad]) -> MemoryEstimate:
    """Memory for loading all of `loads` into one process (e.g. a target and its draft)."""
    models = tuple(estimate_model(load) for load in loads)
    on_gpu = any(m.gpu_bytes for m in models)
    return MemoryEstimate(models=models, gpu_overhead=GPU_CONTEXT_BYTES if on_gpu else 0)


def rough_load_bytes(file_size: int, n_ctx: int = 4096) -> int:
    """RAM (+ VRAM) a model file of `file_size` bytes needs before its metadata is at hand (a file on the Hub).

    Weights are the file; the KV cache, compute scratch and vocabulary get an allowance that scales with
    the context: about 12 % of the weights plus 64 MiB per 4096 tokens, plus 100 MiB. Within ~15 % of
    `estimate_load` for SmolLM2-135M and for 7-8B models at 4k context; the exact estimate is made from
    the GGUF metadata once the file is downloaded.
    """
    if file_size <= 0:
        return 0
    scale = max(n_ctx, 1) / 4096
    return int(file_size + 0.12 * file_size * scale + 64 * _MIB * scale + 100 * _MIB)


def estimate_split(
    info: ModelInfo, n_ctx: int, layers: list[int], n_ubatch: int = 512, n_outputs: int = 1,
    cache_type: str = "f16",
) -> list[int]:
    """Bytes each place needs when a model's layers are split as `layers` (this machine first, then each
    worker, as app.engine.workers.layer_split gives them), the way llama.cpp places them: this machine keeps
    the input embeddings and the first layers; each worker holds its layers' weights, their KV cache and a
    compute buffer (reserved in full, as on a GPU); the output layer goes with the last layer.

    This machine's figure is its resident RAM as in `estimate_model` (working compute scratch, logits,
    vocabulary and file metadata)."""
    per_layer, embeddings, output, tied_copy = _layer_weights(info)
    n_local = layers[0]
    kv_per_layer = kv_cache_bytes(info, n_ctx, cache_type, cache_type, 1)
    logits = 4 * info.vocab_size * max(1, n_outputs)
    overhead = VOCAB_BASE_BYTES + VOCAB_BYTES_PER_TOKEN * info.vocab_size
    overhead += max(0, info.file_size - sum(t.n_bytes for t in info.tensors))
    local = sum(per_layer[:n_local]) + embeddings + n_local * kv_per_layer + logits + overhead
    out = [local]
    start = n_local
    last_remote = max((i for i, n in enumerate(layers) if i > 0 and n > 0), default=0)
    reserved = compute_reserved_bytes(info, n_ctx, n_ubatch)
    for i, n in enumerate(layers[1:], start=1):
        b = sum(per_layer[start:start + n]) + n * kv_per_layer + (reserved if n else 0)
        if i == last_remote and n_local == 0:
            b += output + tied_copy
        out.append(b)
        start += n
    if n_local:
        out[0] += output + compute_working_bytes(info, n_ctx, n_ubatch, n_outputs)
    else:
        out[0] += 4 * n_ubatch * 2 * (info.embedding_length or 0)
    return out
