"""Salesforce record ids: 15 case-sensitive characters plus a 3-character case checksum (18)."""

from __future__ import annotations

import string

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_CHECK = string.ascii_uppercase + "012345"


def checksum(id15: str) -> str:
    """For each 5-character chunk, a letter whose bits say which characters are upper case."""
    out = []
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        bits = sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")
        out.append(_CHECK[bits])
    return "".join(out)


def make(prefix: str, pod: str, seq: int) -> str:
    """An 18-character id: key prefix (3), pod (2), sequence in base 62 (10), checksum (3)."""
    digits = []
    n = seq
    for _ in range(10):
        n, r = divmod(n, 62)
        digits.append(_BASE62[r])
    id15 = prefix + pod + "".join(reversed(digits))
    return id15 + checksum(id15)


def to18(ident: str) -> str | None:
    """The 18-character form of a 15- or 18-character id; None when it is neither."""
    if len(ident) == 18 and ident.isalnum():
        return ident[:15] + checksum(ident[:15]) if ident[15:].upper() == checksum(ident[:15]) else None
    if len(ident) == 15 and ident.isalnum():
        return ident + checksum(ident)
    return None
