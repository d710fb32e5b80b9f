"""Group commit: the hot path's transactions (holds, settlements) share commits.

SQLite (`GroupCommit`): the transactions queued during one turn of the event loop share a commit.

Every metered request writes twice (the hold, then the settlement). Committed one by one, each
transaction rewrote the same few pages into the WAL (the account's row, the holds, the ledger's
last page): about 45 kB per request, 60 MB/s at full load, and a commit's cost grew with it. Here
each queued unit runs in a savepoint of its own inside one transaction, so a unit that fails rolls
back alone, and one commit then writes each page once for the whole group. Units run back to back,
synchronously, so the write lock is held only while they run. A caller's `await` returns once its
group is durable: nobody is answered before their ledger row is committed.

When another process holds the write lock (a second worker, the CLI), the group does not block
the event loop in SQLite's busy handler: it tries again every half millisecond, gathering the units
that arrive meanwhile, and fails them only after the busy timeout.

PostgreSQL (`PostgresGroupCommit`): one transaction at a time per process, holding every unit
queued while the one before it ran. One by one, each transaction held its account's row lock
across its remaining statements and its commit's WAL flush, so sixteen requests of one account
queued on that lock (530 req/s, p99 94 ms at 16 connections: docs/benchmarks.md); grouped, one
flush serves the group. Units run in their account order, so that two processes' groups lock rows
in the same order and cannot deadlock. A unit that raises rolls its group back, and the group's
units are then run again, each in a transaction of its own: only the failing one fails (a commit
that fails fails the whole group, which is not run again: its outcome is unknown).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")

Unit = Callable[[Connection], Any]
Queued = list[tuple[Unit, asyncio.Future[Any]]]

# How soon a group that found the write lock taken tries again.
LOCK_RETRY_S = 0.0005


class GroupCommit:
    """Runs queued units on one long-lived connection, one transaction per turn of the loop."""

    def __init__(self, engine: Engine, busy_timeout_s: float) -> None:
        self._engine = engine
        self._busy_timeout_s = busy_timeout_s
        self._connection: Connection | None = None
        self._queue: Queued = []
        self._locked_out_since: float | None = None

    async def run(self, unit: Callable[[Connection], T]) -> T:
        """`unit`'s result once the transaction it ran in has committed; its exception if it
        raised (its savepoint rolled back, the others unaffected) or if the commit failed."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        if not self._queue:
            loop.call_soon(self.flush)
        self._queue.append((unit, done))
        # Shielded: a cancelled caller must not stop the group; its unit commits with the others.
        return await asyncio.shield(done)

    def flush(self, wait: bool = False) -> None:
        """Run every queued unit and commit them together; with the write lock taken elsewhere,
        try again shortly (or, with `wait`, wait for it in SQLite's busy handler)."""
        if not self._queue:
            return
        try:
            begun = self._begin(wait)
        except Exception as exc:
            self._fail(exc)
            return
        if not begun:
            now = time.monotonic()
            self._locked_out_since = self._locked_out_since or now
            if now - self._locked_out_since < self._busy_timeout_s:
                asyncio.get_running_loop().call_later(LOCK_RETRY_S, self.flush)
            else:
                self._fail(sqlite3.OperationalError("database is locked"))
            return
        self._locked_out_since = None
        queue, self._queue = self._queue, []
        try:
            outcomes = self._run(queue)
        except Exception as exc:  # the commit failed: nothing of the group was written
            outcomes = [(None, exc)] * len(queue)
        for (_, done), (result, error) in zip(queue, outcomes, strict=True):
            if done.done():
                continue
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

    def close(self) -> None:
        self.flush(wait=True)
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _fail(self, error: Exception) -> None:
        queue, self._queue = self._queue, []
        self._locked_out_since = None
        for _, done in queue:
            if not done.done():
                done.set_exception(error)

    def _driver(self) -> sqlite3.Connection:
        fresh = self._connection is None
        if self._connection is None:
            self._connection = self._engine.connect()
        raw = self._connection.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        if fresh:
            # This connection never waits in the busy handler (see _begin): once it holds the
            # write lock, nothing it runs can be kept waiting for it.
            raw.execute("PRAGMA busy_timeout=0")
        return raw

    def _begin(self, wait: bool) -> bool:
        """BEGIN IMMEDIATE (the write lock); False if another connection holds it (or, with
        `wait`, waits for it in the busy handler). On the driver's connection: SQLAlchemy's
        autobegin emits nothing on SQLite, and its commit ends this."""
        raw = self._driver()
        if wait:
            raw.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")
            try:
                raw.execute("BEGIN IMMEDIATE")
            finally:
                raw.execute("PRAGMA busy_timeout=0")
            return True
        try:
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
            return False
        return True

    def _run(self, queue: Queued) -> list[tuple[Any, BaseException | None]]:
        """Each unit in a savepoint of the open transaction, then the commit."""
        conn = self._connection
        assert conn is not None
        raw = self._driver()
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            for unit, _ in queue:
                raw.execute("SAVEPOINT unit")
                try:
                    outcomes.append((unit(conn), None))
                except Exception as exc:
                    raw.execute("ROLLBACK TO unit")
                    outcomes.append((None, exc))
                raw.execute("RELEASE unit")
            conn.commit()  # SQLAlchemy's transaction, if a unit's statement began one
            if raw.in_transaction:  # no unit ran a statement through SQLAlchemy
                raw.commit()
        except BaseException:
            conn.rollback()
            if raw.in_transaction:
                raw.rollback()
            raise
        return outcomes


class _UnitFailed(Exception):
    """A unit of a group raised: the group rolls back and its units run again one by one."""


class PostgresGroupCommit:
    """Runs queued units in one transaction, one group at a time, in their units' key order."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queue: list[tuple[int, Unit, asyncio.Future[Any]]] = []
        self._running: asyncio.Task[None] | None = None

    async def run(self, unit: Callable[[Connection], T], key: int) -> T:
        """`unit`'s result once its transaction has committed, or its exception. `key` orders
        the units of a group (an account id: rows are locked in one order)."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((key, unit, done))
        if self._running is None:
            self._running = asyncio.ensure_future(self._drain())
        # Shielded: a cancelled caller must not stop the group; its unit commits with the others.
        return await asyncio.shield(done)

    async def close(self) -> None:
        """Once the group in flight (and those queued behind it) have committed."""
        if self._running is not None:
            await asyncio.shield(self._running)

    async def _drain(self) -> None:
        try:
            while self._queue:
                queue, self._queue = sorted(self._queue, key=lambda queued: queued[0]), []
                await self._group([(unit, done) for _, unit, done in queue])
        finally:
            self._running = None

    async def _group(self, queue: Queued) -> None:
        def units(conn: Connection) -> list[Any]:
            outcomes = []
            for unit, _ in queue:
                try:
                    outcomes.append(unit(conn))
                except Exception as exc:
                    raise _UnitFailed() from exc
            return outcomes

        try:
            async with self._engine.begin() as conn:
                results = await conn.run_sync(units)
        except _UnitFailed:
            for unit, done in queue:
                await self._alone(unit, done)
            return
        except Exception as exc:
            for _, done in queue:
                done.set_exception(exc)
            return
        for (_, done), result in zip(queue, results, strict=True):
            done.set_result(result)

    async def _alone(self, unit: Unit, done: asyncio.Future[Any]) -> None:
        try:
            async with self._engine.begin() as conn:
                result = await conn.run_sync(unit)
        except Exception as exc:
            done.set_exception(exc)
            return
        done.set_result(result)
