"""Opening Tandem's SQLite database: location, connection settings, schema migrations.

The database lives at ``platformdirs.user_data_dir("tandem")/tandem.sqlite3``; the environment
variable ``TANDEM_DATA_DIR`` names another folder (tests, portable installs).

Connections
-----------
:func:`open_database` returns a :class:`sqlite3.Connection` that is

* in **autocommit** mode (``isolation_level=None``): every statement outside an explicit
  transaction commits on its own; multi-statement changes use :func:`transaction`;
* in **WAL** journal mode with ``synchronous=NORMAL``: a commit survives the app being killed
  (only a power loss can undo the last few commits), readers never block the writer;
* with foreign keys on (deleting a conversation deletes its messages) and a busy timeout, so
  two connections writing at once wait for each other instead of failing at once.

**Thread-safety: one connection per thread.** Connections are opened with
``check_same_thread=True``; a connection used from another thread raises
:class:`sqlite3.ProgrammingError`. The UI thread and the engine worker thread each call
:func:`open_database` for themselves (cheap) and build their own ``ChatStore`` /
``SettingsStore`` on it. Stores hold no state beyond their connection, so two stores on two
connections see each other's commits.

Schema
------
The schema version is SQLite's ``PRAGMA user_version``. :data:`MIGRATIONS` is the ordered list of
steps: step ``i`` takes a database from version ``i`` to ``i + 1``; a step is either a sequence of
SQL statements or a function of the connection. On open, the missing steps run in **one**
transaction together with the new ``user_version``: a failure leaves the file exactly as it was.
A database written by a newer Tandem (``user_version`` above :data:`SCHEMA_VERSION`) is refused
with :class:`NewerSchemaError` and left untouched.

Errors
------
Everything that keeps the database from opening is a :class:`StoreError` with a one-line message.
A damaged file, or a SQLite file that is not Tandem's, gives :class:`CorruptDatabaseError`; the
file is never deleted or rewritten - the caller may offer :func:`move_aside` and open again, which
then starts an empty database.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import platformdirs

__all__ = [
    "default_history_dir",
    "database_file",
    "APPLICATION_ID",
    "DB_FILENAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "CorruptDatabaseError",
    "Migration",
    "NewerSchemaError",
    "StoreError",
    "default_data_dir",
    "default_db_path",
    "move_aside",
    "open_database",
    "schema_version",
    "transaction",
]

DB_FILENAME = "tandem.sqlite3"
DATA_DIR_ENV = "TANDEM_DATA_DIR"
#: ``PRAGMA application_id`` of Tandem databases ("TNDM"); a SQLite file with another id is refused.
APPLICATION_ID = 0x544E444D
BUSY_TIMEOUT_S = 5.0


class StoreError(Exception):
    """The database cannot be opened or used; the message is one line, fit for the UI."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.path = path


class NewerSchemaError(StoreError):
    """The database was written by a newer Tandem; it is left untouched."""

    def __init__(self, message: str, path: Path | None, found: int, known: int) -> None:
        super().__init__(message, path)
        self.found = found
        self.known = known


class CorruptDatabaseError(StoreError):
    """The file is damaged or not a Tandem database; it is left in place (see :func:`move_aside`)."""


# ---------------------------------------------------------------------------------------------------------
# migrations

Migration = Sequence[str] | Callable[[sqlite3.Connection], None]

# Version 1: the first layout, conversations and their messages.
_V1: tuple[str, ...] = (
    """
    CREATE TABLE conversations (
        id            INTEGER PRIMARY KEY,
        title         TEXT NOT NULL DEFAULT '',
        system_prompt TEXT NOT NULL DEFAULT '',
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        model_path    TEXT,
        draft_path    TEXT
    )
    """,
    """
    CREATE TABLE messages (
        id              INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        position        INTEGER NOT NULL,
        role            TEXT NOT NULL,
        content         TEXT NOT NULL DEFAULT '',
        status          TEXT NOT NULL DEFAULT 'complete',
        stats_json      TEXT,
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL,
        UNIQUE (conversation_id, position)
    )
    """,
    "CREATE INDEX conversations_by_update ON conversations(updated_at)",
)

# Version 2: per-conversation settings, draft masks, app / per-model / per-pair settings.
_V2: tuple[str, ...] = (
    "ALTER TABLE conversations ADD COLUMN settings_json TEXT",
    "ALTER TABLE messages ADD COLUMN draft_mask TEXT",
    "CREATE INDEX messages_streaming ON messages(status) WHERE status = 'streaming'",
    """
    CREATE TABLE app_settings (
        key        TEXT PRIMARY KEY,
        value_json TEXT NOT NULL,
        updated_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE model_settings (
        model_key     TEXT PRIMARY KEY,
        settings_json TEXT NOT NULL,
        updated_at    REAL NOT NULL
    )
    """,
    """
    CREATE TABLE pair_presets (
        target_key    TEXT NOT NULL,
        draft_key     TEXT NOT NULL,
        settings_json TEXT NOT NULL,
        updated_at    REAL NOT NULL,
        PRIMARY KEY (target_key, draft_key)
    )
    """,
)

# Version 3: pinned conversations (listed first).
_V3: tuple[str, ...] = ("ALTER TABLE conversations ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0",)

#: Step ``i`` migrates version ``i`` to ``i + 1``. Append only; never edit a released step.
MIGRATIONS: list[Migration] = [_V1, _V2, _V3]
#: The schema version this code writes.
SCHEMA_VERSION = len(MIGRATIONS)


