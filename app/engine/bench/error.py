"""The benchmark's error: a bad input (prompt file, options) or nothing to pick from, as one readable line."""

from __future__ import annotations

__all__ = ["BenchError"]


class BenchError(ValueError):
    """A bad benchmark input (prompt file, options): one readable line."""
