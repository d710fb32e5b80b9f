"""Test harness: a real `hanse serve` process on loopback, and the official schemas to check answers."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from PIL import Image
from sqlalchemy import text

from hanse.storage.database import Database

ROOT = Path(__file__).resolve().parent.parent
HANSE = str(Path(sys.executable).parent / "hanse")
# CI's second lane: `HANSE_TEST_DATABASE=postgresql` gives every gateway a fresh PostgreSQL database
# and `HANSE_TEST_REDIS=1` its own Redis prefix, unless a test chose its own.
TEST_DATABASE = os.environ.get("HANSE_TEST_DATABASE", "sqlite")
TEST_REDIS = os.environ.get("HANSE_TEST_REDIS", "") not in ("", "0")
REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_TEST_PREFIX = "hanse-test-"
_OWN = ("HANSE_CONFIG", "HANSE_DATABASE_URL", "HANSE_REDIS_URL", "HANSE_REDIS_PREFIX")
created_databases: list[str] = []
_SCHEMAS = json.loads((Path(__file__).parent / "data" / "openai-chat-schemas.json").read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatewayProcess:
    """`hanse serve` in a subprocess with its own data directory (SQLite) and optional config."""

    def __init__(self, workdir: Path, config: str | None = None, env: dict[str, str] | None = None):
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        inherited = {k: v for k, v in os.environ.items() if k not in _OWN}
        self.env = {**inherited, "HANSE_DATA_DIR": str(workdir / "data"), **(env or {})}
        if TEST_DATABASE == "postgresql" and "HANSE_DATABASE_URL" not in self.env:
            self.env["HANSE_DATABASE_URL"] = create_postgres_database()
        if TEST_REDIS and "HANSE_REDIS_URL" not in self.env:
            self.env["HANSE_REDIS_URL"] = REDIS_URL
            self.env["HANSE_REDIS_PREFIX"] = redis_prefix()
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = workdir / "hanse.toml"
            self.config_path.write_text(config)
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90, workers: int = 1) -> GatewayProcess:
        args = [HANSE, "serve", "--port", str(self.port), "--workers", str(workers)]
        if self.config_path:
            args += ["--config", str(self.config_path)]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hanse serve exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"hanse serve did not become ready:\n{self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=15)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `hanse ...` against this gateway's database."""
        return subprocess.run(
            [HANSE, *args], env=self.env, capture_output=True, text=True, timeout=60, check=False
        )

    def create_key(self, account: str = "tests", scopes: str = "*") -> str:
        result = self.cli("keys", "create", "--account", account, "--scopes", scopes)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def database_url(self) -> str:
        return (
            self.env.get("HANSE_DATABASE_URL") or f"sqlite:///{self.workdir / 'data' / 'hanse.db'}"
        )

    def last_cost_pico(self) -> int:
        """What the ledger's newest row charged, in pico-euros."""
        [row] = self.sql("SELECT cost_pico FROM ledger ORDER BY id DESC LIMIT 1")
        return int(row["cost_pico"])

    def sql(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        """One SQL statement on this gateway's database, SQLite or PostgreSQL: its rows, if any."""

        async def run() -> list[dict[str, Any]]:
            database = Database(self.database_url)
            try:
                async with database.begin() as conn:
                    result = await conn.execute(text(statement).bindparams(**params))
                    return [dict(row._mapping) for row in result] if result.returns_rows else []
            finally:
                await database.dispose()

        return asyncio.run(run())

    def stored(self) -> list[tuple[str, bytes]]:
        """Everything the database holds, to search for secrets: SQLite's files (the WAL too), or
        every row of every PostgreSQL table."""
        if self.database_url.startswith("sqlite"):
            files = sorted((self.workdir / "data").glob("hanse.db*"))
            return [(file.name, file.read_bytes()) for file in files]
        query = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        tables = [row["tablename"] for row in self.sql(query)]
        return [(table, repr(self.sql(f'SELECT * FROM "{table}"')).encode()) for table in tables]


def billed_pico(fields: dict[str, Any]) -> int:
    """An answer's (or final event's) `billing_cost`, in pico-euros, to compare with the ledger."""
    cost = fields["billing_cost"]
    return int((Decimal(cost["energy"]) + Decimal(cost["credits"])).scaleb(12))


def png_base64() -> str:
    """A 4x4 PNG, base64: an image input any vision route accepts."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({**_SCHEMAS, "$ref": f"#/components/schemas/{name}"})


_VALIDATORS = {
    name: _validator(name)
    for name in (
        "CreateChatCompletionResponse",
        "CreateChatCompletionStreamResponse",
        "ErrorResponse",
        "ListModelsResponse",
        "Model",
        "CreateChatCompletionRequest",
    )
}


def assert_schema(name: str, instance: Any) -> None:
    """Fail with every violation of the official OpenAI schema `name`."""
    errors = sorted(_VALIDATORS[name].iter_errors(instance), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def sse_events(raw: str) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded (`[DONE]` kept as the string)."""
    events: list[Any] = []
    for block in raw.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def create_postgres_database(prefix: str = "hanse_test") -> str:
    """A fresh database on the local PostgreSQL server (127.0.0.1:5432, trust auth): its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    asyncio.run(_postgres(f'CREATE DATABASE "{name}"'))
    created_databases.append(name)
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def drop_postgres_database(url: str) -> None:
    """Drop a database `create_postgres_database` made, cutting its connections."""
    name = url.rsplit("/", 1)[-1]
    asyncio.run(_postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def drop_postgres_databases() -> None:
    """Drop the databases this test run created."""
    while created_databases:
        drop_postgres_database(created_databases.pop())


async def _postgres(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres")
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def redis_prefix() -> str:
    """A Redis key prefix of its own, so gateways of different tests share nothing by accident."""
    return f"{REDIS_TEST_PREFIX}{secrets.token_hex(4)}:"


def clear_redis_test_keys() -> None:
    """Delete every key test gateways left in Redis (most expire on their own anyway)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        keys = list(client.scan_iter(match=f"{REDIS_TEST_PREFIX}*", count=1000))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass  # no Redis here: nothing to clear
    finally:
        client.close()
