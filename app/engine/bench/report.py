"""A benchmark's report: its runs, differences and summaries, as JSON, CSV, a plain-text table and a plot."""

from __future__ import annotations

import csv
import json
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.engine.bench import plot
from app.engine.bench.compare import Divergence
from app.engine.bench.configs import OFF, BenchConfig
from app.engine.bench.summary import ALL, ConfigSummary, RunRecord, summarize

__all__ = ["BenchReport"]


@dataclass
class BenchReport:
    meta: dict[str, object]
    configs: list[BenchConfig]
    runs: list[RunRecord] = field(default_factory=list)
    divergences: list[Divergence] = field(default_factory=list)
    cancelled: bool = False
    summaries: list[ConfigSummary] = field(default_factory=list)
    autotune: dict[str, object] | None = None  # an auto-tune's pick, as a preset (app.engine.bench.autotune)
    autotune_error: str = ""  # why an auto-tune whose runs finished picked nothing

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
            autotune_error=str(data.get("autotune_error") or ""),
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
            "autotune_error": self.autotune_error,
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
        """PNG: the plot (app.engine.bench.plot)."""
        self.figure(title).savefig(str(path), dpi=110)

    def figure(self, title: str | None = None):
        """The plot as a matplotlib Figure (app.engine.bench.plot)."""
        return plot.figure(self, title)

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
                f"auto-tune pick{' from the partial sweep' if self.cancelled else ''}: {a['config']} "
                f"({a['decode_tps']:.1f} tok/s, {a['speedup']:.2f}x vs off; "
                f"best in sweep {a['best_config']} {a['best_decode_tps']:.1f} tok/s)"
            )
        elif self.autotune_error:
            lines.append("")
            lines.append(f"auto-tune: no pick ({self.autotune_error})")
        return "\n".join(lines)
