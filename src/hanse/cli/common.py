"""What the CLI commands share: running an action against the database, group usage."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from hanse.settings import Settings
from hanse.storage.database import create_schema, make_engine

T = TypeVar("T")


def with_engine(settings: Settings, action: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Open the database of `settings`, run `action`, close it."""

    async def run() -> T:
        engine = make_engine(settings.effective_database_url)
        try:
            await create_schema(engine)
            return await action(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def usage_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A command that prints `parser`'s help and fails (a group called without a subcommand)."""

    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show
