"""The database: SQLite (the embedded default) run inline, or PostgreSQL through asyncpg.

Stores use one interface, `Database.begin()` / `Database.connect()`, yielding a connection whose
`execute` is awaited. On PostgreSQL that is SQLAlchemy's async connection. On SQLite it is a
synchronous connection called on the event loop itself: a statement on a local file in WAL mode
takes tens of microseconds, less than one hop to a driver thread, so the gateway spends about a
quarter of the time per request it would with aiosqlite (docs/benchmarks.md). The price: such a
write waits while another process writes (the CLI, a second worker), blocking the loop meanwhile,
which is why several gateway processes belong on PostgreSQL.

The hot path's holds and settlements use `Database.transact(unit)` instead: their commits are
shared (storage/group_commit.py), and on SQLite they wait for another process's write without
blocking the loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import CursorResult, Engine, Executable, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hanse.storage.group_commit import GroupCommit, PostgresGroupCommit

T = TypeVar("T")

# How long a write waits for another process's write on SQLite before failing.
SQLITE_BUSY_TIMEOUT_MS = 5000


class Connection(Protocol):
    """What stores need of a connection."""

    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | None = None, /
    ) -> CursorResult[Any]: ...


class _Inline:
    """A synchronous SQLAlchemy connection behind the awaitable `execute` stores use."""

    def __init__(self, conn: SyncConnection) -> None:
        self._conn = conn

    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | None = None, /
    ) -> CursorResult[Any]:
        return self._conn.execute(statement, parameters)


class Database:
    """Transactions (`begin`, `transact`) and reads (`connect`) on SQLite or PostgreSQL."""

    def __init__(
        self, url: str, pool_size: int = 10, max_overflow: int = 20, autocheckpoint: bool = True
    ) -> None:
        """`autocheckpoint=False`: SQLite commits never checkpoint the WAL themselves; whoever says
        so runs a `WalCheckpointer` (the gateway does)."""
        self.url = url
        self.sqlite_path: str | None = None  # the file, on SQLite
        self._sync: Engine | None = None
        self._async: AsyncEngine | None = None
        self._group: GroupCommit | None = None
        self._postgres_group: PostgresGroupCommit | None = None
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.sqlite_path = path
            self._sync = create_engine(
                url.replace("+aiosqlite", ""),
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            )
            pragmas = _SQLITE_PRAGMAS + (() if autocheckpoint else ("wal_autocheckpoint=0",))
            event.listen(self._sync, "connect", partial(_set_pragmas, pragmas))
            self._group = GroupCommit(self._sync, SQLITE_BUSY_TIMEOUT_MS / 1000)
        else:
            self._async = create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow)
            self._postgres_group = PostgresGroupCommit(self._async)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[Connection]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        if self._sync is not None:
            with self._sync.begin() as conn:
                yield _Inline(conn)
        else:
            assert self._async is not None
            async with self._async.begin() as conn:
                yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        """A connection for reads."""
        if self._sync is not None:
            with self._sync.connect() as conn:
                yield _Inline(conn)
        else:
            assert self._async is not None
            async with self._async.connect() as conn:
                yield conn

    async def transact(self, unit: Callable[[SyncConnection], T], key: int = 0) -> T:
        """`unit` in a transaction, for the hot path, sharing its commit with others
        (storage/group_commit.py): on SQLite the units of one turn of the event loop, each in a
        savepoint of its own; on PostgreSQL those queued while the group before ran, run in `key`
        order (the account whose row the unit locks)."""
        if self._group is not None:
            return await self._group.run(unit)
        assert self._postgres_group is not None
        return await self._postgres_group.run(unit, key)

    async def run_sync(self, fn: Callable[[SyncConnection], T]) -> T:
        """`fn` on a synchronous connection, in one transaction (schema checks, migrations)."""
        if self._sync is not None:
            with self._sync.begin() as conn:
                return fn(conn)
        assert self._async is not None
        async with self._async.begin() as conn:
            return await conn.run_sync(fn)

    async def dispose(self) -> None:
        if self._sync is not None:
            assert self._group is not None
            self._group.close()
            self._sync.dispose()
        else:
            assert self._async is not None and self._postgres_group is not None
            await self._postgres_group.close()
            await self._async.dispose()


# WAL + NORMAL: a commit survives a process crash; only a power cut may lose the last ones.
_SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON")


def _set_pragmas(pragmas: tuple[str, ...], dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in pragmas:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()
