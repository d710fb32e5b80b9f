"""PostgreSQL's group commit (storage/group_commit.py), on a real database: the units queued while
a group runs share the next transaction, in key order; a failing unit fails alone; two processes'
groups, locking the same rows, neither deadlock nor lose an update."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Connection, insert, select, text, update

from hanse.storage.database import Database
from tests.harness import create_postgres_database, drop_postgres_database
from tests.test_group_commit import counters, metadata

ROWS = 4


@pytest.fixture
def url() -> Iterator[str]:
    created = create_postgres_database("hanse_group")

    async def prepare() -> None:
        database = Database(created)
        try:
            await database.run_sync(metadata.create_all)
            rows = [{"id": row, "value": 0} for row in range(1, ROWS + 1)]
            await database.run_sync(lambda conn: conn.execute(insert(counters), rows))
        finally:
            await database.dispose()

    asyncio.run(prepare())
    yield created
    drop_postgres_database(created)


def _add_one(row: int) -> Callable[[Connection], int]:
    def unit(conn: Connection) -> int:
        conn.execute(
            update(counters).where(counters.c.id == row).values(value=counters.c.value + 1)
        )
        return int(conn.execute(select(counters.c.value).where(counters.c.id == row)).scalar_one())

    return unit


async def _values(database: Database) -> dict[int, int]:
    rows = await database.run_sync(lambda conn: conn.execute(select(counters)).all())
    return {row.id: row.value for row in rows}


def test_units_share_transactions_and_each_sees_the_ones_before(url: str) -> None:
    async def main() -> tuple[list[int], dict[int, int]]:
        database = Database(url)
        try:
            seen = await asyncio.gather(*(database.transact(_add_one(1), key=1) for _ in range(50)))
            return list(seen), await _values(database)
        finally:
            await database.dispose()

    seen, values = asyncio.run(main())
    assert sorted(seen) == list(range(1, 51))
    assert values[1] == 50


def test_queued_units_run_in_key_order_and_a_failing_one_fails_alone(url: str) -> None:
    order: list[int] = []

    def slow(conn: Connection) -> None:  # holds the group in flight while the others queue
        conn.execute(text("SELECT pg_sleep(0.2)"))

    def record(key: int) -> Callable[[Connection], int]:
        def unit(conn: Connection) -> int:
            order.append(key)
            if key == 3:
                raise ValueError("unit 3 fails")
            conn.execute(update(counters).where(counters.c.id == key).values(value=key * 10))
            return key

        return unit

    async def main() -> tuple[list[object], dict[int, int]]:
        database = Database(url)
        try:
            first = asyncio.ensure_future(database.transact(slow))
            await asyncio.sleep(0.05)
            queued = [database.transact(record(key), key=key) for key in (4, 3, 1, 2)]
            outcomes = await asyncio.gather(*queued, return_exceptions=True)
            await first
            return outcomes, await _values(database)
        finally:
            await database.dispose()

    outcomes, values = asyncio.run(main())
    # The group ran in key order, rolled back at unit 3, then each unit ran alone.
    assert order[:3] == [1, 2, 3] and sorted(order[3:]) == [1, 2, 3, 4]
    assert outcomes[0] == 4 and outcomes[2] == 1 and outcomes[3] == 2
    assert isinstance(outcomes[1], ValueError)
    assert values == {1: 10, 2: 20, 3: 0, 4: 40}


def test_two_processes_locking_the_same_rows_lose_nothing(url: str) -> None:
    async def main() -> tuple[list[object], dict[int, int]]:
        first, second = Database(url), Database(url)  # two engines: two processes' pools
        try:
            work = []
            for round_ in range(20):
                for row in range(1, ROWS + 1):
                    # Opposite arrival orders: unsorted, their groups would deadlock.
                    mirrored = ROWS + 1 - row
                    work.append(first.transact(_add_one(row), key=row))
                    work.append(second.transact(_add_one(mirrored), key=mirrored))
                if round_ % 5 == 0:
                    await asyncio.sleep(0)
            outcomes = await asyncio.gather(*work, return_exceptions=True)
            return outcomes, await _values(first)
        finally:
            await first.dispose()
            await second.dispose()

    outcomes, values = asyncio.run(main())
    assert [o for o in outcomes if isinstance(o, BaseException)] == []
    assert values == {row: 40 for row in range(1, ROWS + 1)}
