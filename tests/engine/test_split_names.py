"""The split-file naming rule shared by the GGUF reader, the library and the Hub listing."""

from __future__ import annotations

import pytest

from app.engine.split_names import SplitName, model_stem, parse_split_name


def test_a_split_part_names_its_model_and_every_part() -> None:
    split = parse_split_name("Qwen-7B-Q8_0-00002-of-00003.gguf")
    assert split == SplitName("Qwen-7B-Q8_0", 2, 3)
    assert split.part_names == (
        "Qwen-7B-Q8_0-00001-of-00003.gguf",
        "Qwen-7B-Q8_0-00002-of-00003.gguf",
        "Qwen-7B-Q8_0-00003-of-00003.gguf",
    )
    assert parse_split_name("X-00001-OF-00002.GGUF") == SplitName("X", 1, 2)


@pytest.mark.parametrize(
    "name",
    ["model-00001-of-00001.gguf",  # one part: an ordinary model file
     "model-00000-of-00002.gguf", "model-00004-of-00003.gguf", "model-1-of-3.gguf", "model.gguf",
     "model-00001-of-00002.bin"],
)  # fmt: skip
def test_names_that_are_not_split_parts(name: str) -> None:
    assert parse_split_name(name) is None


def test_model_stem() -> None:
    assert model_stem("big-Q4_K_M-00003-of-00003.gguf") == "big-Q4_K_M"
    assert model_stem("small.GGUF") == "small"
    assert model_stem("single-00001-of-00001.gguf") == "single-00001-of-00001"
