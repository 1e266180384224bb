"""Sampling settings and the target model's sampler (a llama.cpp sampler chain).

The speculative loop samples the target's token at every verified position with this one chain, in the
same order plain decoding would, accepting each emitted token into it. That is what makes speculative
output follow the target's distribution exactly (see docs/engine.md).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import llama_cpp

from app.engine.llama_backend import Context, EngineError

__all__ = ["SamplingParams", "TargetSampler"]


@dataclass
class SamplingParams:
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0  # 1 = off
    repeat_last_n: int = 64
    seed: int | None = None  # None = a fresh random seed each generation

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def validate(self) -> None:
        """Raise ValueError with a readable message for out-of-range values."""
        if not (0.0 <= self.temperature <= 5.0):
            raise ValueError(f"temperature must be between 0 and 5, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top-k must be 0 (off) or more, got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top-p must be in (0, 1], got {self.top_p}")
        if not (0.0 <= self.min_p < 1.0):
            raise ValueError(f"min-p must be in [0, 1), got {self.min_p}")
        if not (0.0 < self.repeat_penalty <= 10.0):
            raise ValueError(f"repeat penalty must be in (0, 10], got {self.repeat_penalty}")
        if self.repeat_last_n < 0:
            raise ValueError(f"repeat window must be 0 or more, got {self.repeat_last_n}")
        if self.seed is not None and not (0 <= self.seed < 2**32):
            raise ValueError(f"seed must be between 0 and 4294967295, got {self.seed}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class TargetSampler:
    """The llama.cpp sampler chain that picks the target's token at a logits row."""

    def __init__(self, params: SamplingParams, n_vocab: int) -> None:
        params.validate()
        self.params = params
        self.seed = params.seed if params.seed is not None else random.randrange(2**32 - 1)
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self.ptr = llama_cpp.llama_sampler_chain_init(chain_params)
        if not self.ptr:
            raise EngineError("could not create the sampler")
        add = llama_cpp.llama_sampler_chain_add
        p = params
        if p.repeat_penalty != 1.0 and p.repeat_last_n != 0:
            add(self.ptr, llama_cpp.llama_sampler_init_penalties(n_vocab, p.repeat_last_n, p.repeat_penalty, 0.0, 0.0))
        if p.greedy:
            add(self.ptr, llama_cpp.llama_sampler_init_greedy())
        else:
            if p.top_k > 0:
                add(self.ptr, llama_cpp.llama_sampler_init_top_k(p.top_k))
            if p.top_p < 1.0:
                add(self.ptr, llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
            if p.min_p > 0.0:
                add(self.ptr, llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
            add(self.ptr, llama_cpp.llama_sampler_init_temp(p.temperature))
            add(self.ptr, llama_cpp.llama_sampler_init_dist(self.seed))
        self._uses_history = p.repeat_penalty != 1.0 and p.repeat_last_n != 0
        # plain greedy (no penalties): the chain only takes the arg-max, which numpy finds in the logits row
        # without llama.cpp building a candidate array of the whole vocabulary for every verified row
        self._argmax_only = p.greedy and not self._uses_history

    def prime(self, tokens: Iterable[int]) -> None:
        """Feed the prompt (for the repeat penalty window)."""
        if self._uses_history:
            for t in tokens:
                llama_cpp.llama_sampler_accept(self.ptr, t)

    def sample(self, ctx: Context, row: int) -> int:
        """Sample the token at output row `row` of the context's last decode and accept it into the chain."""
        if self._argmax_only:
            return ctx.argmax(row)
        # llama_sampler_sample also accepts the chosen token into the chain
        return int(llama_cpp.llama_sampler_sample(self.ptr, ctx.ptr, row))

    def close(self) -> None:
        if getattr(self, "ptr", None):
            llama_cpp.llama_sampler_free(self.ptr)
            self.ptr = None

    def __del__(self) -> None:  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass
