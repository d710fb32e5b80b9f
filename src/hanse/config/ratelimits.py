"""The `[rate_limits]` table: requests and tokens per minute per account, by default and per plan.

An account's own limits (`hanse accounts limits`, `PATCH /admin/accounts/{name}`) beat its plan's,
which beat the table's defaults. 0 means no limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# The billing plans (hanse.storage.accounts.PLANS): config is a leaf and does not import storage.
PlanName = Literal["energy_then_credits", "energy_only", "credits_only"]
PerMinute = Annotated[int, Field(ge=0, le=2**31 - 1)]


class PlanLimits(BaseModel):
    """One plan's limits; a key left out keeps the table's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: PerMinute | None = None
    tokens_per_minute: PerMinute | None = None


class RateLimitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: PerMinute = 0
    tokens_per_minute: PerMinute = 0
    # Requests of one account in progress at once, per process (0: no limit).
    max_in_flight: Annotated[int, Field(ge=0, le=100_000)] = 64
    plans: dict[PlanName, PlanLimits] = Field(default_factory=dict)

    def for_account(
        self, plan: str, requests_per_minute: int | None, tokens_per_minute: int | None
    ) -> AccountLimits:
        """The limits of an account on `plan` with its own (None: not set) values."""
        by_plan = next((v for k, v in self.plans.items() if k == plan), PlanLimits())
        return AccountLimits(
            requests_per_minute=_first(
                requests_per_minute, by_plan.requests_per_minute, self.requests_per_minute
            ),
            tokens_per_minute=_first(
                tokens_per_minute, by_plan.tokens_per_minute, self.tokens_per_minute
            ),
        )


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """What one account may use per minute; 0: no limit."""

    requests_per_minute: int
    tokens_per_minute: int

    @property
    def any(self) -> bool:
        return bool(self.requests_per_minute or self.tokens_per_minute)


def _first(*values: int | None) -> int:
    return next(v for v in values if v is not None)
