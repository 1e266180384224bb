"""Named presets: a system prompt plus generation settings (sampling and speculation), chosen from the model bar.

Presets are kept as one app setting (:data:`PRESETS_KEY`, a JSON list) in the :class:`SettingsStore`.
What a preset's ``values`` hold is the caller's business (the app stores the settings panel's sampling and
speculation fields); the store only requires JSON scalars (numbers, text, true/false) under text keys.

:func:`export_json` / :func:`parse_json` read and write a file of presets (:data:`FORMAT`); bad input gives
:class:`PresetError` with a one-line message and nothing is changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from app.store.settings import SettingsStore

__all__ = ["FORMAT", "PRESETS_KEY", "Preset", "PresetError", "PresetStore", "export_json", "parse_json"]

PRESETS_KEY = "presets"
FORMAT = "tandem-presets"
NAME_MAX_CHARS = 60


class PresetError(ValueError):
    """A preset (or a presets file) is not valid; the message is one line."""


@dataclass(frozen=True)
class Preset:
    name: str
    system_prompt: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "system_prompt": self.system_prompt, "values": dict(self.values)}


def _scalar(v: object) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _preset(data: object, where: str = "preset") -> Preset:
    if not isinstance(data, dict):
        raise PresetError(f"{where} is not an object")
    name = data.get("name")
    if not isinstance(name, str) or not " ".join(name.split()):
        raise PresetError(f"{where} has no name")
    name = " ".join(name.split())
    if len(name) > NAME_MAX_CHARS:
        raise PresetError(f"{where}: the name is longer than {NAME_MAX_CHARS} characters")
    prompt = data.get("system_prompt", "")
    if not isinstance(prompt, str):
        raise PresetError(f"{where} ({name}): the system prompt must be text")
    values = data.get("values", {})
    if not isinstance(values, dict) or not all(isinstance(k, str) and _scalar(v) for k, v in values.items()):
        raise PresetError(f"{where} ({name}): 'values' must map names to numbers, text or true/false")
    return Preset(name, prompt, dict(values))


class PresetStore:
    """The user's presets, by name (case-insensitive: one preset per name), in the order they were made."""

    def __init__(self, settings: SettingsStore) -> None:
        self.settings = settings

    def list(self) -> list[Preset]:
        raw = self.settings.get(PRESETS_KEY, [])
        out: list[Preset] = []
        for item in raw if isinstance(raw, list) else []:
            try:
                out.append(_preset(item))
            except PresetError:
                continue  # a damaged entry is skipped, the others stay usable
        return out

    def names(self) -> list[str]:
        return [p.name for p in self.list()]

    def get(self, name: str) -> Preset | None:
        key = name.casefold()
        return next((p for p in self.list() if p.name.casefold() == key), None)

    def save(self, preset: Preset) -> Preset:
        """Add a preset, or replace the one of the same name (in place). Raises :class:`PresetError`."""
        checked = _preset(preset.to_dict())
        items = self.list()
        key = checked.name.casefold()
        for i, p in enumerate(items):
            if p.name.casefold() == key:
                items[i] = checked
                break
        else:
            items.append(checked)
        self._write(items)
        return checked

    def delete(self, name: str) -> bool:
        items = self.list()
        kept = [p for p in items if p.name.casefold() != name.casefold()]
        if len(kept) == len(items):
            return False
        self._write(kept)
        return True

    def import_json(self, text: str) -> list[Preset]:
        """Add (or replace by name) every preset of a presets file; all or nothing."""
        presets = parse_json(text)
        for p in presets:
            self.save(p)
        return presets

    def _write(self, items: list[Preset]) -> None:
        self.settings.set(PRESETS_KEY, [p.to_dict() for p in items])


def export_json(presets: list[Preset]) -> str:
    return json.dumps({"format": FORMAT, "version": 1, "presets": [p.to_dict() for p in presets]},
                      ensure_ascii=False, indent=2) + "\n"


def parse_json(text: str) -> list[Preset]:
    """The presets of a presets file (:func:`export_json`); a single preset object is accepted too."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise PresetError(f"not JSON: {e}") from None
    if isinstance(data, dict) and "presets" not in data and "name" in data:
        return [_preset(data)]
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("presets"), list):
        raise PresetError(f"not a Tandem presets file (no \"format\": \"{FORMAT}\" with a list of presets)")
    return [_preset(p, f"preset {i}") for i, p in enumerate(data["presets"], 1)]
