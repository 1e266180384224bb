"""Settings kept in the database: app settings, per-model settings, per target+draft pair presets.

``SettingsStore(conn)`` works on a connection from :func:`app.store.db.open_database` and belongs
to that connection's thread. Values are stored as JSON, so anything ``json.dumps`` accepts
(without NaN/infinity) can be stored; what comes back is a fresh copy each time.

* **App settings**: key -> JSON value, falling back to :data:`DEFAULT_APP_SETTINGS` (or the
  ``defaults`` given to the store) for keys never set.
* **Per-model settings** (a dict per model, e.g. context size, GPU layers, sampling): keyed by
  :func:`model_key` - the file's *name and size*, not its folder, so moving or copying a model
  file to another folder (or drive) keeps its settings, while a different quantisation or a
  re-converted file (different size) starts fresh. Two different files with the same name and
  the same byte size would share settings; for split GGUF files the first part names the model.
* **Pair presets** (a dict per target+draft pair, e.g. the benchmark's best ``draft_max``):
  keyed by the two models' :func:`model_key`; a target drafting from the chat history (no draft model) uses
  :data:`HISTORY_KEY` as its draft key.

A stored value that no longer parses as JSON is treated as absent (its default applies).
"""

from __future__ import annotations

import copy
import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from app.engine import sources
from app.engine.session import ModelSettings
from app.store.db import database_file, open_database

__all__ = ["DEFAULT_APP_SETTINGS", "HISTORY_KEY", "SettingsStore", "model_key"]

#: The draft key of a target's pair preset drafting from the chat history (no draft model; never a model_key: no colon).
HISTORY_KEY = sources.HISTORY

#: Defaults of the app settings (the one table: the window and the settings dialog read it through the store).
DEFAULT_APP_SETTINGS: Mapping[str, Any] = {
    "theme": "system",  # "system" | "light" | "dark"
    "model_folders": [],  # the user's own model folders (the default and LM Studio's are always scanned)
    "default_ctx": ModelSettings.n_ctx,  # context length for a model with no settings of its own
    "threads": 0,  # 0 = automatic
    "highlight_draft_tokens": False,  # shade text that came from accepted draft guesses
    "remember_past_chats": True,  # draft from past chats (kept on this computer, per tokenizer family)
    "load_last_model": True,  # at start, load the model used last (on the first run: the bundled demo model)
    "preset": "",  # the preset chosen last in the model bar ("" = none)
    "workers": [],  # "HOST:PORT" of other machines that hold part of the target (`tandem worker`)
    "workers_enabled": True,  # off: the target loads on this machine only (the list is kept)
}

_MISSING: Any = object()


def model_key(path: Path | str) -> str:
    """Identity of a model file for its settings: ``"<file name>:<size in bytes>"``.

    Independent of the folder, so a moved file keeps its settings (see the module docstring).
    Raises ``OSError`` when the file cannot be read (``stat``).
    """
    path = Path(path)
    return f"{path.name}:{path.stat().st_size}"


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} cannot be stored as JSON: {exc}") from exc


def _loads(text: str | None) -> Any:
    if text is None:
        return _MISSING
    try:
        return json.loads(text)
    except ValueError:
        return _MISSING


def _dict_or_empty(text: str | None) -> dict[str, Any]:
    value = _loads(text)
    return value if isinstance(value, dict) else {}


class SettingsStore:
    """App, per-model and per-pair settings on one connection (one thread)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        defaults: Mapping[str, Any] | None = None,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.conn = conn
        self.defaults: dict[str, Any] = {**DEFAULT_APP_SETTINGS, **(defaults or {})}
        self._now = now

    def opener(self) -> Callable[[], SettingsStore] | None:
        """Opens another store on this one's database file, with the same defaults, for another thread (a
        connection belongs to the thread that opened it); None for an in-memory database (nothing to reopen)."""
        path = database_file(self.conn)
        if path is None:
            return None
        defaults = dict(self.defaults)
        return lambda: SettingsStore(open_database(path), defaults)

    # -- app settings ----------------------------------------------------------------------------------

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The stored value, else ``default`` when given, else the store's default for ``key``;
        ``KeyError`` when there is none of these."""
        row = self.conn.execute("SELECT value_json FROM app_settings WHERE key = ?", (key,)).fetchone()
        value = _loads(row[0]) if row else _MISSING
        if value is not _MISSING:
            return value
        if default is not _MISSING:
            return default
        if key in self.defaults:
            return copy.deepcopy(self.defaults[key])
        raise KeyError(key)

    def set(self, key: str, value: Any) -> None:
        self.conn.execute(
            "INSERT INTO app_settings (key, value_json, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json, updated_at = excluded.updated_at",
            (key, _dumps(value, f"setting {key!r}"), self._now()),
        )

    # -- per-model settings ----------------------------------------------------------------------------

    def get_model_settings(self, key: str) -> dict[str, Any]:
        """Settings stored for the model ``key`` (:func:`model_key`); {} if none."""
        row = self.conn.execute(
            "SELECT settings_json FROM model_settings WHERE model_key = ?", (key,)
        ).fetchone()
        return _dict_or_empty(row[0] if row else None)

    def set_model_settings(self, key: str, settings: Mapping[str, Any]) -> None:
        """Replace the model's settings with ``settings``."""
        self.conn.execute(
            "INSERT INTO model_settings (model_key, settings_json, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(model_key) DO UPDATE SET settings_json = excluded.settings_json,"
            " updated_at = excluded.updated_at",
            (key, _dumps(_as_dict(settings), f"settings of {key!r}"), self._now()),
        )

    def reset_model_settings(self, key: str) -> bool:
        return self.conn.execute("DELETE FROM model_settings WHERE model_key = ?", (key,)).rowcount > 0

    # -- per target+draft pair presets -----------------------------------------------------------------

    def get_pair_settings(self, target_key: str, draft_key: str) -> dict[str, Any]:
        """The preset stored for the pair (both :func:`model_key`); {} if none."""
        row = self.conn.execute(
            "SELECT settings_json FROM pair_presets WHERE target_key = ? AND draft_key = ?",
            (target_key, draft_key),
        ).fetchone()
        return _dict_or_empty(row[0] if row else None)

    def set_pair_settings(self, target_key: str, draft_key: str, settings: Mapping[str, Any]) -> None:
        """Replace the pair's preset with ``settings``."""
        self.conn.execute(
            "INSERT INTO pair_presets (target_key, draft_key, settings_json, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(target_key, draft_key) DO UPDATE SET settings_json = excluded.settings_json,"
            " updated_at = excluded.updated_at",
            (
                target_key,
                draft_key,
                _dumps(_as_dict(settings), f"preset of {target_key!r} + {draft_key!r}"),
                self._now(),
            ),
        )

    def update_pair_settings(
        self, target_key: str, draft_key: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge ``changes`` into the pair's stored preset; returns the result."""
        merged = {**self.get_pair_settings(target_key, draft_key), **_as_dict(changes)}
        self.set_pair_settings(target_key, draft_key, merged)
        return merged

    def reset_pair_settings(self, target_key: str, draft_key: str) -> bool:
        return (
            self.conn.execute(
                "DELETE FROM pair_presets WHERE target_key = ? AND draft_key = ?", (target_key, draft_key)
            ).rowcount
            > 0
        )


def _as_dict(settings: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(settings, Mapping):
        raise TypeError(f"settings must be a mapping, not {type(settings).__name__}")
    return dict(settings)
