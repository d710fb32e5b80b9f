"""`hanse serve`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from hanse.config.loader import ConfigError, load_catalog
from hanse.settings import Settings


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

    if args.config:
        os.environ["HANSE_CONFIG"] = args.config
    settings = Settings()
    try:
        load_catalog(settings.config)
    except ConfigError as exc:
        print(f"hanse: configuration error: {exc}", file=sys.stderr)
        return 2
    os.environ["HANSE_PUBLIC_URL"] = f"http://{args.host}:{args.port}"
    uvicorn.run(
        "hanse.http.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    return 0
