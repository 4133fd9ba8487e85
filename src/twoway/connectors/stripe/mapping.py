"""Our customer fields and Stripe's. Stripe allows null; we store the empty string."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FIELDS = ("name", "email")
INTERNAL_ID_KEY = "internal_id"


def from_stripe(obj: Mapping[str, Any]) -> dict[str, str]:
    return {f: (obj.get(f) or "") for f in FIELDS}


def to_stripe(fields: Mapping[str, str]) -> dict[str, str]:
    # An empty string unsets the field in Stripe, which is how our "" is stored there.
    return {f: fields[f] for f in FIELDS if f in fields}


def internal_id_of(obj: Mapping[str, Any]) -> int | None:
    metadata = obj.get("metadata") or {}
    raw = metadata.get(INTERNAL_ID_KEY) if isinstance(metadata, Mapping) else None
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None
