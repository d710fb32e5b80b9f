"""Personal data found by patterns, then validated where a checksum exists.

    email        local@domain.tld (ASCII; no quoted local parts, no IP-address domains)
    phone        international (+49 30 1234567, 0049...), national with a leading 0 (030 1234567),
                 North American ((555) 123-4567); 7 to 15 digits in all
    iban         two letters, two check digits, 11 to 30 letters/digits (groups of four may be
                 spaced); the ISO 7064 mod-97 checksum must hold
    credit_card  13 to 19 digits (spaces or dashes between), first digit 2-6, Luhn checksum

Limits: patterns, not understanding. Numbers written out in words, obfuscated addresses ("bob at
example dot com") or phone numbers in other layouts are not found; a long digit run that happens to
pass a checksum is redacted although it is no card.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Literal

from hanse.blueprints import patterns

PiiKind = Literal["email", "phone", "iban", "credit_card"]
PLACEHOLDERS: dict[PiiKind, str] = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "iban": "[IBAN]",
    "credit_card": "[CREDIT_CARD]",
}

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}(?![\w-])"
)
_SEP = r"[ ./-]?"
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    rf"(?:\+|00)[1-9]\d{{0,2}}{_SEP}(?:\(0\)\s?)?(?:\(?\d{{1,5}}\)?{_SEP}){{1,4}}\d{{2,6}}"
    rf"|0\d{{1,5}}{_SEP}(?:\d{{2,8}}{_SEP}){{0,3}}\d{{2,8}}"
    r"|\(?[2-9]\d{2}\)?[ .-]?\d{3}[ .-]\d{4}"
    r")(?![\w])"
)
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,3})?(?![A-Za-z0-9])"
)
_CARD = re.compile(r"(?<![\d-])[2-6](?:[ -]?\d){12,18}(?![\d])")


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _phone_ok(text: str) -> bool:
    return 7 <= len(_digits(text)) <= 15


def _iban_ok(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def luhn_ok(number: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _card_ok(text: str) -> bool:
    digits = _digits(text)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


_FINDERS: dict[PiiKind, tuple[re.Pattern[str], Callable[[str], bool]]] = {
    "email": (_EMAIL, lambda _: True),
    "phone": (_PHONE, _phone_ok),
    "iban": (_IBAN, _iban_ok),
    "credit_card": (_CARD, _card_ok),
}
# The longest text each pattern can match: how much a stream must hold back to catch it.
WIDTHS: dict[PiiKind, int] = {
    kind: patterns.max_width(pattern.pattern) or patterns.MAX_WIDTH
    for kind, (pattern, _) in _FINDERS.items()
}
# IBANs and cards first: their digits must not be half-taken for a phone number.
ORDER: tuple[PiiKind, ...] = ("iban", "credit_card", "email", "phone")


def find(kind: PiiKind, text: str, pos: int = 0) -> Iterator[tuple[int, int]]:
    """Spans of `kind` in `text` from `pos` on, each validated."""
    pattern, valid = _FINDERS[kind]
    for match in pattern.finditer(text, pos):
        if valid(match.group()):
            yield match.span()
