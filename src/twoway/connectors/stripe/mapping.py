"""Stripe's objects in our terms, for every kind: our id in `metadata`, an event's envelope, and our
customer fields (Stripe allows null; we store the empty string)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from twoway.connectors.base import WebhookRejected

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


def event_object(payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], datetime | None]:
    """The object an event carries, and when the event was made. Raises WebhookRejected without one."""
    obj = (payload.get("data") or {}).get("object") or {}
    if not isinstance(obj, Mapping) or not isinstance(obj.get("id"), str):
        raise WebhookRejected("event carries no object id")
    created = payload.get("created")
    return obj, (datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None)
