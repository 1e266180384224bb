"""Auto-tune: benchmark a mode's sweep and pick the fastest configuration — "off" when speculation does not pay —
as a preset for the target+draft pair (the app stores and offers it, the CLI prints it)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from app.engine import sources
from app.engine.bench.configs import DEFAULT_DRAFT_MAX, OFF, PAST_CHATS, BenchOptions
from app.engine.bench.error import BenchError
from app.engine.bench.prompts import BenchPrompt, builtin_prompts
from app.engine.bench.report import BenchReport
from app.engine.bench.run import BenchProgress, run_benchmark
from app.engine.bench.summary import ALL, ConfigSummary
from app.engine.session import Engine

__all__ = [
    "AUTOTUNE_MODES",
    "QUICK_DRAFT_MAX",
    "QUICK_MAX_TOKENS",
    "QUICK_REPEATS",
    "THOROUGH_MIN_REPEATS",
    "autotune_options",
    "pick_best",
    "preset_from_report",
    "autotune",
]

AUTOTUNE_MODES = ("quick", "thorough")
# quick: one prompt per category, these draft lengths (and the adaptive length), this many repeats, at most
# this many tokens
QUICK_DRAFT_MAX = (2, 4, 8)
QUICK_REPEATS = 1
QUICK_MAX_TOKENS = 64
# thorough: every prompt, DEFAULT_DRAFT_MAX (and the adaptive length), at least this many repeats
THOROUGH_MIN_REPEATS = 3
# the pick is "off" unless speculation is at least this much faster (noise, memory, simplicity)
OFF_MARGIN = 0.02


def autotune_options(
    base: BenchOptions, mode: str = "quick", explicit: Mapping[str, Any] | None = None
) -> BenchOptions:
    """The sweep of an auto-tune: quick (under a minute on a small model) or thorough.

    `explicit`: option values the user set (e.g. on the command line): they win over the mode's choices.
    """
    if mode == "quick":
        prompts = base.prompts if base.prompts is not None else builtin_prompts()
        one_each: list[BenchPrompt] = []
        for p in prompts:
            if p.category not in {q.category for q in one_each}:
                one_each.append(p)
        tuned = replace(base, prompts=one_each, repeats=QUICK_REPEATS, draft_max=QUICK_DRAFT_MAX, adaptive=True,
                        max_tokens=min(base.max_tokens, QUICK_MAX_TOKENS), past_chats=False)
    elif mode == "thorough":
        tuned = replace(base, repeats=max(base.repeats, THOROUGH_MIN_REPEATS), draft_max=DEFAULT_DRAFT_MAX,
                        adaptive=True, past_chats=False)
    else:
        raise BenchError(f"auto-tune mode must be {' or '.join(map(repr, AUTOTUNE_MODES))}, got {mode!r}")
    return replace(tuned, **(explicit or {}))


def pick_best(report: BenchReport, off_margin: float = OFF_MARGIN) -> ConfigSummary:
    """The fastest configuration overall; "off" unless speculation beats it by more than `off_margin`.

    A configuration whose output differed from the plain run is never picked, nor one that never had a guess
    accepted (it only added work: if it measured faster, that was noise).
    """
    # the past-chats run is a situation (the same request again), not a setting one could pick
    overall = [s for s in report.summaries if s.category == ALL and s.decode_tps > 0 and s.config != PAST_CHATS]
    if not overall:
        raise BenchError("no finished runs to choose from")
    candidates = [s for s in overall if s.config == OFF.name or (s.identical and s.acceptance_rate > 0)]
    if not candidates:
        candidates = overall
    best = max(candidates, key=lambda s: s.decode_tps)
    off = next((s for s in overall if s.config == OFF.name), None)
    if off is not None and best is not off and best.decode_tps < off.decode_tps * (1.0 + off_margin):
        return off
    return best


def preset_from_report(report: BenchReport, mode: str = "") -> dict[str, object]:
    """The auto-tune pick as a preset for this target+draft pair (the app stores and offers it)."""
    pick = pick_best(report)
    overall = [s for s in report.summaries if s.category == ALL]
    best = max(overall, key=lambda s: s.decode_tps)
    meta = report.meta
    speculation = "off" if pick.config == OFF.name else str(meta.get("speculation", "off"))
    preset: dict[str, object] = {
        "target": meta.get("target"),
        "draft": meta.get("draft") if speculation == sources.DRAFT_MODEL else None,
        "speculation": speculation,
        "draft_max": pick.draft_max if pick.draft_max else None,
        "adaptive": pick.adaptive,
        "config": pick.config,
        "decode_tps": round(pick.decode_tps, 2),
        "off_decode_tps": round(next((s.decode_tps for s in overall if s.config == OFF.name), 0.0), 2),
        "speedup": round(pick.speedup, 3),
        "best_config": best.config,
        "best_decode_tps": round(best.decode_tps, 2),
        "threads": meta.get("threads"),
        "mode": mode,
        "measured": meta.get("started"),
    }
    return preset


def autotune(
    options: BenchOptions,
    mode: str = "quick",
    *,
    explicit: Mapping[str, Any] | None = None,
    progress: Callable[[BenchProgress], None] | None = None,
    cancel: threading.Event | None = None,
    engine: Engine | None = None,
) -> BenchReport:
    """Benchmark the sweep of `mode` (autotune_options: `explicit` wins) and pick the fastest configuration.

    The report's `autotune` is the pick as a preset whenever a run finished — after a cancel too, then from the
    partial sweep (`report.cancelled`) — and None when none did; when runs finished but none can be picked, the
    reason is the report's `autotune_error`. `progress`, `cancel` and `engine` are run_benchmark's.
    """
    sweep = autotune_options(options, mode, explicit)
    report = run_benchmark(sweep, progress=progress, cancel=cancel, engine=engine)
    if report.runs:
        try:
            report.autotune = preset_from_report(report, mode)
        except BenchError as e:
            report.autotune_error = str(e)
    return report
