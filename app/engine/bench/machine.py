"""What the benchmark records about the machine, and whether other programs took the CPU during a run."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence

__all__ = ["machine_info", "load_average", "contended"]


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the system has none)."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def machine_info() -> dict[str, object]:
    """Platform, Python, CPU count and model, and the load average now."""
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
    load = load_average()
    if load is not None:
        info["load_average"] = load
    return info


def contended(share: float, earlier: Sequence[float]) -> bool:
    """Did this run get much less CPU than the runs before it (relative, so a GPU run's low share is fine)?"""
    if len(earlier) < 3:
        return False
    return share < 0.8 * statistics.median(earlier[-50:])
