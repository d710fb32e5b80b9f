"""The long-lived parts of a running gateway, started and stopped together."""

from __future__ import annotations

import asyncio
import logging

from hanse.billing import Billing
from hanse.config.schema import Catalog
from hanse.metering import Metering
from hanse.metrics import Metrics
from hanse.providers.registry import build_providers
from hanse.routing import Router
from hanse.settings import Settings
from hanse.storage.accounts import AccountStore
from hanse.storage.database import Database
from hanse.storage.keys import KeyStore
from hanse.storage.ledger import LedgerStore
from hanse.storage.vault import VaultStore
from hanse.vault.service import Vault
from hanse.vision.content import ImageInputs

log = logging.getLogger("hanse.gateway")


class Gateway:
    """Settings, catalog, database, keys, providers and the router over them."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.database = Database(settings.effective_database_url)
        self.keys = KeyStore(self.database, settings.key_prefix, settings.key_cache_ttl_s)
        self.accounts = AccountStore(self.database)
        self.ledger = LedgerStore(self.database)
        self.billing = Billing(self.ledger, self.accounts, settings.reservation_ttl_s)
        self.vault = Vault(VaultStore(self.database), settings.vault_scrypt_n)
        self._sweeper: asyncio.Task[None] | None = None
        self.providers = build_providers(catalog)
        self.router = Router(catalog, self.providers)
        self.metrics = Metrics()
        self.metering = Metering(self.billing, catalog, self.metrics)
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
        await self.database.create_schema()
        await asyncio.gather(*(provider.start() for provider in self.providers.values()))
        self._sweeper = asyncio.create_task(
            self.billing.run_sweeper(self.settings.sweep_interval_s)
        )

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.gather(*(provider.close() for provider in self.providers.values()))
        await self.database.dispose()
