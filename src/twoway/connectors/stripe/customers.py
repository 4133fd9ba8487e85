"""Our customers and Stripe's, through the connector's raw calls (the answer as a dict: no SDK object tree).

Our id travels as `metadata.internal_id` and our uid as `metadata.twoway_uid`; a create carries both, so a
search finds what a lost create made (and the planner can tell it from another record that got the same id).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from twoway.connectors.base import ExternalRecord, InboundEvent, NotFound, best_match
from twoway.connectors.stripe import mapping

KIND = "customer"


class Caller(Protocol):
    async def request(self, op: str, endpoint: str, *ids: str, idempotency_key: str | None = None,
                      **params: Any) -> tuple[dict[str, Any], Mapping[str, str]]: ...


class Customers:
    kind = KIND
    event_types = ("customer.created", "customer.updated", "customer.deleted")

    def __init__(self, conn: Caller) -> None:
        self.conn = conn

    async def fetch(self, external_id: str) -> ExternalRecord:
        try:
            obj, _ = await self.conn.request("retrieve", "GET /v1/customers/{id}", external_id)
        except NotFound:
            return ExternalRecord(external_id, {}, deleted=True)
        return record(obj)

    async def create(self, internal_id: int, fields: Mapping[str, str], idempotency_key: str,
                     uid: str | None = None) -> ExternalRecord:
        params = {**self.to_system(fields), "metadata": mapping.identity(internal_id, uid)}
        obj, headers = await self.conn.request("create", "POST /v1/customers", idempotency_key=idempotency_key,
                                               **params)
        replayed = headers.get("idempotent-replayed", "").lower() == "true"
        return dataclasses.replace(record(obj), replayed=replayed)

    async def update(self, external_id: str, changes: Mapping[str, str], idempotency_key: str) -> ExternalRecord:
        obj, _ = await self.conn.request("update", "POST /v1/customers/{id}", external_id,
                                         idempotency_key=idempotency_key, **self.to_system(changes))
        return record(obj)

    async def set_internal_id(self, external_id: str, internal_id: int, idempotency_key: str,
                              uid: str | None = None) -> ExternalRecord:
        obj, _ = await self.conn.request("update", "POST /v1/customers/{id}", external_id,
                                         idempotency_key=idempotency_key, metadata=mapping.identity(internal_id, uid))
        return record(obj)

    async def delete(self, external_id: str, idempotency_key: str) -> None:
        try:
            await self.conn.request("delete", "DELETE /v1/customers/{id}", external_id,
                                    idempotency_key=idempotency_key)
        except NotFound:
            return  # already gone: the goal state holds

    async def find_by_internal_id(self, internal_id: int, uid: str | None = None) -> ExternalRecord | None:
        query = mapping.search_query(internal_id, uid)
        result, _ = await self.conn.request("search", "GET /v1/customers/search", query=query, limit=10)
        return best_match([record(o) for o in result.get("data") or []], internal_id, uid)

    async def list_all(self, page_size: int = 100) -> AsyncIterator[ExternalRecord]:
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if after:
                params["starting_after"] = after
            page, _ = await self.conn.request("list", "GET /v1/customers", **params)
            data = page.get("data") or []
            for obj in data:
                yield record(obj)
            if not page.get("has_more") or not data:
                return
            after = data[-1]["id"]

    def to_system(self, fields: Mapping[str, str]) -> dict[str, Any]:
        return dict(mapping.to_stripe(fields))

    def record(self, obj: Mapping[str, Any]) -> ExternalRecord:
        return record(obj)

    @staticmethod
    def event(payload: Mapping[str, Any]) -> InboundEvent | None:
        return event_from_payload(payload)


def record(obj: Any, deleted: bool = False) -> ExternalRecord:
    data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return ExternalRecord(
        external_id=data["id"],
        fields={} if data.get("deleted") and "email" not in data else mapping.from_stripe(data),
        internal_id=mapping.internal_id_of(data),
        deleted=deleted or bool(data.get("deleted")),
        uid=mapping.uid_of(data),
    )


def event_from_payload(payload: Mapping[str, Any]) -> InboundEvent:
    """A `customer.*` event the table routed here: the customer it carried, as a hint."""
    type_ = str(payload.get("type"))
    obj, when = mapping.event_object(payload)
    return InboundEvent(event_id=str(payload["id"]), type=type_, kind=KIND, external_id=obj["id"],
                        created=when, record=record(obj, deleted=type_ == "customer.deleted"), payload=dict(payload))
