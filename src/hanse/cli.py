"""The `hanse` command: serve the gateway, manage API keys."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from hanse.auth import KNOWN_SCOPES
from hanse.config.loader import ConfigError, load_catalog
from hanse.settings import Settings
from hanse.storage.database import create_schema, make_engine
from hanse.storage.keys import KeyStore


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    return command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hanse", description=__doc__)
    parser.set_defaults(command=_usage(parser))
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--config", help="TOML catalog (default: $HANSE_CONFIG or the embedded model)"
    )
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(command=_serve)

    keys = commands.add_parser("keys", help="manage API keys")
    keys.set_defaults(command=_usage(keys))
    key_commands = keys.add_subparsers(title="key commands")
    create = key_commands.add_parser("create", help="create a key; prints only the key")
    create.add_argument("--account", default="default")
    create.add_argument("--scopes", default="*", help="comma-separated, e.g. inference.chat")
    create.set_defaults(command=_keys_create)
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(command=_keys_revoke)
    listing = key_commands.add_parser("list", help="list keys (never the secrets)")
    listing.set_defaults(command=_keys_list)
    return parser


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def _serve(args: argparse.Namespace) -> int:
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


def _with_keys(action: Callable[[KeyStore], Awaitable[Any]]) -> Any:
    settings = Settings()

    async def run() -> Any:
        engine = make_engine(settings.effective_database_url)
        try:
            await create_schema(engine)
            return await action(KeyStore(engine, settings.key_prefix))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _keys_create(args: argparse.Namespace) -> int:
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in KNOWN_SCOPES]
    if unknown:
        print(f"hanse: unknown scope(s): {', '.join(unknown)}", file=sys.stderr)
        print(f"known scopes: {', '.join(KNOWN_SCOPES)}", file=sys.stderr)
        return 2
    key_id, key = _with_keys(lambda store: store.create(args.account, scopes))
    print(f"created {key_id} for account {args.account!r}", file=sys.stderr)
    print(key)
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    if _with_keys(lambda store: store.revoke(args.key_id)):
        print(f"revoked {args.key_id}")
        return 0
    print(f"hanse: no live key with id {args.key_id}", file=sys.stderr)
    return 1


def _keys_list(args: argparse.Namespace) -> int:
    records = _with_keys(lambda store: store.list())
    print(f"{'id':<22} {'account':<16} {'key':<16} {'scopes':<24} {'created':<20} revoked")
    for r in records:
        revoked = r.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if r.revoked_at else "-"
        created = r.created_at.strftime("%Y-%m-%d %H:%M:%S")
        scopes = ",".join(r.scopes) or "*"
        print(f"{r.id:<22} {r.account:<16} {r.hint:<16} {scopes:<24} {created:<20} {revoked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
