"""Benchmark, A/B compare and auto-tune speculative decoding on this machine (Qt-free).

The same prompts run with speculation off and with every configuration of a sweep (draft tokens 1..16 and
the adaptive length), interleaved — for each repeat, for each prompt, every configuration in turn — so a
machine whose speed drifts (other programs, thermal limits) slows all configurations alike. Every run
starts from empty KV caches and decodes greedily, so each configuration's output can be compared token by
token with the plain run of the same prompt.

Per configuration, overall and per prompt category: decode tokens/s (tokens after the first over the time
after the first, taking for each prompt the median time over the repeats; the spread takes each prompt's
slowest and fastest repeat instead), prompt-processing tokens/s, time to first token, acceptance rate, mean accepted tokens per round,
speed-up vs off, whether the output was token-identical to the plain run (else the first differing position
and both continuations), and a profile: milliseconds per generated token in the draft, in the target, and
in the rest (Python).

`run_benchmark()` takes a progress callback and a `threading.Event` to cancel, so a dialog can drive it
from a worker thread; `autotune()` picks the fastest configuration (including "off" when speculation does
not pay) and `preset_from_report()` returns it as a preset dict for the target+draft pair.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

__all__ = [
    "CATEGORIES",
    "DEFAULT_DRAFT_MAX",
    "BenchError",
    "BenchPrompt",
    "BenchConfig",
    "BenchOptions",
    "BenchProgress",
    "RunRecord",
    "Divergence",
    "ConfigSummary",
    "BenchReport",
    "AutotuneResult",
    "builtin_prompts",
    "load_prompts",
    "sweep_configs",
    "first_difference",
    "describe_divergence",
    "summarize",
    "run_benchmark",
    "autotune_options",
    "autotune",
    "pick_best",
    "preset_from_report",
]

CATEGORIES = ("code", "json", "rewrite", "prose", "chat")
DEFAULT_DRAFT_MAX = (1, 2, 3, 5, 8, 12, 16)
ALL = "all"
# auto-tune prefers "off" unless speculation is at least this much faster (noise, memory, simplicity)
OFF_MARGIN = 0.02


class BenchError(ValueError):
    """A bad benchmark input (prompt file, options): one readable line."""


# --------------------------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class BenchPrompt:
    id: str
    category: str
    prompt: str
    system: str = ""
    raw: bool = False  # send the text as is, without the chat template
    max_tokens: int | None = None  # overrides the benchmark's max tokens for this prompt


def _parse_prompt(obj: object, where: str, index: int) -> BenchPrompt:
    if not isinstance(obj, dict):
        raise BenchError(f"{where}: expected a JSON object")
    text = obj.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise BenchError(f"{where}: \"prompt\" must be a non-empty string")
    category = obj.get("category", "other")
    if not isinstance(category, str) or not category.strip():
        raise BenchError(f"{where}: \"category\" must be a non-empty string")
    pid = obj.get("id", f"prompt-{index + 1}")
    if not isinstance(pid, str) or not pid:
        raise BenchError(f"{where}: \"id\" must be a non-empty string")
    system = obj.get("system", "")
    if not isinstance(system, str):
        raise BenchError(f"{where}: \"system\" must be a string")
    raw = obj.get("raw", False)
    if not isinstance(raw, bool):
        raise BenchError(f"{where}: \"raw\" must be true or false")
    max_tokens = obj.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise BenchError(f"{where}: \"max_tokens\" must be a whole number of at least 1")
    return BenchPrompt(pid, category.strip(), text, system, raw, max_tokens)


def _parse_jsonl(text: str, name: str) -> list[BenchPrompt]:
    prompts: list[BenchPrompt] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BenchError(f"{name} line {lineno}: not valid JSON ({e.msg})") from None
        prompts.append(_parse_prompt(obj, f"{name} line {lineno}", len(prompts)))
    if not prompts:
        raise BenchError(f"{name}: no prompts (one JSON object per line, with at least a \"prompt\")")
    seen: set[str] = set()
    for p in prompts:
        if p.id in seen:
            raise BenchError(f"{name}: the prompt id {p.id!r} is used twice")
        seen.add(p.id)
    return prompts


def builtin_prompts() -> list[BenchPrompt]:
    """The built-in set: code, structured JSON, rewrite/edit of a given text, prose, short chat answers."""
    text = resources.files("app.engine").joinpath("bench_prompts.jsonl").read_text(encoding="utf-8")
    return _parse_jsonl(text, "bench_prompts.jsonl")


def load_prompts(path: str | os.PathLike[str]) -> list[BenchPrompt]:
    """A user prompt file: JSONL, one object per line: {"prompt": ..., "category": ..., "id": ..., ...}."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"prompt file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BenchError(f"cannot read prompt file {p}: {e}") from None
    return _parse_jsonl(text, p.name)


