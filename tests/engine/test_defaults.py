"""The one place users start from: sampling and per-source speculation defaults."""

from __future__ import annotations

import pytest

from app.engine.defaults import DEFAULT_SOURCE, spec_defaults
from app.engine.sampling import SamplingParams
from app.engine.session import DRAFT_SOURCES
from app.engine.speculative import SpecSettings


def test_sampling_defaults_are_llama_cpp_s():
    s = SamplingParams()
    assert (s.temperature, s.top_k, s.top_p, s.min_p, s.repeat_penalty, s.seed) == (0.8, 40, 0.95, 0.05, 1.0, None)
    s.validate()


def test_each_source_starts_adaptive_with_its_measured_length():
    assert DEFAULT_SOURCE == "off"
    assert spec_defaults("draft-model") == SpecSettings(draft_max=8, adaptive=True)
    assert spec_defaults("history") == SpecSettings(draft_max=16, adaptive=True)
    assert spec_defaults("off") == spec_defaults("draft-model")  # what turning a draft model on starts from
    for source in DRAFT_SOURCES:  # every source the engine knows has its defaults
        spec = spec_defaults(source)
        spec.validate()
        assert spec.draft_min == 0 and spec.draft_p_min == 0.0
    assert spec_defaults("history") is not spec_defaults("history")  # a fresh copy to change
    with pytest.raises(ValueError, match="unknown draft source 'bogus'"):
        spec_defaults("bogus")
