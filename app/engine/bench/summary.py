"""The statistics of a benchmark: per configuration, overall ("all") and per prompt category.

Decode tokens/s is the tokens after the first over the time after the first, taking for each prompt the
median time over the repeats (the spread takes each prompt's slowest and fastest repeat instead); the
profile (milliseconds per generated token in the draft, the target and the rest) is taken the same way.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.engine.bench.configs import OFF, BenchConfig
from app.engine.bench.prompts import CATEGORIES

__all__ = ["ALL", "RunRecord", "ConfigSummary", "summarize"]

ALL = "all"  # the category of the summaries over every prompt


@dataclass
class RunRecord:
    config: str
    prompt_id: str
    category: str
    repeat: int
    prompt_tokens: int
    generated_tokens: int
    prompt_tps: float
    ttft: float  # seconds
    decode_seconds: float  # the decode rounds: after the first token and both models' prompts
    decode_tps: float  # tokens after the first / decode_seconds
    drafted: int
    accepted: int
    rounds: int
    draft_seconds: float
    target_seconds: float
    stop_reason: str
    identical: bool | None = None  # vs the plain run of the same prompt (None: this is the reference)
    # CPU time this process got / (wall time x threads): well below 1 means other programs took the cores
    cpu_share: float = 0.0
    accepted_by_source: dict[str, int] = field(default_factory=dict)  # "this chat", "past chats", "draft model"


@dataclass
class ConfigSummary:
    config: str
    category: str  # a category, or "all"
    draft_max: int
    adaptive: bool
    n_prompts: int
    repeats: int
    decode_tps: float  # tokens / sum over prompts of the median time over repeats
    decode_tps_min: float  # ... of the slowest repeat of each prompt
    decode_tps_max: float  # ... of the fastest repeat of each prompt
    prompt_tps: float  # median over runs
    ttft_ms: float  # median over runs
    acceptance_rate: float
    mean_accepted: float  # accepted draft tokens per round
    tokens_per_round: float
    speedup: float  # decode_tps / off's decode_tps (same category)
    identical: bool  # every run token-identical to the plain run
    n_diverged: int
    draft_ms_per_token: float
    target_ms_per_token: float
    other_ms_per_token: float
    cpu_share: float = 0.0  # median over runs (see RunRecord.cpu_share)

    @property
    def spread(self) -> float:
        """(max - min) / median of the repeats' decode tok/s."""
        return (self.decode_tps_max - self.decode_tps_min) / self.decode_tps if self.decode_tps else 0.0


def summarize(configs: Sequence[BenchConfig], runs: Sequence[RunRecord]) -> list[ConfigSummary]:
    """Summaries per configuration, overall ("all") and per category, in configuration order."""
    order = {c: i for i, c in enumerate(CATEGORIES)}
    categories = [ALL] + sorted({r.category for r in runs}, key=lambda c: (order.get(c, len(order)), c))
    out: list[ConfigSummary] = []
    off_tps: dict[str, float] = {}
    for cfg in configs:
        for cat in categories:
            rs = [r for r in runs if r.config == cfg.name and (cat == ALL or r.category == cat)]
            if not rs:
                continue
            # per prompt: the median time over the repeats (and the fastest and slowest); the set's tok/s is
            # its tokens over the sum of those times, so one stalled run does not drag the whole set down
            by_prompt: dict[str, list[RunRecord]] = {}
            for r in rs:
                by_prompt.setdefault(r.prompt_id, []).append(r)
            toks = sum(statistics.median([max(r.generated_tokens - 1, 0) for r in g]) for g in by_prompt.values())
            t_med = sum(statistics.median([r.decode_seconds for r in g]) for g in by_prompt.values())
            t_min = sum(min(r.decode_seconds for r in g) for g in by_prompt.values())
            t_max = sum(max(r.decode_seconds for r in g) for g in by_prompt.values())
            n_repeats = max(len(g) for g in by_prompt.values())
            tps = toks / t_med if t_med > 0 else 0.0
            drafted = sum(r.drafted for r in rs)
            accepted = sum(r.accepted for r in rs)
            rounds = sum(r.rounds for r in rs)
            gen = sum(r.generated_tokens for r in rs)
            # the profile like the speed: per prompt the median over the repeats
            dsec = sum(statistics.median([r.draft_seconds for r in g]) for g in by_prompt.values())
            tsec = sum(statistics.median([r.target_seconds for r in g]) for g in by_prompt.values())
            dec = t_med
            per_tok = 1000.0 / max(toks, 1)
            if cfg.name == OFF.name:
                off_tps[cat] = tps
            base = off_tps.get(cat, 0.0)
            checked = [r for r in rs if r.identical is not None]
            out.append(
                ConfigSummary(
                    config=cfg.name,
                    category=cat,
                    draft_max=cfg.draft_max,
                    adaptive=cfg.adaptive,
                    n_prompts=len({r.prompt_id for r in rs}),
                    repeats=n_repeats,
                    decode_tps=tps,
                    decode_tps_min=toks / t_max if t_max > 0 else 0.0,
                    decode_tps_max=toks / t_min if t_min > 0 else 0.0,
                    prompt_tps=statistics.median([r.prompt_tps for r in rs]),
                    ttft_ms=statistics.median([r.ttft for r in rs]) * 1000.0,
                    acceptance_rate=accepted / drafted if drafted else 0.0,
                    mean_accepted=accepted / rounds if rounds and cfg.speculative else 0.0,
                    tokens_per_round=gen / rounds if rounds else 0.0,
                    speedup=tps / base if base else (1.0 if cfg.name == OFF.name else 0.0),
                    identical=all(r.identical for r in checked),
                    n_diverged=sum(1 for r in checked if not r.identical),
                    draft_ms_per_token=dsec * per_tok,
                    target_ms_per_token=tsec * per_tok,
                    other_ms_per_token=max(dec - dsec - tsec, 0.0) * per_tok,
                    cpu_share=statistics.median([r.cpu_share for r in rs]),
                )
            )
    return out
