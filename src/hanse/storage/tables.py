"""The database schema. Money columns are integers of pico-euros (see hanse.money)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("plan", String(32), nullable=False, server_default="energy_then_credits"),
    Column("energy_pico", BigInteger, nullable=False, server_default="0"),
    Column("credits_pico", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Rate limits of this account; NULL: its plan's (the `[rate_limits]` table), 0: none.
    Column("requests_per_minute", Integer, nullable=True),
    Column("tokens_per_minute", Integer, nullable=True),
    CheckConstraint("energy_pico >= 0", name="energy_not_negative"),
    CheckConstraint("credits_pico >= 0", name="credits_not_negative"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("hint", String(32), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# Money held for a request in flight; settled (deleted) exactly once, or released by the sweeper.
reservations = Table(
    "reservations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("balance", String(16), nullable=False),
    Column("amount_pico", BigInteger, nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("key_id", String(32), nullable=True),
    Column("model", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False, index=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", String(32), nullable=True),
    Column("model", String(256), nullable=False),
    Column("route", String(128), nullable=True),
    Column("status", String(16), nullable=False),
    Column("prompt_tokens", Integer, nullable=False, server_default="0"),
    Column("completion_tokens", Integer, nullable=False, server_default="0"),
    Column("cached_prompt_tokens", Integer, nullable=False, server_default="0"),
    # Where the token counts come from: "reported" by the provider, "counted" by the gateway with
    # the model's tokenizer, "estimated" (neither the provider nor a tokenizer counted them).
    Column("usage_source", String(16), nullable=False, server_default="reported"),
    Column("cost_pico", BigInteger, nullable=False, server_default="0"),
    # What the balance could not cover when the exact cost exceeded the hold (status `unpaid`).
    Column("unpaid_pico", BigInteger, nullable=False, server_default="0"),
    Column("paid_with", String(16), nullable=False),
    Column("energy_kwh", Float, nullable=False, server_default="0"),
    Column("carbon_g_co2", Float, nullable=False, server_default="0"),
    Column("water_liters", Float, nullable=False, server_default="0"),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Index("ledger_account_time", "account_id", "finished_at"),
)

# One vault per account: how its key-encryption key is derived from the vault key (never stored),
# and a verifier sealed under it that tells a wrong key from a right one. `generation` counts rotations.
vaults = Table(
    "vaults",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("kdf", String(16), nullable=False),
    Column("kdf_n", Integer, nullable=False),
    Column("kdf_r", Integer, nullable=False),
    Column("kdf_p", Integer, nullable=False),
    Column("salt", LargeBinary, nullable=False),
    Column("verifier", LargeBinary, nullable=False),
    Column("generation", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("rotated_at", DateTime(timezone=True), nullable=True),
)

# Blueprints and skills, each sealed whole (name included): nonce + AES-256-GCM ciphertext.
vault_items = Table(
    "vault_items",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("vault_items_account_kind", "account_id", "kind", "created_at"),
)

# Stored Responses API answers (`store: true`), per account: the Response object as answered, the
# input items it was given, and the whole conversation in chat form, which `previous_response_id`
# continues without the client sending it again.
responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("body", JSON, nullable=False),
    Column("input_items", JSON, nullable=False),
    Column("conversation", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("responses_account_time", "account_id", "created_at"),
)
