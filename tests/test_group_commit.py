"""SQLite's group commit and background checkpoints, on a real database file.

The gateway-level proofs (exact balances under concurrency, one settlement per hold) are in
test_billing_race.py and test_metering.py; these pin the storage layer's own promises.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, Table, insert, select, update

from hanse.storage.checkpoints import RESTART_FRAMES, WalCheckpointer
from hanse.storage.database import Database

metadata = MetaData()
counters = Table(
    "counters",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("value", Integer, nullable=False),
)


async def _database(path: Path) -> Database:
    database = Database(f"sqlite:///{path}", autocheckpoint=False)
    await database.run_sync(metadata.create_all)
    await database.run_sync(lambda conn: conn.execute(insert(counters), {"id": 1, "value": 0}))
    return database


def _committed(path: Path, query: str) -> list[tuple[int, ...]]:
    """What another connection (another process, for SQLite) sees: committed data only."""
    with sqlite3.connect(path) as other:
        return other.execute(query).fetchall()


def test_concurrent_units_share_a_commit_and_each_sees_the_ones_before(tmp_path: Path) -> None:
    async def main() -> list[int]:
        database = await _database(tmp_path / "a.db")

        def add_one(conn: Connection) -> int:
            conn.execute(update(counters).values(value=counters.c.value + 1))
            return int(conn.execute(select(counters.c.value)).scalar_one())

        try:
            return list(await asyncio.gather(*(database.transact(add_one) for _ in range(50))))
        finally:
            await database.dispose()

    seen = asyncio.run(main())
    assert sorted(seen) == list(range(1, 51))  # serial: each unit saw every earlier one
    assert _committed(tmp_path / "a.db", "SELECT value FROM counters") == [(50,)]


def test_a_failing_unit_rolls_back_alone(tmp_path: Path) -> None:
    class Refused(Exception):
        pass

    async def main() -> list[int | BaseException]:
        database = await _database(tmp_path / "b.db")

        def add(amount: int, fail: bool) -> int:
            def unit(conn: Connection) -> int:
                conn.execute(update(counters).values(value=counters.c.value + amount))
                if fail:
                    raise Refused  # after its write: the savepoint must undo it
                return amount

            return unit  # type: ignore[return-value]

        try:
            return list(
                await asyncio.gather(
                    database.transact(add(1, False)),  # type: ignore[arg-type]
                    database.transact(add(100, True)),  # type: ignore[arg-type]
                    database.transact(add(10, False)),  # type: ignore[arg-type]
                    return_exceptions=True,
                )
            )
        finally:
            await database.dispose()

    first, failed, third = asyncio.run(main())
    assert (first, third) == (1, 10)
    assert isinstance(failed, Refused)
    assert _committed(tmp_path / "b.db", "SELECT value FROM counters") == [(11,)]


def test_a_unit_is_durable_when_its_await_returns(tmp_path: Path) -> None:
    async def main() -> None:
        database = await _database(tmp_path / "c.db")
        try:
            await database.transact(lambda conn: conn.execute(update(counters).values(value=7)))
            # No further turn of the loop: the commit happened before the await returned.
            assert _committed(tmp_path / "c.db", "SELECT value FROM counters") == [(7,)]
        finally:
            await database.dispose()

    asyncio.run(main())


def test_a_write_lock_held_elsewhere_does_not_block_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "e.db"

    async def main() -> tuple[int, int]:
        database = await _database(path)
        other = sqlite3.connect(path, isolation_level=None)  # another process's write, say
        other.execute("BEGIN IMMEDIATE")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticking = asyncio.create_task(ticker())
        asyncio.get_running_loop().call_later(0.2, other.execute, "COMMIT")
        try:
            value = await database.transact(
                lambda conn: conn.execute(update(counters).values(value=5)).rowcount
            )
        finally:
            ticking.cancel()
            other.close()
            await database.dispose()
        return value, ticks

    rowcount, ticks = asyncio.run(main())
    assert rowcount == 1
    assert ticks > 50  # the loop went on for the 0.2 s the lock was held elsewhere
    assert _committed(path, "SELECT value FROM counters") == [(5,)]


def test_units_without_statements_leave_no_transaction_open(tmp_path: Path) -> None:
    async def main() -> int:
        database = await _database(tmp_path / "f.db")
        try:
            assert await database.transact(lambda conn: 42) == 42
            return await database.transact(
                lambda conn: conn.execute(update(counters).values(value=3)).rowcount
            )
        finally:
            await database.dispose()

    assert asyncio.run(main()) == 1
    assert _committed(tmp_path / "f.db", "SELECT value FROM counters") == [(3,)]


@pytest.mark.timeout(60)
def test_the_checkpointer_moves_the_wal_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # as the gateway's connections are
    writer.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
    rows = RESTART_FRAMES // 8 + 10
    for _ in range(rows):
        writer.execute("INSERT INTO blobs (data) VALUES (randomblob(30000))")
    assert path.stat().st_size < 100_000  # everything is still in the WAL
    checkpointer = WalCheckpointer(str(path), interval_s=0.05)
    checkpointer.start()
    try:
        deadline = time.monotonic() + 30
        while path.stat().st_size < rows * 30_000:
            assert time.monotonic() < deadline, "nothing was checkpointed"
            time.sleep(0.05)
        assert writer.execute("SELECT count(*) FROM blobs").fetchone() == (rows,)
    finally:
        checkpointer.close()
        writer.close()
