"""What a benchmark measures: the configurations of a sweep and the options of a run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.engine import sources
from app.engine.bench.error import BenchError
from app.engine.bench.prompts import BenchPrompt
from app.engine.defaults import spec_defaults
from app.engine.speculative import SpecSettings
from app.engine.workers import Endpoint

__all__ = ["DEFAULT_DRAFT_MAX", "OFF", "PAST_CHATS", "BenchConfig", "BenchOptions", "sweep_configs"]

DEFAULT_DRAFT_MAX = (1, 2, 3, 5, 8, 12, 16)  # the fixed draft lengths a sweep tries


@dataclass(frozen=True)
class BenchConfig:
    name: str
    draft_max: int = 0  # 0 = speculation off
    adaptive: bool = False
    # drafting from history: an earlier chat asked the same request (its turn is in a past-chats store that
    # the measured run, a new chat, drafts from). Every other history configuration starts with no past chats
    past_chats: bool = False

    @property
    def speculative(self) -> bool:
        return self.draft_max > 0

    def spec(self) -> SpecSettings:
        return SpecSettings(draft_max=max(self.draft_max, 1), adaptive=self.adaptive)


OFF = BenchConfig("off")
PAST_CHATS = "past-chats"


def _check_length(n: int) -> int:
    if not (1 <= n <= 32):
        raise BenchError(f"draft tokens must be between 1 and 32, got {n}")
    return n


def sweep_configs(draft_max: Sequence[int], adaptive_max: int | None = None, past_chats: bool = False) -> list[BenchConfig]:
    """"off", one configuration per draft length, then (with `adaptive_max`) the adaptive length up to it, and
    (with `past_chats`, for drafting from history) the adaptive length when an earlier chat asked the same."""
    values = sorted({_check_length(int(n)) for n in draft_max})
    configs = [OFF] + [BenchConfig(f"draft-{n}", n) for n in values]
    if adaptive_max is not None:
        configs.append(BenchConfig("adaptive", _check_length(adaptive_max), adaptive=True))
        if past_chats:
            configs.append(BenchConfig(PAST_CHATS, adaptive_max, adaptive=True, past_chats=True))
    return configs


@dataclass
class BenchOptions:
    model: Path
    draft: Path | None = None
    prompt_lookup: bool = False
    draft_max: tuple[int, ...] = DEFAULT_DRAFT_MAX
    adaptive: bool = True
    # the adaptive configuration's largest draft length (default: the draft source's own, spec_defaults), so
    # the sweep measures what the source starts with
    adaptive_cap: int | None = None
    prompts: list[BenchPrompt] | None = None  # None = the built-in set
    repeats: int = 3
    max_tokens: int = 128
    threads: int | None = None
    n_ctx: int = 2048
    gpu_layers: int = 0
    draft_gpu_layers: int = 0
    warmup: bool = True
    past_chats: bool = True  # drafting from history: also measure the same request asked again in a new chat
    # a run during which this process got much less CPU than usual (other programs took the cores) measured
    # the machine, not the configuration: run it again, up to this many times
    retry_contended: int = 2
    # the target's layers also on these workers (app.engine.workers), split by these shares (ModelSettings)
    workers: tuple[Endpoint, ...] = ()
    split: tuple[float, ...] | None = None

    def validate(self) -> None:
        if self.draft is not None and self.prompt_lookup:
            raise BenchError("choose a draft model or the chat history (--prompt-lookup), not both")
        if not (1 <= self.repeats <= 100):
            raise BenchError(f"repeats must be between 1 and 100, got {self.repeats}")
        if not (1 <= self.max_tokens <= 65536):
            raise BenchError(f"max tokens must be between 1 and 65536, got {self.max_tokens}")
        if self.threads is not None and not (1 <= self.threads <= 512):
            raise BenchError(f"threads must be between 1 and 512, got {self.threads}")
        if not (0 <= self.retry_contended <= 10):
            raise BenchError(f"retries must be between 0 and 10, got {self.retry_contended}")
        if self.prompts is not None and not self.prompts:
            raise BenchError("the prompt set is empty")
        self._sweep()

    @property
    def speculation(self) -> str:
        return sources.DRAFT_MODEL if self.draft is not None else (sources.HISTORY if self.prompt_lookup else sources.OFF)

    def configs(self) -> list[BenchConfig]:
        if self.speculation == sources.OFF:
            return [OFF]
        return self._sweep()

    def _sweep(self) -> list[BenchConfig]:
        cap = self.adaptive_cap or spec_defaults(self.speculation).draft_max
        return sweep_configs(self.draft_max, cap if self.adaptive else None,
                             past_chats=self.past_chats and self.speculation == sources.HISTORY)
