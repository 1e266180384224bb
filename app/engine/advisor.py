"""The advisor: the lessons speculative-decoding users learned the hard way, checked against a load plan.

Pure functions over metadata and settings (no Qt, nothing loaded), so the settings panel can show the
advice *before* the user loads anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.engine import sources
from app.engine.compat import check_draft_compatibility
from app.engine.gguf_info import ModelInfo
from app.engine.memory import MemoryEstimate
from app.engine.units import format_memory

__all__ = ["Advice", "advise"]


@dataclass(frozen=True)
class Advice:
    level: str  # "error" (will be refused), "warning" (will probably be slower), "info"
    text: str


def _bytes(info: ModelInfo) -> int:
    # generation speed follows the bytes read per token, so compare file sizes, not parameter counts
    # (an F16 target drafted by its own Q4 quantization is a fine, 3.5x cheaper draft)
    return max(info.file_size, 1)


def advise(
    target: ModelInfo | None,
    *,
    draft_source: str = "off",
    draft: ModelInfo | None = None,
    target_gpu_layers: int = 0,
    draft_gpu_layers: int = 0,
    has_gpu: bool = False,
    gpu_offload_supported: bool = False,
    estimate: MemoryEstimate | None = None,
    free_vram: int | None = None,
    available_ram: int | None = None,
    max_tokens: int | None = None,
) -> list[Advice]:
    """Advice for a planned configuration, most important first."""
    out: list[Advice] = []
    if target is None:
        return out
    if draft_source == sources.DRAFT_MODEL and draft is not None:
        verdict = check_draft_compatibility(target, draft)
        if not verdict.compatible:
            out.append(Advice("error", f"This draft will be refused — {verdict.reason}. A draft with another "
                                       "tokenizer can only make generation slower."))
        else:
            ratio = _bytes(draft) / _bytes(target)
            if ratio > 0.5:
                out.append(Advice("warning", f"The draft is {ratio:.0%} of the target's size: drafting costs almost as "
                                             "much as the target itself, so speculation can't pay much. Pick a "
                                             "draft about 10× smaller (≈1B for 7B, 3B for 14B, 7B for 32B)."))
        all_cpu = (target_gpu_layers == 0 and draft_gpu_layers == 0) or not (has_gpu and gpu_offload_supported)
        if all_cpu:
            out.append(Advice("warning", "Everything runs on the CPU: draft-model speculation rarely helps there "
                                         "(both models compete for the same memory bandwidth). Try the chat history, "
                                         "or turn speculation off — run the benchmark to see what wins here."))
    if draft_source == sources.DRAFT_MODEL and draft is None:
        out.append(Advice("info", "Choose a draft model: a small model of the same family (same tokenizer)."))
    if has_gpu and not gpu_offload_supported and (target_gpu_layers or draft_gpu_layers):
        out.append(Advice("warning", "This llama.cpp build has no GPU support, so GPU layers are ignored. "
                                     "Reinstall llama-cpp-python with CUDA/Metal (see README)."))
    if estimate is not None:
        if free_vram is not None and estimate.gpu_bytes > free_vram:
            out.append(Advice("warning", f"Not enough VRAM: the plan needs {format_memory(estimate.gpu_bytes)} on the "
                                         f"GPU, {format_memory(free_vram)} are free. Lower the GPU layers (of the "
                                         "draft first keeps the draft fast only if the target fits) or the context."))
        if available_ram is not None and estimate.cpu_bytes > available_ram:
            out.append(Advice("warning", f"Not enough RAM: the plan needs {format_memory(estimate.cpu_bytes)}, "
                                         f"{format_memory(available_ram)} are available. Two models need memory "
                                         "for both plus both KV caches — lower the context length."))
    if draft_source != sources.OFF and max_tokens is not None and max_tokens < 32:
        out.append(Advice("info", "Short replies gain little from speculation: the prompt and the first token "
                                  "cost the same either way."))
    if draft_source == sources.HISTORY:
        out.append(Advice("info", "Drafting from the chat history shines when the reply repeats text: code you "
                                  "iterate on, edits, quotes, a question asked again. On free prose it rarely "
                                  "finds a match (and costs ~nothing)."))
    return out
