"""`hanse db ...`: the schema's revision, and the migrations that bring it up to date."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import make_url

from hanse.cli.common import open_database, usage_of
from hanse.settings import Settings
from hanse.storage import schema
from hanse.storage.database import Database


def register(commands: Any) -> None:
    db = commands.add_parser("db", help="the database schema (migrations)")
    db.set_defaults(command=usage_of(db))
    sub = db.add_subparsers(title="database commands")
    upgrade = sub.add_parser("upgrade", help="apply the migrations (up to the newest by default)")
    upgrade.add_argument("--revision", default="head", help="a revision id, or head")
    upgrade.set_defaults(command=_upgrade)
    status = sub.add_parser("status", help="the schema's revision; exits 1 unless it is current")
    status.set_defaults(command=_status)


def _upgrade(args: argparse.Namespace) -> int:
    state = _run(lambda database: schema.upgrade(database, args.revision))
    _print(state)
    return 0 if state.status in ("current", "behind") else 1


def _status(args: argparse.Namespace) -> int:
    state = _run(schema.schema_state)
    _print(state)
    return 0 if state.status == "current" else 1


def _run(action: Callable[[Database], Awaitable[schema.SchemaState]]) -> schema.SchemaState:
    settings = Settings()

    async def run() -> schema.SchemaState:
        database = open_database(settings)
        try:
            return await action(database)
        finally:
            await database.dispose()

    print(f"database {_shown(settings.effective_database_url)}", file=sys.stderr)
    return asyncio.run(run())


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _print(state: schema.SchemaState) -> None:
    print(f"revision {state.revision or '-'} ({state.status}; the newest is {state.head})")