# --------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class BenchConfig:
    name: str
    draft_max: int = 0  # 0 = speculation off
    adaptive: bool = False

    @property
    def speculative(self) -> bool:
        return self.draft_max > 0

    def spec(self):
        from app.engine.speculative import SpecSettings

        return SpecSettings(draft_max=max(self.draft_max, 1), adaptive=self.adaptive)


OFF = BenchConfig("off")


def sweep_configs(draft_max: Sequence[int], adaptive: bool = True, adaptive_cap: int | None = None) -> list[BenchConfig]:
    """"off", then one configuration per draft length, then (optionally) the adaptive length."""
    values = sorted(set(int(n) for n in draft_max))
    for n in values:
        if not (1 <= n <= 32):
            raise BenchError(f"draft tokens must be between 1 and 32, got {n}")
    configs = [OFF] + [BenchConfig(f"draft-{n}", n) for n in values]
    if adaptive:
        cap = adaptive_cap or max([*values, 8])
        configs.append(BenchConfig("adaptive", min(cap, 32), adaptive=True))
    return configs


@dataclass
class BenchOptions:
    model: Path
    draft: Path | None = None
    prompt_lookup: bool = False
    draft_max: tuple[int, ...] = DEFAULT_DRAFT_MAX
    adaptive: bool = True
    adaptive_cap: int | None = None  # adaptive: the largest draft length (default: the sweep's largest, >= 8)
    prompts: list[BenchPrompt] | None = None  # None = the built-in set
    repeats: int = 3
    max_tokens: int = 128
    threads: int | None = None
    n_ctx: int = 2048
    gpu_layers: int = 0
    draft_gpu_layers: int = 0
    warmup: bool = True
    # a run during which this process got much less CPU than usual (other programs took the cores) measured
    # the machine, not the configuration: run it again, up to this many times
    retry_contended: int = 2

    def validate(self) -> None:
        if self.draft is not None and self.prompt_lookup:
            raise BenchError("choose a draft model or prompt lookup, not both")
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
        sweep_configs(self.draft_max, self.adaptive, self.adaptive_cap)

    @property
    def speculation(self) -> str:
        return "draft-model" if self.draft is not None else ("prompt-lookup" if self.prompt_lookup else "off")

    def configs(self) -> list[BenchConfig]:
        if self.speculation == "off":
            return [OFF]
        return sweep_configs(self.draft_max, self.adaptive, self.adaptive_cap)


# --------------------------------------------------------------------------------------------- records
@dataclass
class BenchProgress:
    done: int  # runs finished
    total: int  # runs planned (warm-up not counted)
    phase: str  # "loading", "warmup", "run", "done", "cancelled"
    config: str = ""
    prompt_id: str = ""
    repeat: int = 0
    last_tps: float | None = None  # decode tok/s of the run just finished
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


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
    decode_seconds: float  # after the first token
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


@dataclass
class Divergence:
    config: str
    prompt_id: str
    repeat: int
    position: int  # index of the first differing generated token
    plain_tokens: list[int]  # the plain run's continuation from there
    other_tokens: list[int]  # this configuration's continuation from there
    plain_text: str = ""
    other_text: str = ""
    context_text: str = ""  # the shared text just before the difference


def first_difference(plain: Sequence[int], other: Sequence[int]) -> int | None:
    """Index of the first token where two outputs differ (the shorter length if one is a prefix); None if equal."""
    n = min(len(plain), len(other))
    for i in range(n):
        if plain[i] != other[i]:
            return i
    return None if len(plain) == len(other) else n


def describe_divergence(
    plain: Sequence[int],
    other: Sequence[int],
    detokenize: Callable[[Sequence[int]], str] | None = None,
    *,
    config: str = "",
    prompt_id: str = "",
    repeat: int = 0,
    tail: int = 16,
    context: int = 8,
) -> Divergence | None:
    """Where and how `other` departs from `plain`: the position and both continuations (None if identical)."""
    pos = first_difference(plain, other)
    if pos is None:
        return None
    a, b = list(plain[pos : pos + tail]), list(other[pos : pos + tail])
    d = Divergence(config, prompt_id, repeat, pos, a, b)
    if detokenize is not None:
        d.plain_text = detokenize(a)
        d.other_text = detokenize(b)
        d.context_text = detokenize(list(plain[max(0, pos - context) : pos]))
    return d


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


