"""What the CLI commands share: opening the database, running an action against it, group usage."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from hanse.settings import Settings
from hanse.storage import schema
from hanse.storage.accounts import ACCOUNT_NAME_PATTERN
from hanse.storage.database import Database

T = TypeVar("T")


def account_name(value: str) -> str:
    """An argparse type: a name new accounts may take (printable, at most 128 characters)."""
    if len(value) > 128 or not re.match(ACCOUNT_NAME_PATTERN, value):
        raise argparse.ArgumentTypeError(
            "an account name is 1-128 printable characters, without spaces at either end"
        )
    return value


def open_database(settings: Settings) -> Database:
    return Database(
        settings.effective_database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
    )


def with_engine(settings: Settings, action: Callable[[Database], Awaitable[T]]) -> T:
    """Open the database of `settings` (a new one gets its schema), run `action`, close it.
    Exits with status 2 when the schema is not current."""

    async def run() -> T:
        database = open_database(settings)
        try:
            await schema.prepare(database)
            return await action(database)
        finally:
            await database.dispose()

    try:
        return asyncio.run(run())
    except schema.SchemaError as exc:
        print(f"hanse: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def usage_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A command that prints `parser`'s help and fails (a group called without a subcommand)."""

    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show
