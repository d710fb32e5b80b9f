"""The `hanse` command: serve the gateway, manage keys and accounts, read usage, migrate."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from hanse.cli import accounts, db, keys, serve
from hanse.cli.common import usage_of


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hanse", description=__doc__)
    parser.set_defaults(command=usage_of(parser))
    commands = parser.add_subparsers(title="commands")
    serve.register(commands)
    keys.register(commands)
    accounts.register(commands)
    db.register(commands)
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
