"""The schema under Alembic: migrations build exactly `tables.py`, on SQLite and PostgreSQL;
`hanse serve` and the CLI refuse a database whose schema is behind (or ahead) and say what to run."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from hanse.storage.database import Database
from hanse.storage.tables import metadata
from tests.harness import HANSE, GatewayProcess, create_postgres_database, free_port

HEAD = "0004"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return create_postgres_database()
    return f"sqlite:///{tmp_path / 'data' / 'hanse.db'}"


def hanse(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANSE_")}
    env.update(HANSE_DATABASE_URL=url, HANSE_DATA_DIR=str(tmp_path / "data"))
    return subprocess.run(
        [HANSE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def on_database(url: str, action: Callable[[Connection], Any]) -> Any:
    async def run() -> Any:
        database = Database(url)
        try:
            return await database.run_sync(action)
        finally:
            await database.dispose()

    return asyncio.run(run())


def serve_refusal(url: str, tmp_path: Path) -> str:
    """`hanse serve` on this database: it must stop at once; its complaint."""
    result = hanse(url, tmp_path, "serve", "--port", str(free_port()))
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_migrations_build_exactly_the_declared_schema(url: str, tmp_path: Path) -> None:
    assert hanse(url, tmp_path, "db", "status").returncode == 1  # empty: not current
    upgraded = hanse(url, tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"revision {HEAD} (current" in upgraded.stdout
    assert "password" not in upgraded.stderr

    def differences(conn: Connection) -> Any:
        return compare_metadata(MigrationContext.configure(conn), metadata)

    assert on_database(url, differences) == []

    def checks(conn: Connection) -> set[str]:
        return {c["name"] for c in inspect(conn).get_check_constraints("accounts")}

    assert on_database(url, checks) == {"energy_not_negative", "credits_not_negative"}
    assert hanse(url, tmp_path, "db", "status").returncode == 0


def test_serve_refuses_an_outdated_schema_until_upgraded(url: str, tmp_path: Path) -> None:
    assert hanse(url, tmp_path, "db", "upgrade", "--revision", "0001").returncode == 0
    assert hanse(url, tmp_path, "db", "status").returncode == 1
    complaint = serve_refusal(url, tmp_path)
    assert "revision 0001" in complaint and "run `hanse db upgrade`" in complaint
    keys = hanse(url, tmp_path, "keys", "create")
    assert keys.returncode == 2 and "hanse db upgrade" in keys.stderr

    assert hanse(url, tmp_path, "db", "upgrade").returncode == 0
    gateway = GatewayProcess(tmp_path, env={"HANSE_DATABASE_URL": url}).start()
    try:
        assert gateway.create_key(account="after-upgrade")
    finally:
        gateway.stop()


def test_a_database_from_before_migrations_is_adopted(url: str, tmp_path: Path) -> None:
    # What `metadata.create_all` made before migrations existed: the baseline, unversioned.
    assert hanse(url, tmp_path, "db", "upgrade", "--revision", "0001").returncode == 0
    on_database(url, lambda conn: conn.exec_driver_sql("DROP TABLE alembic_version"))
    on_database(
        url,
        lambda conn: conn.exec_driver_sql(
            "INSERT INTO accounts (name, plan, energy_pico, credits_pico, created_at) "
            "VALUES ('old', 'credits_only', 0, 42, CURRENT_TIMESTAMP)"
        ),
    )
    assert "unversioned" in serve_refusal(url, tmp_path)
    assert hanse(url, tmp_path, "db", "upgrade").returncode == 0
    shown = hanse(url, tmp_path, "accounts", "show", "old")
    assert shown.returncode == 0 and "requests/min the plan" in shown.stdout


def test_a_schema_newer_than_the_code_is_refused(url: str, tmp_path: Path) -> None:
    assert hanse(url, tmp_path, "db", "upgrade").returncode == 0
    on_database(
        url, lambda conn: conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    )
    assert "newer than this version" in serve_refusal(url, tmp_path)
    assert hanse(url, tmp_path, "db", "upgrade").returncode == 1


def test_concurrent_first_starts_migrate_once(url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANSE_")}
    env.update(HANSE_DATABASE_URL=url, HANSE_DATA_DIR=str(tmp_path / "data"))
    runs = [
        subprocess.Popen(
            [HANSE, "db", "upgrade"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr.decode()

    def versions(conn: Connection) -> list[Any]:
        return list(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())

    assert on_database(url, versions) == [HEAD]
