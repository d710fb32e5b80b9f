"""The long-lived parts of a running gateway, started and stopped together."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from hanse.billing import Billing
from hanse.config.schema import Catalog
from hanse.metering import Metering
from hanse.metrics import Metrics
from hanse.providers.registry import build_providers
from hanse.ratelimits import RateLimiter
from hanse.ratelimits.in_flight import InFlight
from hanse.redislink import RedisLink
from hanse.routing import Router
from hanse.routing.health import BreakerSettings, InMemoryHealth
from hanse.routing.shared_health import RedisHealth
from hanse.settings import Settings
from hanse.storage import schema
from hanse.storage.accounts import AccountStore
from hanse.storage.checkpoints import WalCheckpointer
from hanse.storage.database import Database
from hanse.storage.keys import KeyStore
from hanse.storage.ledger import LedgerStore
from hanse.storage.responses import ResponseStore
from hanse.storage.vault import VaultStore
from hanse.vault.service import Vault
from hanse.vision.content import ImageInputs

log = logging.getLogger("hanse.gateway")

# At shutdown, how long requests cut by the drain may take to settle their holds.
SETTLE_ON_CLOSE_S = 10.0
# How long `/ready` waits for the database before calling it unreachable.
READY_TIMEOUT_S = 2.0


class Gateway:
    """Settings, catalog, database, keys, providers and the router over them."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.database = Database(
            settings.effective_database_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            autocheckpoint=False,
        )
        path = self.database.sqlite_path
        self._checkpointer = WalCheckpointer(path) if path else None
        self.keys = KeyStore(self.database, settings.key_prefix, settings.key_cache_ttl_s)
        self.accounts = AccountStore(self.database)
        self.ledger = LedgerStore(self.database)
        self.responses = ResponseStore(self.database)
        self.billing = Billing(self.ledger, self.accounts, settings.reservation_ttl_s)
        self.vault = Vault(
            VaultStore(self.database), settings.vault_scrypt_n, settings.vault_key_attempts
        )
        self._sweeper: asyncio.Task[None] | None = None
        self.started = False  # providers started (the embedded model loaded): `/ready`
        self.providers = build_providers(catalog)
        # Redis, when set, shares rate limits and route health between processes.
        self.redis = _redis_link(settings)
        self.rate_limits = RateLimiter(
            catalog.rate_limits, self.redis, settings.rate_limit_fallback
        )
        breakers = BreakerSettings.from_config(catalog.routing)
        health = RedisHealth(self.redis, breakers) if self.redis else InMemoryHealth(breakers)
        self.metrics = Metrics()
        self.router = Router(catalog, self.providers, health, self.metrics)
        self.in_flight = InFlight(catalog.rate_limits.max_in_flight)
        self.metering = Metering(self.billing, catalog, self.metrics, self.rate_limits)
        self.images = ImageInputs(catalog.limits, catalog.images)

    async def start(self) -> None:
        for model in self.catalog.models:
            if model.parameters_billion is None and any(
                route.energy_kwh_per_token is None for route in model.routes
            ):
                log.warning(
                    "model %s has neither parameters_billion nor energy_kwh_per_token on every "
                    "route: its environment_impact reports 0 kWh there",
                    model.id,
                )
        await schema.prepare(self.database)  # a new database gets its schema; an old one is refused
        if self._checkpointer is not None:
            self._checkpointer.start()
        await asyncio.gather(*(provider.start() for provider in self.providers.values()))
        self._sweeper = asyncio.create_task(
            self.billing.run_sweeper(self.settings.sweep_interval_s)
        )
        self.started = True

    async def readiness(self) -> dict[str, str]:
        """What `/ready` reports: `ok` or why not, per dependency."""
        checks = {"providers": "ok" if self.started else "starting"}
        try:
            async with asyncio.timeout(READY_TIMEOUT_S), self.database.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except (TimeoutError, SQLAlchemyError, OSError) as exc:
            checks["database"] = f"unreachable ({type(exc).__name__})"
        if self.redis is not None:  # its own socket timeouts bound the wait
            checks["redis"] = "ok" if await self.redis.ping() else "unreachable"
        return checks

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        # Requests the drain timeout cut are settling their holds: let them reach the database.
        if not await self.billing.settled(SETTLE_ON_CLOSE_S):
            log.warning("closing with unsettled holds: the sweeper releases them once expired")
        await asyncio.gather(*(provider.close() for provider in self.providers.values()))
        if self.redis is not None:
            await self.redis.close()
        await self.database.dispose()
        if self._checkpointer is not None:
            self._checkpointer.close()


def _redis_link(settings: Settings) -> RedisLink | None:
    if not settings.redis_url:
        return None
    limits = {"open": "per process", "closed": "refused (SYSTEM_9003)"}
    note = (
        f"rate limits {limits[settings.rate_limit_fallback]} and route health per process "
        f"until it answers again"
    )
    return RedisLink(settings.redis_url, settings.redis_prefix, settings.redis_timeout_s, note)