# --------------------------------------------------------------------------------------------- report
@dataclass
class BenchReport:
    meta: dict[str, object]
    configs: list[BenchConfig]
    runs: list[RunRecord] = field(default_factory=list)
    divergences: list[Divergence] = field(default_factory=list)
    cancelled: bool = False
    summaries: list[ConfigSummary] = field(default_factory=list)
    autotune: dict[str, object] | None = None

    @classmethod
    def from_dict(cls, data: dict) -> BenchReport:
        """A report back from `to_dict()` / a JSON file (summaries recomputed from the runs)."""
        report = cls(
            meta=dict(data.get("meta") or {}),
            configs=[BenchConfig(**c) for c in data.get("configs", [])],
            runs=[RunRecord(**r) for r in data.get("runs", [])],
            divergences=[Divergence(**d) for d in data.get("divergences", [])],
            cancelled=bool(data.get("cancelled", False)),
            autotune=data.get("autotune"),
        )
        report.refresh()
        return report

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BenchReport:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def refresh(self) -> None:
        self.summaries = summarize(self.configs, self.runs)

    def summary(self, config: str, category: str = ALL) -> ConfigSummary | None:
        for s in self.summaries:
            if s.config == config and s.category == category:
                return s
        return None

    def categories(self) -> list[str]:
        seen: list[str] = []
        for s in self.summaries:
            if s.category != ALL and s.category not in seen:
                seen.append(s.category)
        return seen

    @property
    def identical(self) -> bool:
        return not self.divergences

    def to_dict(self) -> dict[str, object]:
        return {
            "meta": self.meta,
            "configs": [asdict(c) for c in self.configs],
            "summaries": [{**asdict(s), "spread": s.spread} for s in self.summaries],
            "divergences": [asdict(d) for d in self.divergences],
            "runs": [asdict(r) for r in self.runs],
            "cancelled": self.cancelled,
            "identical": self.identical,
            "autotune": self.autotune,
        }

    def write_json(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    CSV_FIELDS = (
        "config", "category", "draft_max", "adaptive", "n_prompts", "repeats", "decode_tps", "decode_tps_min",
        "decode_tps_max", "speedup", "prompt_tps", "ttft_ms", "acceptance_rate", "mean_accepted",
        "tokens_per_round", "identical", "n_diverged", "draft_ms_per_token", "target_ms_per_token",
        "other_ms_per_token", "cpu_share",
    )  # fmt: skip

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """One row per configuration and category (overall first)."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=self.CSV_FIELDS)
            w.writeheader()
            for s in self.summaries:
                row = asdict(s)
                w.writerow({k: (round(row[k], 4) if isinstance(row[k], float) else row[k]) for k in self.CSV_FIELDS})

    def write_plot(self, path: str | os.PathLike[str], title: str | None = None) -> None:
        """PNG: decode tok/s vs draft tokens, one panel per category (and overall), with the "off" line."""
        self.figure(title).savefig(str(path), dpi=110)

    def figure(self, title: str | None = None):
        """The plot as a matplotlib Figure (no pyplot, no display: a dialog can put it in a canvas widget)."""
        from matplotlib.figure import Figure

        panels = [ALL, *self.categories()]
        cols = min(3, len(panels))
        rows = math.ceil(len(panels) / cols)
        fig = Figure(figsize=(4.2 * cols, 3.3 * rows))
        axes = fig.subplots(rows, cols, squeeze=False)
        fixed = [c for c in self.configs if c.speculative and not c.adaptive]
        adaptive = next((c for c in self.configs if c.adaptive), None)
        for ax, cat in zip(axes.flat, panels, strict=False):
            off = self.summary(OFF.name, cat)
            xs, ys, lo, hi = [], [], [], []
            for c in fixed:
                s = self.summary(c.name, cat)
                if s is not None:
                    xs.append(c.draft_max)
                    ys.append(s.decode_tps)
                    lo.append(s.decode_tps - s.decode_tps_min)
                    hi.append(s.decode_tps_max - s.decode_tps)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label="fixed draft length")
            if off is not None:
                ax.axhline(off.decode_tps, color="black", linestyle="--", linewidth=1.2, label="off")
            if adaptive is not None:
                s = self.summary(adaptive.name, cat)
                if s is not None:
                    ax.axhline(s.decode_tps, color="tab:green", linestyle=":", linewidth=1.5, label="adaptive")
            ax.set_title("all prompts" if cat == ALL else cat)
            ax.set_xlabel("draft tokens (max)")
            ax.set_ylabel("decode tok/s")
            if xs:
                ax.set_xticks(xs)
            ax.grid(True, alpha=0.3)
        for ax in list(axes.flat)[len(panels) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=8, loc="best")
        meta = self.meta
        fig.suptitle(
            title
            or f"{meta.get('target_name', '?')} + {meta.get('draft_name', meta.get('speculation', ''))} · "
            f"{meta.get('threads', '?')} threads · greedy"
        )
        fig.tight_layout()
        return fig

    def format_table(self) -> str:
        """A plain-text table: overall per configuration, then the speed-up per category."""
        lines = []
        head = (
            f"{'config':<10} {'tok/s':>7} {'min-max':>13} {'speedup':>7} {'accept':>6} {'acc/rnd':>7} "
            f"{'pp tok/s':>8} {'TTFT ms':>7} {'same':>4}  {'ms/token draft/target/other':>27}"
        )
        lines.append(head)
        lines.append("-" * len(head))
        for s in self.summaries:
            if s.category != ALL:
                continue
            lines.append(
                f"{s.config:<10} {s.decode_tps:7.1f} {s.decode_tps_min:6.1f}-{s.decode_tps_max:<6.1f} "
                f"{s.speedup:6.2f}x {s.acceptance_rate:6.0%} {s.mean_accepted:7.2f} {s.prompt_tps:8.0f} "
                f"{s.ttft_ms:7.0f} {'yes' if s.identical else 'NO':>4}  "
                f"{s.draft_ms_per_token:8.1f} /{s.target_ms_per_token:6.1f} /{s.other_ms_per_token:6.1f}"
            )
        cats = self.categories()
        if cats:
            lines.append("")
            lines.append("speed-up vs off per category (decode tok/s of off in brackets)")
            lines.append(f"{'config':<10} " + " ".join(f"{c:>14}" for c in cats))
            for cfg in self.configs:
                cells = []
                for c in cats:
                    s = self.summary(cfg.name, c)
                    if s is None:
                        cells.append(f"{'-':>14}")
                    elif cfg.name == OFF.name:
                        cells.append(f"{f'({s.decode_tps:.1f})':>14}")
                    else:
                        cells.append(f"{f'{s.speedup:.2f}x':>14}")
                lines.append(f"{cfg.name:<10} " + " ".join(cells))
        shares = [s.cpu_share for s in self.summaries if s.category == ALL and s.cpu_share > 0]
        if shares and statistics.median(shares) < 0.75:
            lines.append(
                f"note: this process got only {statistics.median(shares):.0%} of the CPU time it asked for: other "
                "programs were busy, the numbers are noisy"
            )
        retried = self.meta.get("retried_runs")
        if retried:
            lines.append(f"note: {retried} runs were measured again because other programs took the CPU meanwhile")
        for d in self.divergences[:10]:
            lines.append(
                f"DIFFERENT: {d.config} on {d.prompt_id} (repeat {d.repeat + 1}) at token {d.position}: "
                f"plain {d.plain_text!r} vs {d.other_text!r}"
            )
        if len(self.divergences) > 10:
            lines.append(f"... and {len(self.divergences) - 10} more differences")
        if self.autotune:
            lines.append("")
            a = self.autotune
            lines.append(
                f"auto-tune pick: {a['config']} ({a['decode_tps']:.1f} tok/s, {a['speedup']:.2f}x vs off; "
                f"best in sweep {a['best_config']} {a['best_decode_tps']:.1f} tok/s)"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- running
def _machine_info() -> dict[str, object]:
    info: dict[str, object] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def _contended(share: float, earlier: Sequence[float]) -> bool:
    """Did this run get much less CPU than the runs before it (relative, so a GPU run's low share is fine)?"""
    if len(earlier) < 3:
        return False
    return share < 0.8 * statistics.median(earlier[-50:])


def _prompt_tokens(engine, prompt: BenchPrompt) -> list[int]:
    from app.engine.chat_template import Message
    from app.engine.session import ChatSession

    if prompt.raw or engine.target.info.chat_template is None:
        text = f"{prompt.system}\n\n{prompt.prompt}" if prompt.system else prompt.prompt
        return engine.tokenize_prompt(text)
    chat = ChatSession(engine, system_prompt=prompt.system)
    return engine.tokenize_prompt(chat.render([Message("user", prompt.prompt)]), special=True)


def run_benchmark(
    options: BenchOptions,
    progress: Callable[[BenchProgress], None] | None = None,
    cancel: threading.Event | None = None,
    engine=None,
) -> BenchReport:
    """Run the sweep described by `options` (see the module docstring) and return the report.

    `progress` is called before loading, after the warm-up and after every run (from the calling thread);
    setting `cancel` stops within one decoding round and returns the partial report (`cancelled=True`).
    Pass a loaded `engine` (app.engine.session.Engine) to reuse its models; otherwise they are loaded
    here and freed at the end.
    """
    from app.engine.llama_backend import backend_info, default_threads
    from app.engine.sampling import SamplingParams
    from app.engine.session import Engine, ModelSettings
    from app.engine.speculative import generate

    options.validate()
    cancel = cancel or threading.Event()
    prompts = options.prompts if options.prompts is not None else builtin_prompts()
    configs = options.configs()
    total = len(configs) * len(prompts) * options.repeats

    def report_progress(**kw: object) -> None:
        if progress is not None:
            progress(BenchProgress(total=total, **kw))  # type: ignore[arg-type]

    threads = options.threads or default_threads()
    own_engine = engine is None
    if own_engine:
        report_progress(done=0, phase="loading", message=f"loading {Path(options.model).name}")
        engine = Engine()
    try:
        if own_engine:
            engine.load_target(ModelSettings(Path(options.model), n_gpu_layers=options.gpu_layers,
                                             n_ctx=options.n_ctx, n_threads=threads))
            if options.draft is not None:
                engine.load_draft(ModelSettings(Path(options.draft), n_gpu_layers=options.draft_gpu_layers,
                                                n_ctx=options.n_ctx, n_threads=threads))
            elif options.prompt_lookup:
                engine.use_prompt_lookup()
        target_ctx = engine.target.ctx
        proposer = engine.proposer
        model = engine.target.model
        tokenized = [_prompt_tokens(engine, p) for p in prompts]
        for p, toks in zip(prompts, tokenized, strict=True):
            if len(toks) + (p.max_tokens or options.max_tokens) + 34 > target_ctx.n_ctx:
                raise BenchError(
                    f"prompt {p.id!r} ({len(toks)} tokens) plus {p.max_tokens or options.max_tokens} new tokens does "
                    f"not fit the context of {target_ctx.n_ctx} tokens"
                )
        greedy = SamplingParams(temperature=0.0)
        meta: dict[str, object] = {
            "target": str(options.model),
            "target_name": Path(options.model).name,
            "draft": str(options.draft) if options.draft else None,
            "draft_name": Path(options.draft).name if options.draft else options.speculation,
            "speculation": options.speculation,
            "threads": threads,
            "n_ctx": target_ctx.n_ctx,
            "repeats": options.repeats,
            "max_tokens": options.max_tokens,
            "prompts": [asdict(p) for p in prompts],
            "sampling": "greedy",
            "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "machine": _machine_info(),
        }
        try:
            bi = backend_info()
            meta["llama_cpp_python"] = bi.get("llama_cpp_python")
            meta["batch_invariant_cpu"] = bi.get("batch_invariant_cpu")
        except Exception:  # pragma: no cover - informational only
            pass
        report = BenchReport(meta=meta, configs=configs)

        def one_run(cfg, tokens: list[int], max_tokens: int):
            engine.reset_cache()
            return generate(
                target_ctx, tokens, greedy,
                proposer=proposer if cfg.speculative else None,
                spec=cfg.spec(), max_tokens=max_tokens, cancel=cancel,
            )  # fmt: skip

        # warm-up: page the weights in and start the thread pools, for every configuration
        if options.warmup and not cancel.is_set():
            report_progress(done=0, phase="warmup", message="warming up")
            for cfg in configs:
                if cancel.is_set():
                    break
                one_run(cfg, tokenized[0], min(8, options.max_tokens))

        reference: dict[str, list[int]] = {}
        done = 0
        retried = 0
        shares: list[float] = []  # CPU share of the runs so far
        t0 = time.perf_counter()
        for rep in range(options.repeats):
            for p, toks in zip(prompts, tokenized, strict=True):
                for cfg in configs:
                    if cancel.is_set():
                        break
                    for attempt in range(options.retry_contended + 1):
                        wall0, cpu0 = time.perf_counter(), time.process_time()
                        res = one_run(cfg, toks, p.max_tokens or options.max_tokens)
                        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                        share = cpu / (wall * threads) if wall > 0 else 0.0
                        if attempt == options.retry_contended or res.stats.stop_reason == "cancelled":
                            break
                        if not _contended(share, shares):
                            break
                        retried += 1
                    shares.append(share)
                    st = res.stats
                    if st.stop_reason == "cancelled":
                        break
                    after_first = st.decode_seconds  # after the first token and both prompts
                    rec = RunRecord(
                        config=cfg.name, prompt_id=p.id, category=p.category, repeat=rep,
                        prompt_tokens=st.prompt_tokens, generated_tokens=st.generated_tokens,
                        prompt_tps=st.prompt_tokens_per_second, ttft=st.time_to_first_token,
                        decode_seconds=after_first,
                        decode_tps=(st.generated_tokens - 1) / after_first if after_first > 0 else 0.0,
                        drafted=st.drafted, accepted=st.accepted, rounds=st.rounds,
                        draft_seconds=st.draft_seconds, target_seconds=st.target_seconds,
                        stop_reason=st.stop_reason,
                        cpu_share=share,
                    )  # fmt: skip
                    ref = reference.get(p.id)
                    if ref is None and cfg.name == OFF.name:
                        reference[p.id] = list(res.tokens)
                    elif ref is not None:
                        div = describe_divergence(ref, res.tokens, model.detokenize, config=cfg.name,
                                                  prompt_id=p.id, repeat=rep)
                        rec.identical = div is None
                        if div is not None:
                            report.divergences.append(div)
                    report.runs.append(rec)
                    done += 1
                    report_progress(done=done, phase="run", config=cfg.name, prompt_id=p.id, repeat=rep,
                                    last_tps=rec.decode_tps)
        report.cancelled = cancel.is_set()
        report.meta["seconds"] = round(time.perf_counter() - t0, 2)
        report.meta["retried_runs"] = retried
        try:
            report.meta["load_average_end"] = list(os.getloadavg())
        except OSError:
            pass
        report.refresh()
        report_progress(done=done, phase="cancelled" if report.cancelled else "done")
        return report
    finally:
        if own_engine:
            engine.close()


# --------------------------------------------------------------------------------------------- auto-tune
@dataclass
class AutotuneResult:
    preset: dict[str, object]
    report: BenchReport


def autotune_options(base: BenchOptions, mode: str = "quick") -> BenchOptions:
    """The sweep of an auto-tune: quick (under a minute on a small model) or thorough."""
    from dataclasses import replace

    if mode == "quick":
        prompts = base.prompts if base.prompts is not None else builtin_prompts()
        one_each: list[BenchPrompt] = []
        for p in prompts:
            if p.category not in {q.category for q in one_each}:
                one_each.append(p)
        return replace(base, prompts=one_each, repeats=1, max_tokens=min(base.max_tokens, 64),
                       draft_max=(2, 4, 8), adaptive=True)
    if mode == "thorough":
        return replace(base, repeats=max(base.repeats, 3), draft_max=DEFAULT_DRAFT_MAX, adaptive=True)
    raise BenchError(f"auto-tune mode must be 'quick' or 'thorough', got {mode!r}")


def pick_best(report: BenchReport, off_margin: float = OFF_MARGIN) -> ConfigSummary:
    """The fastest configuration overall; "off" unless speculation beats it by more than `off_margin`.

    A configuration whose output differed from the plain run is never picked, nor one that never had a guess
    accepted (it only added work: if it measured faster, that was noise).
    """
    overall = [s for s in report.summaries if s.category == ALL and s.decode_tps > 0]
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
        "draft": meta.get("draft") if speculation == "draft-model" else None,
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
    progress: Callable[[BenchProgress], None] | None = None,
    cancel: threading.Event | None = None,
    engine=None,
) -> AutotuneResult:
    """Benchmark the sweep of `mode` and return the fastest configuration as a preset (and the report)."""
    report = run_benchmark(autotune_options(options, mode), progress=progress, cancel=cancel, engine=engine)
    if report.cancelled and not report.runs:
        raise BenchError("auto-tune was cancelled before any run finished")
    preset = preset_from_report(report, mode)
    report.autotune = preset
    return AutotuneResult(preset, report)
