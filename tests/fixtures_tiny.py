"""Pytest plugin: the tiny random-weight GGUF models (written once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import write_tiny_mamba, write_tiny_set


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny_set(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_target(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["target"]


@pytest.fixture(scope="session")
def tiny_draft(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["draft"]


@pytest.fixture(scope="session")
def tiny_other_vocab(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["other"]


@pytest.fixture(scope="session")
def tiny_mamba(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny recurrent (Mamba) model: its memory cannot roll back."""
    return write_tiny_mamba(tmp_path_factory.mktemp("tiny-mamba") / "tiny-mamba.gguf")
