"""Benchmark, A/B compare and auto-tune speculative decoding on this machine (Qt-free).

The same prompts run with speculation off and with every configuration of a sweep (fixed draft lengths and
the adaptive length), interleaved, from empty KV caches, greedily, so each configuration's output can be
compared token by token with the plain run of the same prompt (`run`). Per configuration, overall and per
prompt category (`summary`): decode tokens/s with its spread, prompt-processing tokens/s, time to first
token, acceptance rate, mean accepted tokens per round, speed-up vs off, whether the output was
token-identical to the plain run (else the first differing position and both continuations: `compare`),
and a profile: milliseconds per generated token in the draft, in the target and in the rest (Python).

`run_benchmark()` takes a progress callback and a `threading.Event` to cancel, so a dialog can drive it from
a worker thread; `autotune()` runs a mode's sweep and sets the report's pick as a preset for the target+draft
pair (including "off" when speculation does not pay).

The modules: `prompts` (the built-in set and prompt files), `configs` (the sweep and the options), `run`,
`compare`, `summary` (the statistics), `report` (`BenchReport`: JSON, CSV, table), `plot`, `machine` (what
is recorded about the machine, CPU contention), `autotune`. Everything public is re-exported here.
"""

from __future__ import annotations

from app.engine.bench.autotune import (
    AUTOTUNE_MODES,
    QUICK_DRAFT_MAX,
    QUICK_MAX_TOKENS,
    QUICK_REPEATS,
    THOROUGH_MIN_REPEATS,
    autotune,
    autotune_options,
    pick_best,
    preset_from_report,
)
from app.engine.bench.compare import Divergence, describe_divergence, first_difference
from app.engine.bench.configs import (
    DEFAULT_DRAFT_MAX,
    OFF,
    PAST_CHATS,
    BenchConfig,
    BenchOptions,
    sweep_configs,
)
from app.engine.bench.error import BenchError
from app.engine.bench.prompts import CATEGORIES, BenchPrompt, builtin_prompts, load_prompts
from app.engine.bench.report import BenchReport
from app.engine.bench.run import BenchProgress, prompt_tokens, run_benchmark
from app.engine.bench.summary import ALL, ConfigSummary, RunRecord, summarize

__all__ = [
    "ALL",
    "AUTOTUNE_MODES",
    "CATEGORIES",
    "DEFAULT_DRAFT_MAX",
    "OFF",
    "QUICK_DRAFT_MAX",
    "QUICK_MAX_TOKENS",
    "QUICK_REPEATS",
    "THOROUGH_MIN_REPEATS",
    "BenchError",
    "BenchPrompt",
    "BenchConfig",
    "BenchOptions",
    "BenchProgress",
    "RunRecord",
    "Divergence",
    "ConfigSummary",
    "BenchReport",
    "builtin_prompts",
    "load_prompts",
    "sweep_configs",
    "PAST_CHATS",
    "first_difference",
    "describe_divergence",
    "summarize",
    "run_benchmark",
    "prompt_tokens",
    "autotune_options",
    "autotune",
    "pick_best",
    "preset_from_report",
]
