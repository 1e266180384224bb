"""Pytest plugin: the small real GGUF models from the package index (see app.library.reference_models).

The files are cached per machine (``$TANDEM_MODEL_CACHE`` or the user cache folder), so only the
first session on a machine downloads them; later sessions just check the cache stamps.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.library import reference_models


@pytest.fixture(scope="session")
def smollm2_q4_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 (~98 MB): the app's demo model."""
    return reference_models.smollm2_q4_1()


@pytest.fixture(scope="session")
def smollm2_f16_path(smollm2_q4_path: Path) -> Path:
    """The same SmolLM2 dequantized to F16 (~271 MB), built from the Q4_1 file."""
    return reference_models.smollm2_f16()


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """Gemma 3 270M Q4_K_M (~253 MB), joined from four wheels and sha256-checked."""
    return reference_models.gemma3_270m()
