"""What a user starts from, in one place: the CLI, the settings panel and the benchmark read these defaults.

* **Sampling**: `SamplingParams()` (app.engine.sampling) — llama.cpp's and LM Studio's defaults, no repeat
  penalty.
* **Speculation**: the draft source is `DEFAULT_SOURCE` ("off"); each source starts from
  `spec_defaults(source)`, measured with the adaptive controller (docs/benchmarks.md): the adaptive length,
  which never loses where drafting cannot win and stays near the best fixed length where it wins, up to
  `SpecSettings().draft_max` guesses for a draft model and up to `HISTORY_DRAFT_MAX` for drafting from
  the chat history (its guesses cost only their verify rows).
* **Reply length**: `MAX_TOKENS`, for the app's replies and `tandem generate` / `tandem chat`.
"""

from __future__ import annotations

from dataclasses import replace

from app.engine import sources
from app.engine.speculative import SpecSettings

__all__ = ["DEFAULT_SOURCE", "MAX_TOKENS", "HISTORY_DRAFT_MAX", "spec_defaults"]

DEFAULT_SOURCE = sources.OFF
MAX_TOKENS = 1024
HISTORY_DRAFT_MAX = 16


def spec_defaults(source: str) -> SpecSettings:
    """The speculation settings `source` (one of app.engine.session.DRAFT_SOURCES) starts with.

    "off" drafts nothing; its settings are the draft model's, so what the app shows while speculation is off
    is what turning a draft model on starts from. A source without an entry here is refused (ValueError).
    """
    adaptive = replace(SpecSettings(), adaptive=True)
    per_source = {
        sources.OFF: adaptive,
        sources.DRAFT_MODEL: adaptive,
        sources.HISTORY: replace(adaptive, draft_max=HISTORY_DRAFT_MAX),
    }
    if source not in per_source:
        raise ValueError(f"unknown draft source {source!r} (one of {', '.join(per_source)})")
    return per_source[source]
