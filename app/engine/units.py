"""Numbers for people: byte sizes, memory amounts and counts, each shown one way everywhere in the app.

* **Files** (model files, downloads, disk space, speeds) in decimal units, as file managers and download
  sites show them: ``98 MB``, ``4.9 GB``, ``512 kB`` (1 kB = 1000 bytes) — `format_bytes`.
* **Memory** (RAM, VRAM and the estimates measured against them) in binary units, as system monitors
  and ``nvidia-smi`` show them and as memory is sold: a 24 GiB card reads ``24.0 GiB``, not
  ``25.8 GB`` — `format_memory`.
* **Counts** (parameters, downloads, likes) with K, M, B, T: ``135M``, ``1.7B`` — `format_count`.
* **Draft acceptance**: ``accepted 15/20 draft tokens (75%)`` — `format_acceptance`.

Files and counts keep two significant digits below 10 and whole numbers above, dropping a trailing
``.0`` (``7B``, ``4 GB``). Every formatter shows "—" for a value nobody knows (None or negative).
"""

from __future__ import annotations

__all__ = ["UNKNOWN", "format_acceptance", "format_bytes", "format_count", "format_memory"]

UNKNOWN = "—"

_FILE_UNITS = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3))
_COUNT_UNITS = (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3))
_KIB, _MIB, _GIB = 1 << 10, 1 << 20, 1 << 30


def _scaled(n: float, units: tuple[tuple[str, float], ...], sep: str) -> str | None:
    for unit, scale in units:
        if n >= scale * 0.9995:  # 999.6 MB would round to "1000 MB": it is "1 GB"
            value = n / scale
            text = f"{value:.1f}" if value < 9.95 else f"{value:.0f}"
            return f"{text.removesuffix('.0')}{sep}{unit}"
    return None


def format_bytes(n: float | None) -> str:
    """A file or download size: '98 MB', '4.9 GB', '512 kB', '12 B'."""
    if n is None or n < 0:
        return UNKNOWN
    return _scaled(n, _FILE_UNITS, " ") or f"{int(n)} B"


def format_memory(n: float | None) -> str:
    """An amount of RAM or VRAM: '1.2 GiB', '24.0 GiB', '350 MiB', '12 KiB'."""
    if n is None or n < 0:
        return UNKNOWN
    if n >= _GIB:
        return f"{n / _GIB:.1f} GiB"
    if n >= _MIB:
        return f"{n / _MIB:.0f} MiB"
    return f"{n / _KIB:.0f} KiB"


def format_count(n: float | None) -> str:
    """A number of parameters, downloads or likes: '135M', '1.7B', '71B', '96K', '999'."""
    if n is None or n < 0:
        return UNKNOWN
    return _scaled(n, _COUNT_UNITS, "") or f"{int(n)}"


def format_acceptance(accepted: int, drafted: int) -> str:
    """How much of the drafting the target accepted: 'accepted 15/20 draft tokens (75%)' (drafted > 0)."""
    return f"accepted {accepted}/{drafted} draft tokens ({accepted / drafted:.0%})"
