"""`hanse serve`: check the catalog and the schema, then run uvicorn (one worker, or several
behind one port: hanse.cli.workers)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from hanse.cli.common import open_database
from hanse.config.loader import ConfigError, load_catalog
from hanse.settings import Settings
from hanse.storage import schema


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--config", help="TOML catalog (default: $HANSE_CONFIG or the embedded model)"
    )
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from hanse.cli.workers import Supervisor, listening_sockets

    if args.config:
        os.environ["HANSE_CONFIG"] = args.config
    settings = Settings()
    try:
        load_catalog(settings.config)
    except ConfigError as exc:
        print(f"hanse: configuration error: {exc}", file=sys.stderr)
        return 2
    # Once, before any worker starts: a new database gets its schema, an outdated one stops here.
    try:
        asyncio.run(_prepare_schema(settings))
    except schema.SchemaError as exc:
        print(f"hanse: {exc}", file=sys.stderr)
        return 2
    except (SQLAlchemyError, OSError) as exc:
        print(f"hanse: cannot open the database: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    os.environ["HANSE_PUBLIC_URL"] = f"http://{args.host}:{args.port}"
    config = uvicorn.Config(
        "hanse.http.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        loop="uvloop",
        # httptools, with bounded header size and read times (hanse.http.protocol).
        http="hanse.http.protocol:BoundedHttpToolsProtocol",
        access_log=False,
        limit_concurrency=settings.max_connections,
        log_level="warning",
        # SIGTERM: stop accepting, let requests and streams in flight finish, then cut them.
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    if args.workers <= 1:
        uvicorn.Server(config).run()
        return 0
    try:
        sockets = listening_sockets(args.host, args.port, args.workers)
    except OSError as exc:
        print(f"hanse: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return Supervisor(config, sockets).run()


async def _prepare_schema(settings: Settings) -> None:
    database = open_database(settings)
    try:
        await schema.prepare(database)
    finally:
        await database.dispose()
