"""App settings with defaults, per-model settings keyed by file name + size, per-pair presets."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.store.db import open_database
from app.store.settings import DEFAULT_APP_SETTINGS, SettingsStore, model_key


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tandem.sqlite3"


@pytest.fixture
def conn(db_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_database(db_path)
    yield c
    c.close()


def test_app_settings_defaults_and_set(conn: sqlite3.Connection) -> None:
    s = SettingsStore(conn, defaults={"font_size": 11})
    assert s.get("theme") == DEFAULT_APP_SETTINGS["theme"]
    assert s.get("font_size") == 11
    with pytest.raises(KeyError):
        s.get("unknown")
    assert s.get("unknown", 5) == 5

    s.set("theme", "dark")
    s.set("font_size", 14)
    s.set("recent", ["/a.gguf", "/b.gguf"])
    s.set("window", {"w": 800, "h": 600, "maximized": False})
    s.set("nothing", None)
    assert s.get("theme") == "dark" and s.get("font_size") == 14
    assert s.get("recent") == ["/a.gguf", "/b.gguf"]
    assert s.get("window") == {"w": 800, "h": 600, "maximized": False}
    assert s.get("nothing", "fallback") is None  # a stored null is a value
    s.set("theme", "light")  # overwrite
    assert s.get("theme") == "light"


def test_app_settings_values_are_copies_and_json_only(conn: sqlite3.Connection) -> None:
    s = SettingsStore(conn, defaults={"list": [1, 2]})
    got = s.get("list")
    got.append(3)
    assert s.get("list") == [1, 2]
    with pytest.raises(ValueError):
        s.set("bad", object())
    with pytest.raises(ValueError):
        s.set("nan", float("nan"))


def test_unparsable_stored_value_falls_back(conn: sqlite3.Connection) -> None:
    s = SettingsStore(conn)
    conn.execute("INSERT INTO app_settings VALUES ('theme', '{broken', 0)")
    assert s.get("theme") == DEFAULT_APP_SETTINGS["theme"]


def test_settings_persist_across_connections(db_path: Path) -> None:
    a = open_database(db_path)
    SettingsStore(a).set("theme", "dark")
    SettingsStore(a).set_model_settings("m.gguf:10", {"n_ctx": 4096})
    a.close()
    b = open_database(db_path)
    assert SettingsStore(b).get("theme") == "dark"
    assert SettingsStore(b).get_model_settings("m.gguf:10") == {"n_ctx": 4096}
    b.close()


def test_opener_gives_another_thread_its_own_store_on_the_same_file(conn: sqlite3.Connection) -> None:
    store = SettingsStore(conn, {"extra": 1})
    store.set("theme", "dark")
    opener = store.opener()
    assert opener is not None
    seen: list[object] = []

    def read() -> None:
        other = opener()  # opened in this thread: sqlite3 refuses a connection from another one
        seen.extend([other.get("theme"), other.get("extra"), other.conn is not conn])
        other.conn.close()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(30)
    assert seen == ["dark", 1, True]
    assert SettingsStore(open_database(":memory:")).opener() is None


def test_model_key_is_name_and_size_so_moving_keeps_settings(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    original = tmp_path / "models" / "Qwen-7B-Q4_K_M.gguf"
    original.parent.mkdir()
    original.write_bytes(b"\0" * 1234)
    key = model_key(original)
    assert key == "Qwen-7B-Q4_K_M.gguf:1234"
    assert model_key(str(original)) == key

    s = SettingsStore(conn)
    s.set_model_settings(key, {"n_gpu_layers": 20})

    moved = tmp_path / "elsewhere" / original.name
    moved.parent.mkdir()
    shutil.move(original, moved)
    assert model_key(moved) == key
    assert s.get_model_settings(model_key(moved)) == {"n_gpu_layers": 20}

    other_quant = tmp_path / "elsewhere" / "Qwen-7B-Q8_0.gguf"
    other_quant.write_bytes(b"\0" * 1234)
    assert model_key(other_quant) != key
    rebuilt = tmp_path / "rebuilt" / original.name
    rebuilt.parent.mkdir()
    rebuilt.write_bytes(b"\0" * 999)  # same name, other contents
    assert model_key(rebuilt) != key
    with pytest.raises(OSError):
        model_key(tmp_path / "missing.gguf")


def test_model_settings_get_set_reset(conn: sqlite3.Connection) -> None:
    s = SettingsStore(conn)
    key = "a.gguf:100"
    assert s.get_model_settings(key) == {}
    s.set_model_settings(key, {"n_ctx": 8192, "temperature": 0.7})
    assert s.get_model_settings(key) == {"n_ctx": 8192, "temperature": 0.7}
    s.set_model_settings(key, {"n_ctx": 4096})  # set replaces
    assert s.get_model_settings(key) == {"n_ctx": 4096}
    assert s.get_model_settings("b.gguf:100") == {}  # per model
    assert s.reset_model_settings(key) is True
    assert s.reset_model_settings(key) is False
    assert s.get_model_settings(key) == {}
    with pytest.raises(TypeError):
        s.set_model_settings(key, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        s.set_model_settings(key, {"x": object()})


def test_pair_presets(conn: sqlite3.Connection) -> None:
    s = SettingsStore(conn)
    target, draft = "big.gguf:7000", "small.gguf:500"
    assert s.get_pair_settings(target, draft) == {}
    s.set_pair_settings(target, draft, {"draft_max": 6, "tokens_per_s": 41.5})
    assert s.get_pair_settings(target, draft) == {"draft_max": 6, "tokens_per_s": 41.5}
    assert s.get_pair_settings(draft, target) == {}  # ordered: target first
    assert s.get_pair_settings(target, "other.gguf:1") == {}
    assert s.update_pair_settings(target, draft, {"draft_max": 8}) == {"draft_max": 8, "tokens_per_s": 41.5}
    assert s.get_pair_settings(target, draft) == {"draft_max": 8, "tokens_per_s": 41.5}
    s.set_pair_settings(target, draft, {"draft_max": 4})
    assert s.get_pair_settings(target, draft) == {"draft_max": 4}
    # model settings and pair presets are separate
    assert s.get_model_settings(target) == {}
    assert s.reset_pair_settings(target, draft) is True
    assert s.reset_pair_settings(target, draft) is False
    assert s.get_pair_settings(target, draft) == {}
