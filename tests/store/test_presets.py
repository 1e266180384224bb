"""Named presets: save, replace by name, delete, export and import (all or nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.store.db import open_database
from app.store.presets import Preset, PresetError, PresetStore, export_json, parse_json
from app.store.settings import SettingsStore


@pytest.fixture
def presets(tmp_path: Path):
    conn = open_database(tmp_path / "t.sqlite3")
    yield PresetStore(SettingsStore(conn))
    conn.close()


def test_save_replace_delete(presets):
    assert presets.list() == []
    presets.save(Preset("Coder", "You write Python.", {"temperature": 0.2, "draft_source": "history"}))
    presets.save(Preset("  Writer  ", "Be lyrical.", {"temperature": 1.0}))
    assert presets.names() == ["Coder", "Writer"]
    presets.save(Preset("coder", "You write Rust.", {"temperature": 0.1}))  # same name, any case: replaced
    assert presets.names() == ["coder", "Writer"]
    assert presets.get("CODER").system_prompt == "You write Rust."
    assert presets.delete("writer") and not presets.delete("writer")
    assert presets.names() == ["coder"]


@pytest.mark.parametrize("bad, why", [
    (Preset("", "x"), "no name"),
    (Preset("x" * 61), "longer than"),
    (Preset("A", "p", {"temperature": [1]}), "'values'"),
])
def test_invalid_presets_are_refused(presets, bad, why):
    with pytest.raises(PresetError, match=why):
        presets.save(bad)
    assert presets.list() == []


def test_export_import_round_trip(presets):
    presets.save(Preset("Coder", "You write Python.", {"temperature": 0.2, "adaptive": True}))
    text = export_json(presets.list())
    assert json.loads(text)["format"] == "tandem-presets"
    presets.delete("Coder")
    imported = presets.import_json(text)
    assert [p.name for p in imported] == ["Coder"]
    assert presets.get("Coder").values == {"temperature": 0.2, "adaptive": True}
    # one preset object on its own is a valid file too
    assert parse_json(json.dumps({"name": "Solo", "values": {}}))[0].name == "Solo"


@pytest.mark.parametrize("text, why", [
    ("{", "not JSON"),
    ('{"format": "other"}', "not a Tandem presets file"),
    ('{"format": "tandem-presets", "presets": [{"name": "ok"}, {"name": 3}]}', "preset 2 has no name"),
])
def test_bad_files_change_nothing(presets, text, why):
    presets.save(Preset("Keep"))
    with pytest.raises(PresetError, match=why):
        presets.import_json(text)
    assert presets.names() == ["Keep"]


def test_a_damaged_stored_entry_is_skipped(presets):
    presets.settings.set("presets", [{"name": "Good"}, {"nope": 1}, "junk"])
    assert presets.names() == ["Good"]
