"""Opening the database: location, pragmas, migrations, newer / damaged / foreign files, move_aside."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

import platformdirs
import pytest

from app.store import db
from app.store.chats import ChatStore
from app.store.db import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    CorruptDatabaseError,
    NewerSchemaError,
    StoreError,
    default_db_path,
    move_aside,
    open_database,
    schema_version,
    transaction,
)

# The version-1 layout exactly as the first release wrote it (kept here, independent of db._V1).
V1_SCHEMA = """
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY, title TEXT NOT NULL DEFAULT '', system_prompt TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, updated_at REAL NOT NULL, model_path TEXT, draft_path TEXT);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'complete', stats_json TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, UNIQUE (conversation_id, position));
CREATE INDEX conversations_by_update ON conversations(updated_at);
"""


def make_v1(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.execute(
        "INSERT INTO conversations VALUES (1, 'Old chat', 'Be brief.', 100.0, 200.0, '/m/target.gguf', NULL)"
    )
    conn.execute(
        "INSERT INTO messages VALUES (1, 1, 0, 'user', 'hello there', 'complete', NULL, 100.0, 100.0)"
    )
    conn.execute(
        "INSERT INTO messages VALUES (2, 1, 1, 'assistant', 'hi!', 'complete', '{\"tps\": 12.5}', 150.0, 200.0)"
    )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


# ---------------------------------------------------------------------------------------------------------


def test_fresh_database_has_current_schema_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "tandem.sqlite3"
    conn = open_database(path)
    try:
        assert path.is_file()
        assert schema_version(conn) == SCHEMA_VERSION == len(db.MIGRATIONS)
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
        assert conn.isolation_level is None
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"conversations", "messages", "app_settings", "model_settings", "pair_presets"} <= tables
    finally:
        conn.close()
    # opening again is a no-op
    conn = open_database(path)
    assert schema_version(conn) == SCHEMA_VERSION
    conn.close()


def test_memory_database(tmp_path: Path) -> None:
    conn = open_database(":memory:")
    assert schema_version(conn) == SCHEMA_VERSION
    conn.close()


def test_default_path_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_DATA_DIR", str(tmp_path / "data"))
    assert default_db_path() == tmp_path / "data" / "tandem.sqlite3"
    conn = open_database()
    conn.close()
    assert (tmp_path / "data" / "tandem.sqlite3").is_file()


def test_default_path_platformdirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANDEM_DATA_DIR", raising=False)
    assert default_db_path() == Path(platformdirs.user_data_dir("tandem")) / "tandem.sqlite3"


def test_migrates_v1_keeping_data(tmp_path: Path) -> None:
    path = tmp_path / "tandem.sqlite3"
    make_v1(path)
    conn = open_database(path)
    try:
        assert schema_version(conn) == SCHEMA_VERSION
        store = ChatStore(conn)
        (conv,) = store.list_conversations()
        assert (conv.id, conv.title, conv.system_prompt, conv.model_path) == (
            1,
            "Old chat",
            "Be brief.",
            "/m/target.gguf",
        )
        assert conv.settings_json is None
        msgs = store.get_messages(1)
        assert [(m.role, m.content, m.draft_mask) for m in msgs] == [
            ("user", "hello there", None),
            ("assistant", "hi!", None),
        ]
        assert msgs[1].stats_json == '{"tps": 12.5}'
        # the new version's features work on the migrated file
        store.append_message(1, "user", "more")
        assert conn.execute("SELECT count(*) FROM model_settings").fetchone()[0] == 0
    finally:
        conn.close()


def test_failed_migration_leaves_file_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tandem.sqlite3"
    make_v1(path)

    def broken_step(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    monkeypatch.setattr(db, "MIGRATIONS", [*db.MIGRATIONS, broken_step])
    with pytest.raises(StoreError, match="no such table"):
        open_database(path)
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == 1
    names = {r[0] for r in check.execute("SELECT name FROM sqlite_master")}
    assert "half_done" not in names and "app_settings" not in names  # v2 rolled back too
    check.close()
    monkeypatch.undo()
    conn = open_database(path)
    assert schema_version(conn) == SCHEMA_VERSION
    conn.close()


def test_newer_schema_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "tandem.sqlite3"
    conn = open_database(path)
    conn.execute("PRAGMA user_version = 7")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(NewerSchemaError) as info:
        open_database(path)
    message = str(info.value)
    assert message.startswith(
        f"this chat database was written by a newer Tandem (schema 7, this version knows {SCHEMA_VERSION}): "
    )
    assert str(path) in message and "\n" not in message
    assert isinstance(info.value, StoreError)
    assert (info.value.found, info.value.known) == (7, SCHEMA_VERSION)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a database at all\n" * 100,
        b"SQLite format 3\x00" + b"\xff" * 4080,  # right magic, garbage header
    ],
)
def test_corrupt_file_is_refused_kept_and_moved_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "tandem.sqlite3"
    path.write_bytes(content)
    with pytest.raises(CorruptDatabaseError) as info:
        open_database(path)
    assert isinstance(info.value, StoreError)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert info.value.path == path
    assert path.read_bytes() == content  # never deleted or rewritten

    moved = move_aside(path)
    assert not path.exists()
    assert moved.parent == tmp_path
    assert re.fullmatch(r"tandem\.sqlite3\.corrupt-\d{8}-\d{6}", moved.name)
    assert moved.read_bytes() == content

    conn = open_database(path)  # a fresh, empty database
    assert ChatStore(conn).list_conversations() == []
    conn.close()


def test_move_aside_unique_names_and_sidecars(tmp_path: Path) -> None:
    path = tmp_path / "tandem.sqlite3"
    path.write_bytes(b"one")
    Path(f"{path}-wal").write_bytes(b"old log")
    Path(f"{path}-shm").write_bytes(b"shm")
    first = move_aside(path)
    assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()
    assert Path(f"{first}-wal").read_bytes() == b"old log"
    path.write_bytes(b"two")
    second = move_aside(path)
    assert second != first
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"
    with pytest.raises(StoreError):
        move_aside(tmp_path / "missing.sqlite3")


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE conversations (whatever)")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptDatabaseError, match="not a Tandem chat database"):
        open_database(path)

    path2 = tmp_path / "app.sqlite3"
    conn = sqlite3.connect(path2)
    conn.execute("PRAGMA application_id = 1234")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptDatabaseError, match="another program"):
        open_database(path2)


def test_unopenable_path(tmp_path: Path) -> None:
    folder = tmp_path / "tandem.sqlite3"
    folder.mkdir()
    with pytest.raises(StoreError, match="folder"):
        open_database(folder)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        open_database(blocker / "tandem.sqlite3")


def test_connection_belongs_to_its_thread(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "t.sqlite3")
    errors: list[BaseException] = []

    def use() -> None:
        try:
            conn.execute("SELECT 1")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=use)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], sqlite3.ProgrammingError)
    conn.close()


def test_two_connections_see_each_others_commits(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    a, b = open_database(path), open_database(path)
    try:
        cid = ChatStore(a).create_conversation("from a").id
        assert ChatStore(b).get_conversation(cid).title == "from a"  # type: ignore[union-attr]
        # a reader in a transaction does not block the writer (WAL)
        b.execute("BEGIN")
        b.execute("SELECT count(*) FROM conversations").fetchone()
        ChatStore(a).rename_conversation(cid, "renamed")
        b.execute("COMMIT")
        assert ChatStore(b).get_conversation(cid).title == "renamed"  # type: ignore[union-attr]
    finally:
        a.close()
        b.close()


def test_transaction_rolls_back_and_nests(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "t.sqlite3")
    store = ChatStore(conn)
    with pytest.raises(RuntimeError):
        with transaction(conn):
            store.create_conversation("gone")
            raise RuntimeError
    assert store.list_conversations() == []
    with transaction(conn):
        store.create_conversation("kept")
        with pytest.raises(RuntimeError):
            with transaction(conn):
                store.create_conversation("inner, gone")
                raise RuntimeError
    assert [c.title for c in store.list_conversations()] == ["kept"]
    assert not conn.in_transaction
    conn.close()
