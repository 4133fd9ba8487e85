"""Secrets sealed at rest: AES-256-GCM, a fresh 12-byte nonce per value, the owning row bound in as
associated data, and the key id kept beside the ciphertext so keys can rotate.

Why each part: GCM authenticates, so a changed byte fails to open instead of opening to garbage; the
associated data (`row_binding(tenant, connection, field)`) makes a ciphertext copied into another tenant's
row, or into another field of the same row, fail to open; the key id says which key of the ring opens a
value, so a new key can seal from today while the old ones still open what they sealed (re-seal later,
then drop the old key). Random 96-bit nonces are safe for far more values than one key will ever seal.

Keys come from the environment as `TWOWAY_SECRET_KEYS="k2:<base64 of 32 bytes>,k1:<...>"` (the first one
seals; all open), parsed by `Keyring.from_env_value`. Nothing here prints a key or a plaintext: `Secret`,
`Sealed` and `Keyring` show key ids only, and errors name key ids, never key material.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce
TAG_BYTES = 16
FORMAT = "v1"  # first part of the stored text and of the associated data: a later format can coexist
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class SealError(Exception):
    """A value cannot be sealed or opened; the message names what to check, never a secret."""


class Secret:
    """A plaintext secret that does not show itself: repr/str are masked; `reveal()` is the one way out."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class Sealed:
    """A sealed value: which key sealed it, the nonce, and the ciphertext with GCM's tag at its end.

    Stored as one text column (`to_text`, `from_text`): `v1:<key id>:<base64url(nonce + ciphertext)>`."""

    key_id: str
    nonce: bytes
    ciphertext: bytes

    def to_text(self) -> str:
        body = base64.urlsafe_b64encode(self.nonce + self.ciphertext).decode("ascii").rstrip("=")
        return f"{FORMAT}:{self.key_id}:{body}"

    @classmethod
    def from_text(cls, text: str) -> Sealed:
        version, _, rest = text.partition(":")
        key_id, _, body = rest.partition(":")
        if version != FORMAT or not _KEY_ID.match(key_id) or not body:
            raise SealError(f"not a sealed value (expected '{FORMAT}:<key id>:<data>')")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise SealError("not a sealed value: its data is not base64") from None
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise SealError("not a sealed value: too short to hold a nonce and a tag")
        return cls(key_id, raw[:NONCE_BYTES], raw[NONCE_BYTES:])

    def __repr__(self) -> str:
        return f"Sealed(key_id={self.key_id!r})"  # not even the length: it hints at the kind of secret

    __str__ = __repr__


def row_binding(tenant_id: str, connection_id: str, field: str) -> str:
    """The associated data that ties a sealed value to its row and field: `tenant:connection:field`."""
    parts = (tenant_id, connection_id, field)
    if any(not p or ":" in p for p in parts):
        raise ValueError("tenant id, connection id and field must be non-empty and hold no ':'")
    return ":".join(parts)


class Keyring:
    """Named 32-byte keys: the first seals, every one opens what it sealed."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise SealError("no secret keys given")
        ids = [key_id for key_id, _ in keys]
        for key_id, key in keys:
            if not _KEY_ID.match(key_id):
                raise SealError(f"key id {key_id!r} must be 1-64 of letters, digits, '_', '.', '-'")
            if len(key) != KEY_BYTES:
                raise SealError(f"key {key_id!r} must be {KEY_BYTES} bytes, not {len(key)}")
        if len(set(ids)) != len(ids):
            raise SealError("key ids must differ")
        self.current = ids[0]
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys}

    @classmethod
    def from_env_value(cls, value: str) -> Keyring:
        """`"k2:<base64 of 32 bytes>,k1:<...>"`: comma-separated `id:key`, standard or URL-safe base64."""
        keys = []
        for entry in (e.strip() for e in value.split(",")):
            if not entry:
                continue
            key_id, colon, encoded = entry.partition(":")
            if not colon:
                raise SealError("each secret key must be written '<key id>:<base64 of 32 bytes>'")
            keys.append((key_id.strip(), _decode_key(key_id.strip(), encoded.strip())))
        return cls(keys)

    @staticmethod
    def generate_key() -> str:
        """A new key in the form `from_env_value` reads (the part after `<key id>:`)."""
        return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    def seal(self, plaintext: str | Secret, binding: str) -> Sealed:
        """Seal under the current key; `binding` (see `row_binding`) must be given again to open."""
        value = plaintext.reveal() if isinstance(plaintext, Secret) else plaintext
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._ciphers[self.current].encrypt(nonce, value.encode(), self._aad(self.current, binding))
        return Sealed(self.current, nonce, ciphertext)

    def open(self, sealed: Sealed, binding: str) -> Secret:
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise SealError(f"no key {sealed.key_id!r} in the keyring (it has {', '.join(self._ciphers)}): "
                            "was a key removed before its values were re-sealed?")
        try:
            plain = cipher.decrypt(sealed.nonce, sealed.ciphertext, self._aad(sealed.key_id, binding))
        except InvalidTag:
            # GCM cannot tell these apart, and must not: any of them means the value is not to be trusted.
            raise SealError(f"cannot open a value sealed with key {sealed.key_id!r}: the key under that id is "
                            "not the one that sealed it, or the value was moved from another row or field, "
                            "or it was changed") from None
        return Secret(plain.decode())

    def needs_reseal(self, sealed: Sealed) -> bool:
        """True when an older key sealed it: re-seal with `seal(open(...))` before that key is dropped."""
        return sealed.key_id != self.current

    def __repr__(self) -> str:
        return f"Keyring(current={self.current!r}, keys={self.key_ids!r})"

    @staticmethod
    def _aad(key_id: str, binding: str) -> bytes:
        # The key id is authenticated too, so the stored id cannot be swapped for another unnoticed.
        return f"{FORMAT}:{key_id}:{binding}".encode()


def _decode_key(key_id: str, encoded: str) -> bytes:
    try:
        raw = base64.b64decode(encoded.replace("-", "+").replace("_", "/") + "=" * (-len(encoded) % 4),
                               validate=True)
    except (binascii.Error, ValueError):
        raise SealError(f"key {key_id!r} is not base64") from None
    if len(raw) != KEY_BYTES:
        raise SealError(f"key {key_id!r} must decode to {KEY_BYTES} bytes, not {len(raw)}")
    return raw
