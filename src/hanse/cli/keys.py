"""`hanse keys ...`: create, list and revoke API keys."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hanse.auth import KNOWN_SCOPES
from hanse.cli.common import account_name, usage_of, with_engine
from hanse.settings import Settings
from hanse.storage.keys import KeyStore

T = TypeVar("T")


def register(commands: Any) -> None:
    keys = commands.add_parser("keys", help="manage API keys")
    keys.set_defaults(command=usage_of(keys))
    key_commands = keys.add_subparsers(title="key commands")
    create = key_commands.add_parser("create", help="create a key; prints only the key")
    create.add_argument("--account", default="default", type=account_name)
    create.add_argument("--scopes", default="*", help="comma-separated, e.g. inference.chat")
    create.set_defaults(command=_keys_create)
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(command=_keys_revoke)
    listing = key_commands.add_parser("list", help="list keys (never the secrets)")
    listing.set_defaults(command=_keys_list)


def _with_keys(action: Callable[[KeyStore], Awaitable[T]]) -> T:
    settings = Settings()
    return with_engine(settings, lambda engine: action(KeyStore(engine, settings.key_prefix)))


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
