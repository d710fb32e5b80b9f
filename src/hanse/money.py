"""Money as exact integers of pico-euros (1e-12 EUR): exact in SQL on SQLite and PostgreSQL alike.

Catalog prices are EUR per million tokens with at most six decimals, so a token's price is a whole
number of pico-euros and every cost is exact. One energy unit is one euro of usage.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

PICO_PER_EUR = 10**12
PRICE_DECIMALS = 6
# An amount a person types: up to 12 decimals, below 9.2 million (a BigInteger of pico-euros).
AMOUNT_PATTERN = r"^\d{1,6}(\.\d{1,12})?$"


def to_pico(amount: Decimal) -> int:
    """An exact decimal amount of EUR (at most 12 decimals) as pico-euros."""
    pico = amount * PICO_PER_EUR
    if pico != pico.to_integral_value():
        raise ValueError(f"{amount} has more than 12 decimals")
    return int(pico)


def price_per_token_pico(eur_per_million: Decimal) -> int:
    """A catalog price (EUR per million tokens) as pico-euros per token, rounded up."""
    return int((eur_per_million * PICO_PER_EUR / 10**6).to_integral_value(ROUND_CEILING))


def format_eur(pico: int) -> str:
    """A decimal string without exponent or trailing zeros (`"0.0"` for nothing)."""
    if pico == 0:
        return "0.0"
    text = format((Decimal(pico) / PICO_PER_EUR).normalize(), "f")
    return text if "." in text else text + ".0"
