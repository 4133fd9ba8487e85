"""Sealed secrets: AES-256-GCM bound to their row, opened by the key id stored beside them, never shown."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from twoway.kit.sealed import Keyring, Sealed, SealError, Secret, row_binding

PLAIN = "sk_test_51Hsecretvalue"
ROW = row_binding("tenant-a", "conn-1", "secret_key")


def ring(*ids: str) -> tuple[Keyring, str]:
    """A keyring of fresh keys (first seals) and the environment value that makes it."""
    value = ",".join(f"{i}:{Keyring.generate_key()}" for i in ids)
    return Keyring.from_env_value(value), value


def test_round_trip_through_the_stored_text() -> None:
    keys, _ = ring("k1")
    sealed = keys.seal(PLAIN, ROW)
    assert keys.open(Sealed.from_text(sealed.to_text()), ROW).reveal() == PLAIN
    assert keys.open(keys.seal(Secret(PLAIN), ROW), ROW).reveal() == PLAIN
    again = keys.seal(PLAIN, ROW)
    assert again.nonce != sealed.nonce and again.ciphertext != sealed.ciphertext  # a fresh nonce each time
    assert len(sealed.nonce) == 12 and sealed.to_text().startswith("v1:k1:")


def test_a_value_moved_to_another_row_or_field_does_not_open() -> None:
    keys, _ = ring("k1")
    sealed = keys.seal(PLAIN, ROW)
    for elsewhere in (row_binding("tenant-b", "conn-1", "secret_key"), row_binding("tenant-a", "conn-2", "secret_key"),
                      row_binding("tenant-a", "conn-1", "webhook_secret")):
        with pytest.raises(SealError, match="moved from another row"):
            keys.open(sealed, elsewhere)
    with pytest.raises(ValueError):
        row_binding("tenant:a", "conn-1", "secret_key")


def test_rotation_old_key_id_still_opens_and_new_values_use_the_first_key() -> None:
    old, old_env = ring("k1")
    sealed_before = old.seal(PLAIN, ROW)
    new_key = Keyring.generate_key()
    rotated = Keyring.from_env_value(f"k2:{new_key}, {old_env}")
    assert rotated.key_ids == ["k2", "k1"] and rotated.current == "k2"
    assert rotated.open(sealed_before, ROW).reveal() == PLAIN
    assert rotated.needs_reseal(sealed_before)
    resealed = rotated.seal(rotated.open(sealed_before, ROW), ROW)
    assert resealed.key_id == "k2" and not rotated.needs_reseal(resealed)
    only_new = Keyring.from_env_value(f"k2:{new_key}")
    assert only_new.open(resealed, ROW).reveal() == PLAIN
    with pytest.raises(SealError, match="no key 'k1'"):
        only_new.open(sealed_before, ROW)


def test_a_wrong_key_under_the_same_id_fails_clearly() -> None:
    keys, _ = ring("k1")
    other, _ = ring("k1")
    with pytest.raises(SealError, match="not the one that sealed it"):
        other.open(keys.seal(PLAIN, ROW), ROW)


def test_tampering_fails() -> None:
    keys, _ = ring("k1", "k0")
    sealed = keys.seal(PLAIN, ROW)
    flipped = bytearray(sealed.ciphertext)
    flipped[0] ^= 1
    for changed in (dataclasses.replace(sealed, ciphertext=bytes(flipped)),
                    dataclasses.replace(sealed, ciphertext=sealed.ciphertext[:-1]),
                    dataclasses.replace(sealed, nonce=bytes(12)),
                    dataclasses.replace(sealed, key_id="k0")):  # the key id is authenticated too
        with pytest.raises(SealError):
            keys.open(changed, ROW)
    for text in ("", "v2:k1:AAAA", "v1:k1:!!!", "v1:k1:" + base64.urlsafe_b64encode(b"short").decode()):
        with pytest.raises(SealError, match="not a sealed value"):
            Sealed.from_text(text)


def test_repr_and_errors_hide_plaintext_and_keys() -> None:
    keys, env = ring("k1")
    sealed = keys.seal(PLAIN, ROW)
    opened = keys.open(sealed, ROW)
    key_material = env.partition(":")[2]
    shown = [repr(opened), str(opened), f"{opened}", repr(sealed), str(sealed), repr(keys), str([opened, sealed])]
    for text in shown:
        assert PLAIN not in text and key_material not in text
        assert base64.urlsafe_b64encode(sealed.ciphertext).decode()[:16] not in text
    with pytest.raises(SealError) as failure:
        keys.open(sealed, row_binding("t", "c", "f"))
    assert PLAIN not in str(failure.value) and key_material not in str(failure.value)


@pytest.mark.parametrize("value, message", [
    ("", "no secret keys"),
    ("k1", "'<key id>:<base64"),
    ("k1:not base64!", "not base64"),
    ("k1:" + base64.b64encode(b"x" * 16).decode(), "32 bytes, not 16"),
    ("bad id:" + base64.b64encode(b"x" * 32).decode(), "key id"),
    ("k1:{k},k1:{k}".format(k=base64.b64encode(b"x" * 32).decode()), "differ"),
])
def test_env_value_errors_are_clear(value: str, message: str) -> None:
    with pytest.raises(SealError, match=message) as failure:
        Keyring.from_env_value(value)
    assert base64.b64encode(b"x" * 32).decode() not in str(failure.value)


def test_url_safe_keys_are_read_too() -> None:
    raw = bytes(range(250, 256)) * 5 + b"\xff\xfe"
    keys = Keyring.from_env_value("k1:" + base64.urlsafe_b64encode(raw).decode().rstrip("="))
    assert keys.open(keys.seal(PLAIN, ROW), ROW).reveal() == PLAIN
