"""API keys: generation, hashing, reading them off a request, and scope matching."""

from __future__ import annotations

import hashlib
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hanse.errors import AUTH_MISSING_KEY, AUTH_SCOPE, HanseError

KEY_BODY_LENGTH = 128
_URL_SAFE = string.ascii_letters + string.digits + "-_"
SCOPE_CHAT = "inference.chat"
SCOPE_MODELS = "inference.models"
SCOPE_VAULT_READ = "vault.read"
SCOPE_VAULT_WRITE = "vault.write"
KNOWN_SCOPES = (
    "*",
    "inference.*",
    "inference.chat",
    "inference.embeddings",
    "inference.images",
    "inference.audio",
    "inference.rerank",
    "inference.models",
    "vault.*",
    "vault.read",
    "vault.write",
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, its account and its scopes."""

    key_id: str
    account_id: int
    account_name: str
    scopes: tuple[str, ...]
    plan: str = "energy_then_credits"
    # The account's own rate limits (None: its plan's).
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


def generate_key(prefix: str) -> str:
    """A new secret key: the prefix and 128 random URL-safe characters."""
    return prefix + "".join(secrets.choice(_URL_SAFE) for _ in range(KEY_BODY_LENGTH))


def hash_key(key: str) -> str:
    """The stored form of a key. Keys carry 768 bits of entropy, so a fast hash is safe here."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_hint(key: str, prefix: str) -> str:
    """What a listing may show of a key: its prefix and last four characters."""
    return f"{prefix}...{key[-4:]}"


def key_from_headers(headers: Mapping[str, str]) -> str:
    """The key from `Authorization: Bearer` or `x-api-key`, or AUTH_1007."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = headers.get("x-api-key")
    if api_key and api_key.strip():
        return api_key.strip()
    raise HanseError(
        AUTH_MISSING_KEY, "No API key: send `Authorization: Bearer <key>` or `x-api-key`."
    )


def scope_allows(scopes: Sequence[str], required: str) -> bool:
    """`*` allows all, `family.*` any scope of that family, else an exact match; no scopes, nothing."""
    family = required.split(".", 1)[0]
    return any(s == "*" or s == required or s == f"{family}.*" for s in scopes)


def require_scope(principal: Principal, required: str) -> None:
    if not scope_allows(principal.scopes, required):
        raise HanseError(
            AUTH_SCOPE,
            f"This key lacks the `{required}` scope.",
            details={"required_scope": required},
        )
