"""Sealing: a key-encryption key derived from the vault key, and AES-256-GCM around each item.

    vault key (client's secret, never stored)
      -> scrypt(salt per account, n/r/p recorded per account) -> KEK (32 bytes, this request only)
      -> AES-256-GCM(KEK, fresh 96-bit nonce, associated data = account + kind + item id)

The associated data binds a ciphertext to its place: copied to another account or item, it no
longer opens. The verifier is a constant sealed the same way, so a wrong key is told from a
damaged item.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

_NONCE_BYTES = 12
_SALT_BYTES = 16
_VERSION = b"\x01"  # leads every sealed blob, so another scheme could follow without ambiguity
_VERIFIER = b"hanse vault verifier v1"
MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 1024


class SealBroken(Exception):
    """A sealed blob did not open: wrong key, or the blob was moved or altered."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    """scrypt's cost parameters and salt, as recorded for one account's vault."""

    n: int
    r: int
    p: int
    salt: bytes

    @classmethod
    def fresh(cls, n: int, r: int = 8, p: int = 1) -> KdfParams:
        return cls(n=n, r=r, p=p, salt=os.urandom(_SALT_BYTES))


class Sealer:
    """AES-256-GCM under one account's KEK; lives for one request."""

    def __init__(self, account_id: int, kek: bytes) -> None:
        self._account_id = account_id
        self._aead = AESGCM(kek)

    @classmethod
    def derive(cls, account_id: int, vault_key: str, params: KdfParams) -> Sealer:
        kdf = Scrypt(salt=params.salt, length=32, n=params.n, r=params.r, p=params.p)
        return cls(account_id, kdf.derive(vault_key.encode("utf-8")))

    def seal(self, kind: str, item_id: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, self._context(kind, item_id))
        return _VERSION + nonce + sealed

    def open(self, kind: str, item_id: str, blob: bytes) -> bytes:
        """The plaintext, or SealBroken."""
        if blob[:1] != _VERSION or len(blob) < 1 + _NONCE_BYTES + 16:
            raise SealBroken
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, self._context(kind, item_id))
        except InvalidTag as exc:
            raise SealBroken from exc

    def verifier(self) -> bytes:
        return self.seal("verifier", "", _VERIFIER)

    def verifies(self, verifier: bytes) -> bool:
        """Whether this KEK opens the vault's verifier: the vault key was right."""
        try:
            return self.open("verifier", "", verifier) == _VERIFIER
        except SealBroken:
            return False

    def _context(self, kind: str, item_id: str) -> bytes:
        return f"hanse-vault/v1/{self._account_id}/{kind}/{item_id}".encode()
