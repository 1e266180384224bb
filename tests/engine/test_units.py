"""How sizes, memory amounts and counts read: one formatter each, the same in every tab."""

from __future__ import annotations

import pytest

from app.engine.units import format_bytes, format_count, format_memory

MIB = 1 << 20
GIB = 1 << 30


@pytest.mark.parametrize(
    ("n", "text"),
    [(98_000_000, "98 MB"), (101_810_880, "102 MB"), (4_920_000_000, "4.9 GB"), (4_000_000_000, "4 GB"),
     (512, "512 B"), (0, "0 B"), (397_312, "397 kB"), (999_600_000, "1 GB"), (12_600_000_000, "13 GB"),
     (8_400_000.5, "8.4 MB"), (None, "—"), (-1, "—")],
)  # fmt: skip
def test_format_bytes(n: float | None, text: str) -> None:
    assert format_bytes(n) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(1.2 * GIB, "1.2 GiB"), (24 * GIB, "24.0 GiB"), (350 * MIB, "350 MiB"), (12 * 1024, "12 KiB"),
     (None, "—")],
)  # fmt: skip
def test_format_memory(n: float | None, text: str) -> None:
    assert format_memory(n) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(134_515_008, "135M"), (1_711_376_384, "1.7B"), (70_553_706_496, "71B"), (96_448, "96K"), (999, "999"),
     (0, "0"), (7_241_732_096, "7.2B"), (7e9, "7B"), (0.135e9, "135M"), (999_900_000, "1B"), (12_345, "12K"),
     (2_500_000, "2.5M"), (None, "—")],
)  # fmt: skip
def test_format_count(n: float | None, text: str) -> None:
    assert format_count(n) == text
