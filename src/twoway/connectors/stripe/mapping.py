"""Stripe's objects in our terms, for every kind: our id and uid in `metadata`, an event's envelope, and our
customer fields (Stripe allows null; we store the empty string)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from twoway.connectors.base import WebhookRejected, parse_uid

FIELDS = ("name", "email")
INTERNAL_ID_KEY = "internal_id"
# Our record's uid beside its id: ids go back with a database restore, a uid does not (docs/architecture.md).
UID_KEY = "twoway_uid"


def from_stripe(obj: Mapping[str, Any]) -> dict[str, str]:
    return {f: (obj.get(f) or "") for f in FIELDS}


def to_stripe(fields: Mapping[str, str]) -> dict[str, str]:
    # An empty string unsets the field in Stripe, which is how our "" is stored there.
    return {f: fields[f] for f in FIELDS if f in fields}


def internal_id_of(obj: Mapping[str, Any]) -> int | None:
    metadata = obj.get("metadata") or {}
    raw = metadata.get(INTERNAL_ID_KEY) if isinstance(metadata, Mapping) else None
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


def uid_of(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata") or {}
    return parse_uid(metadata.get(UID_KEY) if isinstance(metadata, Mapping) else None)


def identity(internal_id: int, uid: str | None) -> dict[str, str]:
    """The metadata that names our record: its id, and its uid when it has one."""
    return {INTERNAL_ID_KEY: str(internal_id), **({UID_KEY: uid} if uid else {})}


def search_query(internal_id: int, uid: str | None) -> str:
    """Objects that carry our id, or our uid (an import's row may have a new id)."""
    by_id = f"metadata['{INTERNAL_ID_KEY}']:'{internal_id}'"
    return f"{by_id} OR metadata['{UID_KEY}']:'{uid}'" if uid else by_id


def event_object(payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], datetime | None]:
    """The object an event carries, and when the event was made. Raises WebhookRejected without one."""
    obj = (payload.get("data") or {}).get("object") or {}
    if not isinstance(obj, Mapping) or not isinstance(obj.get("id"), str):
        raise WebhookRejected("event carries no object id")
    created = payload.get("created")
    return obj, (datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None)