# ---------------------------------------------------------------------------------------------------------
# locations


def default_data_dir() -> Path:
    """``$TANDEM_DATA_DIR`` when set, else ``platformdirs.user_data_dir("tandem")``."""
    override = os.environ.get(DATA_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir("tandem"))


def default_db_path() -> Path:
    return default_data_dir() / DB_FILENAME


def default_history_dir() -> Path:
    """Where past chats are remembered for drafting (one file per tokenizer family): ``<data dir>/history``."""
    return default_data_dir() / "history"


# ---------------------------------------------------------------------------------------------------------
# transactions

_savepoints = itertools.count()


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in one write transaction (``BEGIN IMMEDIATE``), rolled back on any exception.

    Nested use inside an open transaction becomes a savepoint, so a failing inner block only
    undoes its own changes.
    """
    if conn.in_transaction:
        name = f"tandem_sp_{next(_savepoints)}"
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield conn
        except BaseException:
            conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")
            raise
        conn.execute(f"RELEASE {name}")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


# ---------------------------------------------------------------------------------------------------------
# opening


def open_database(path: Path | str | None = None, *, timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database; see the module docstring.

    ``path`` defaults to :func:`default_db_path`; ``":memory:"`` gives a private in-memory database.
    The returned connection belongs to the calling thread. Raises :class:`StoreError`
    (:class:`NewerSchemaError`, :class:`CorruptDatabaseError`).
    """
    memory = isinstance(path, str) and path == ":memory:"
    db_path = Path(":memory:") if memory else Path(path) if path is not None else default_db_path()
    migrations = list(MIGRATIONS)
    if not memory:
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder for the chat database {db_path}: {exc}", db_path
            ) from exc
        if db_path.is_dir():
            raise StoreError(f"cannot open the chat database {db_path}: it is a folder", db_path)
    try:
        conn = sqlite3.connect(
            ":memory:" if memory else str(db_path),
            timeout=timeout,
            isolation_level=None,
            check_same_thread=True,
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the chat database {db_path}: {exc}", db_path) from exc
    try:
        _prepare(conn, db_path, migrations, timeout)
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: Path, migrations: list[Migration], timeout: float) -> None:
    known = len(migrations)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        # The first read of the file: a damaged or foreign file shows up here, before anything is written.
        found = schema_version(conn)
        _check_identity(conn, path, found, known)
        conn.execute("PRAGMA journal_mode = WAL")  # stays "delete" where WAL is impossible (":memory:")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        if found < known:
            with transaction(conn):
                found = schema_version(conn)  # another process may have migrated meanwhile
                _check_identity(conn, path, found, known)
                for step in migrations[found:]:
                    if callable(step):
                        step(conn)
                    elif isinstance(step, str):
                        conn.execute(step)
                    else:
                        for statement in step:
                            conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {known}")
    except StoreError:
        raise
    except sqlite3.OperationalError as exc:
        # locked, read-only, disk full, a failing migration statement ...
        raise StoreError(f"cannot open the chat database {path}: {exc}", path) from exc
    except sqlite3.DatabaseError as exc:
        raise CorruptDatabaseError(
            f"the chat database {path} is damaged ({exc}); it was left in place", path
        ) from exc


def _check_identity(conn: sqlite3.Connection, path: Path, found: int, known: int) -> None:
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    if app_id not in (0, APPLICATION_ID):
        raise CorruptDatabaseError(
            f"{path} is a SQLite database of another program (application id {app_id:#x}), "
            "not a Tandem chat database; it was left in place",
            path,
        )
    if found > known:
        raise NewerSchemaError(
            f"this chat database was written by a newer Tandem (schema {found}, this version knows "
            f"{known}): {path}; update Tandem, or move the file aside to start an empty history",
            path,
            found,
            known,
        )
    if found == 0:
        tables = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        ).fetchone()[0]
        if tables:
            raise CorruptDatabaseError(
                f"{path} holds tables but no Tandem schema version; it is not a Tandem chat database "
                "and was left in place",
                path,
            )


# ---------------------------------------------------------------------------------------------------------
# moving a bad file aside

_SIDECARS = ("-wal", "-shm", "-journal")


def move_aside(path: Path | str) -> Path:
    """Rename ``path`` to ``<name>.corrupt-<YYYYmmdd-HHMMSS>`` next to it and return the new path.

    SQLite's side files (``-wal``, ``-shm``, ``-journal``) move with it under the matching name, so
    that a fresh database at ``path`` never picks up the old write-ahead log, and the moved copy can
    still be opened with its log. A numeric suffix keeps names unique. Close every connection
    to the file first. Raises :class:`StoreError` when the rename fails.
    """
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists() or any(Path(f"{target}{s}").exists() for s in _SIDECARS):
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        path.rename(target)
        for suffix in _SIDECARS:
            side = Path(f"{path}{suffix}")
            if side.exists():
                side.rename(Path(f"{target}{suffix}"))
    except OSError as exc:
        raise StoreError(f"cannot move {path} aside: {exc}", path) from exc
    return target


def database_file(conn: sqlite3.Connection) -> Path | None:
    """The file `conn` has open (None for an in-memory database): another thread opens it for itself."""
    row = conn.execute("PRAGMA database_list").fetchone()
    return Path(row[2]) if row and row[2] else None
