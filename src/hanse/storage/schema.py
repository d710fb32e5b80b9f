"""The schema's version, kept by Alembic migrations (`hanse.storage.migrations`).

    empty    no table yet: `prepare` applies every migration (the first start of `hanse serve`)
    current  at the newest revision: nothing to do
    behind   an older revision, or tables made before migrations existed: refused until an
             operator runs `hanse db upgrade`
    ahead    migrated by a newer Hanse: refused

Concurrent migrators (several processes starting on one new database) are serialised: by an
advisory lock on PostgreSQL, by SQLite's write lock (`BEGIN IMMEDIATE`) on SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, inspect, text

from hanse.storage.database import Database

MIGRATIONS = Path(__file__).with_name("migrations")
# The revision matching what `metadata.create_all` made before migrations existed.
BASELINE = "0001"
_LOCK_KEY = 0x48414E5345  # "HANSE": the PostgreSQL advisory lock of migrators

Status = Literal["empty", "current", "behind", "ahead"]


@dataclass(frozen=True, slots=True)
class SchemaState:
    status: Status
    revision: str | None  # None: no version recorded (an empty or pre-migration database)
    head: str


class SchemaError(Exception):
    """The database's schema does not fit this version of Hanse; the message says what to run."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the migrations have one head"
    return head


def _state(conn: Connection) -> SchemaState:
    head = head_revision()
    revision = MigrationContext.configure(conn).get_current_revision()
    if revision is None:
        tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
        return SchemaState("behind" if tables else "empty", None, head)
    if revision == head:
        return SchemaState("current", revision, head)
    try:
        ScriptDirectory.from_config(_config()).get_revision(revision)
    except CommandError:  # a revision these migrations do not know: a newer Hanse made it
        return SchemaState("ahead", revision, head)
    return SchemaState("behind", revision, head)


def _upgrade(conn: Connection, revision: str, only_if_empty: bool) -> SchemaState:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    else:  # SQLite: take the write lock before reading the version, so migrators queue
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    state = _state(conn)
    if state.status == "ahead" or (only_if_empty and state.status != "empty"):
        return state
    config = _config()
    config.attributes["connection"] = conn
    if state.status == "behind" and state.revision is None:
        command.stamp(config, BASELINE)  # tables from before migrations: the baseline schema
    command.upgrade(config, revision)
    return _state(conn)


async def schema_state(database: Database) -> SchemaState:
    return await database.run_sync(_state)


async def upgrade(database: Database, revision: str = "head") -> SchemaState:
    """Apply the migrations up to `revision` (`hanse db upgrade`)."""
    return await database.run_sync(lambda conn: _upgrade(conn, revision, only_if_empty=False))


async def prepare(database: Database) -> SchemaState:
    """Create the schema of a new database; SchemaError when an existing one is not current."""
    state = await schema_state(database)
    if state.status == "empty":
        state = await database.run_sync(lambda conn: _upgrade(conn, "head", only_if_empty=True))
    if state.status == "behind":
        found = state.revision or "unversioned (made before migrations)"
        raise SchemaError(
            f"the database schema is out of date (revision {found}, this version needs "
            f"{state.head}): run `hanse db upgrade` with the same HANSE_DATABASE_URL, then start again"
        )
    if state.status == "ahead":
        raise SchemaError(
            f"the database schema (revision {state.revision}) is newer than this version of Hanse "
            f"knows (up to {state.head}): run the newer version"
        )
    return state
