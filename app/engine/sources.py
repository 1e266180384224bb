"""The draft sources a user chooses from (settings, CLI, benchmark, stored presets): one name each, here.

* `OFF` — plain decoding;
* `DRAFT_MODEL` — a small model with the same tokenizer drafts;
* `HISTORY` — no second model: drafts come from this conversation and from past chats (`HistoryProposer`;
  the CLI calls it ``--prompt-lookup``, the name of its classic special case).

Settings stored before the history drafter existed say "prompt-lookup": `normalize_source` reads them.
"""

from __future__ import annotations

__all__ = ["OFF", "DRAFT_MODEL", "HISTORY", "DRAFT_SOURCES", "LABELS", "SHORT_LABELS", "normalize_source"]

OFF = "off"
DRAFT_MODEL = "draft-model"
HISTORY = "history"
DRAFT_SOURCES = (OFF, DRAFT_MODEL, HISTORY)
#: how the app names them where space is short (the model bar's menu, its status line)
SHORT_LABELS = {OFF: "Off", DRAFT_MODEL: "Draft model", HISTORY: "This chat + past chats"}
#: how the app names them in full (settings, benchmark, tooltips)
LABELS = {**SHORT_LABELS, HISTORY: f"{SHORT_LABELS[HISTORY]} (no draft model)"}
_LEGACY = {"prompt-lookup": HISTORY}


def normalize_source(source: str) -> str:
    """`source` as one of DRAFT_SOURCES (legacy names mapped); ValueError for anything else."""
    source = _LEGACY.get(source, source)
    if source not in DRAFT_SOURCES:
        raise ValueError(f"unknown draft source {source!r} (one of {', '.join(DRAFT_SOURCES)})")
    return source
