"""What the CLI commands share: running an action against the database, group usage."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from hanse.settings import Settings
from hanse.storage.database import Database

T = TypeVar("T")


def with_engine(settings: Settings, action: Callable[[Database], Awaitable[T]]) -> T:
    """Open the database of `settings`, run `action`, close it."""

    async def run() -> T:
        database = Database(settings.effective_database_url)
        try:
            await database.create_schema()
            return await action(database)
        finally:
            await database.dispose()

    return asyncio.run(run())


def usage_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A command that prints `parser`'s help and fails (a group called without a subcommand)."""

    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show
