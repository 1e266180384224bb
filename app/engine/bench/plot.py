"""The benchmark's plot: decode tok/s vs draft tokens, one panel per category (and overall), with the lines of
"off" and the adaptive length. A matplotlib Figure without pyplot or a display, so a dialog can put it in a
canvas widget and the CLI can write it as PNG."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from app.engine.bench.configs import OFF
from app.engine.bench.summary import ALL

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from app.engine.bench.report import BenchReport

__all__ = ["figure"]


def figure(report: BenchReport, title: str | None = None) -> Figure:
    """The plot of `report` (matplotlib is imported here, when a plot is drawn)."""
    from matplotlib.figure import Figure

    panels = [ALL, *report.categories()]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    fixed = [c for c in report.configs if c.speculative and not c.adaptive]
    adaptive = next((c for c in report.configs if c.adaptive), None)
    for ax, cat in zip(axes.flat, panels, strict=False):
        off = report.summary(OFF.name, cat)
        xs, ys, lo, hi = [], [], [], []
        for c in fixed:
            s = report.summary(c.name, cat)
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
            s = report.summary(adaptive.name, cat)
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
    meta = report.meta
    fig.suptitle(
        title
        or f"{meta.get('target_name', '?')} + {meta.get('draft_name', meta.get('speculation', ''))} · "
        f"{meta.get('threads', '?')} threads · greedy"
    )
    fig.tight_layout()
    return fig
