"""The seam every external system plugs into. Neutral dataclasses in and out; no SDK objects."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable


@dataclass(frozen=True)
class ExternalRecord:
    """An external object in our terms: field values keyed by our field names."""

    external_id: str
    fields: dict[str, str]
    internal_id: int | None = None
    deleted: bool = False
    # The record's uid as the object carries it (see `create`): our identity that a restore cannot re-issue.
    uid: str | None = None
    # The answer was an idempotent replay of an earlier request: the object may have changed since.
    replayed: bool = False
    # The parent as this record carries it (a copy taken over there, e.g. an invoice's customer name and
    # email): what is left of a parent deleted over there before we ever saw it.
    parent: ExternalRecord | None = None


@dataclass(frozen=True)
class InboundEvent:
    """A change notice from the external system. Only a hint: handlers re-read the object."""

    event_id: str
    type: str
    kind: str
    external_id: str
    created: datetime | None
    record: ExternalRecord | None
    payload: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def is_delete(self) -> bool:
        return self.record is not None and self.record.deleted


class ConnectorError(Exception):
    """A failed call. `transient` errors are retried with backoff; the rest are parked as dead.

    `outage` says the failure is the system's, not the record's (5xx, timeout, refused connection,
    a daily API allowance used up, or a call not made because the connector's breaker is open): it
    feeds the circuit breaker and never uses up a record's attempts. `retry_after` is the system's
    own hint (Retry-After, a limit window), in seconds, when it gave one.
    """

    def __init__(self, message: str, *, transient: bool, status: int | None = None,
                 code: str | None = None, rate_limited: bool = False, outage: bool | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status
        self.code = code
        self.rate_limited = rate_limited
        if outage is None:
            outage = transient and not rate_limited and (status is None or status >= 500)
        self.outage = outage
        self.retry_after = retry_after


class Unavailable(ConnectorError):
    """The call was not made: the connector's circuit breaker is open. Not the record's failure."""

    def __init__(self, system: str, retry_after: float) -> None:
        super().__init__(f"{system} is unavailable (circuit open); next probe in {retry_after:.1f} s",
                         transient=True, outage=True, retry_after=retry_after, code="circuit_open")


class NotFound(ConnectorError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, transient=False, status=404, code="resource_missing")
        self.param = param  # the parameter naming what is missing, when the system says


class ParentMissing(NotFound):
    """The parent the record names does not exist over there (deleted there before the record got there).
    Not the record's failure: the engine waits for the parent's delete to reach us, then applies the
    kind's rule for orphans."""


class Refused(ConnectorError):
    """The system kept its own values of `fields`: its state froze them (a finalized invoice's lines, a
    paid invoice's status). `current` is the object as it stands. The engine takes theirs for those
    fields and records the conflict; transient, so an engine that does not know this retries."""

    def __init__(self, message: str, *, fields: Sequence[str], current: ExternalRecord) -> None:
        super().__init__(message, transient=True, status=400, code="refused")
        self.fields = tuple(fields)
        self.current = current


def parse_uid(raw: object) -> str | None:
    """A uid as an object carries it, in its one spelling; None for anything else (a person may type there)."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def best_match(found: Iterable[ExternalRecord], internal_id: int, uid: str | None) -> ExternalRecord | None:
    """Of the objects a search by our id or uid found: the one with our uid, else one with our id (the
    planner refuses that one if it carries another record's uid: our id was issued again after a restore)."""
    found = list(found)
    same = [r for r in found if uid is not None and r.uid == uid]
    return next(iter(same or [r for r in found if r.internal_id == internal_id]), None)


class Taken(ConnectorError):
    """The create would land on `current`, an object that holds our id but another record's uid (a database
    restore issued the id again; Salesforce's upsert by External ID). Nothing was written. The planner
    records it and has that object imported first (it becomes its own record and takes its own id), then
    creates again."""

    def __init__(self, message: str, *, current: ExternalRecord) -> None:
        super().__init__(message, transient=True, status=409, code="identity_taken")
        self.current = current


class WebhookRejected(Exception):
    """Verification failed; the reason is safe to record (no secret, no signature)."""


@dataclass(frozen=True)
class CreateItem:
    internal_id: int
    fields: Mapping[str, str]
    idempotency_key: str
    uid: str | None = None


@dataclass(frozen=True)
class UpdateItem:
    external_id: str
    changes: Mapping[str, str]
    idempotency_key: str


@runtime_checkable
class BatchWrites(Protocol):
    """For connectors whose system has a batch API (Salesforce `composite/sobjects`, 200 records a call);
    such a connector declares `batch_writes = True`.

    The engine hands a connector that has these every create / update of one kind in a batch at once.
    Results come back in the order of `items`: the record, or the error of that one item.
    """

    async def create_many(self, kind: str, items: Sequence[CreateItem]) -> list[ExternalRecord | ConnectorError]: ...

    async def update_many(self, kind: str, items: Sequence[UpdateItem]) -> list[ExternalRecord | ConnectorError]: ...


class Parses(Protocol):
    """What an event table needs of a handler (its class will do, when parsing needs no client)."""

    @property
    def kind(self) -> str: ...

    @property
    def event_types(self) -> tuple[str, ...]:
        """The event types it parses; `invoice.*` stands for every type that starts with `invoice.`."""
        ...

    def event(self, payload: Mapping[str, Any]) -> InboundEvent | None:
        """The event a payload of this kind is, or None when it names nothing of ours. Raises WebhookRejected."""
        ...


class KindHandler(Parses, Protocol):
    """One kind as one system holds it: the calls for it, its fields in ours, its events.

    A module per (system, kind) implements it (`stripe/customers.py`, `stripe/invoices.py`,
    `salesforce/accounts.py`); the system's connector holds what every kind shares (client, auth,
    limits) and a `{kind: handler}` table it dispatches through. A new kind is a module and a row.
    """

    async def fetch(self, external_id: str) -> ExternalRecord: ...

    async def create(self, internal_id: int, fields: Mapping[str, str], idempotency_key: str,
                     uid: str | None = None) -> ExternalRecord:
        """Our id and our `uid` travel with the object (`ExternalRecord.internal_id`, `.uid` when read)."""
        ...

    async def update(self, external_id: str, changes: Mapping[str, str], idempotency_key: str) -> ExternalRecord: ...

    async def delete(self, external_id: str, idempotency_key: str) -> None: ...

    async def set_internal_id(self, external_id: str, internal_id: int, idempotency_key: str,
                              uid: str | None = None) -> ExternalRecord: ...

    async def find_by_internal_id(self, internal_id: int, uid: str | None = None) -> ExternalRecord | None:
        """The object that carries our id or our uid (the planner refuses one whose uid is another's)."""
        ...

    def list_all(self, page_size: int = 100) -> AsyncIterator[ExternalRecord]: ...

    def to_system(self, fields: Mapping[str, str]) -> dict[str, Any]:
        """Our field values as the system's (what a write sends for them)."""
        ...

    def record(self, obj: Mapping[str, Any]) -> ExternalRecord:
        """The system's object in our terms."""
        ...


class BatchKindHandler(KindHandler, Protocol):
    """A kind whose system writes many records a call: the per-kind half of `BatchWrites`."""

    async def create_many(self, items: Sequence[CreateItem]) -> list[ExternalRecord | ConnectorError]: ...

    async def update_many(self, items: Sequence[UpdateItem]) -> list[ExternalRecord | ConnectorError]: ...


P = TypeVar("P", bound=Parses)


class EventTable(Generic[P]):
    """Event type -> the one handler that parses it. Two handlers claiming one type is an error at start."""

    def __init__(self, handlers: Iterable[P]) -> None:
        self.exact: dict[str, P] = {}
        self.prefixes: dict[str, P] = {}  # "invoice." for "invoice.*"
        for handler in handlers:
            for pattern in handler.event_types:
                table, key = (self.prefixes, pattern[:-1]) if pattern.endswith(".*") else (self.exact, pattern)
                if key in table:
                    raise ValueError(f"event type {pattern!r} has two handlers")
                table[key] = handler
        shared = [key for key, h in self.exact.items() if self._prefixed(key, h, also_under=False)]
        shared += [key + "*" for key, h in self.prefixes.items() if self._prefixed(key, h, also_under=True)]
        if shared:
            raise ValueError(f"event types with two handlers: {', '.join(shared)}")

    def _prefixed(self, key: str, handler: P, *, also_under: bool) -> bool:
        """Does another handler's prefix cover `key` (or, for a prefix, any type under it)?"""
        return any(other is not handler and (key.startswith(p) or (also_under and p.startswith(key)))
                   for p, other in self.prefixes.items())

    def handler(self, event_type: object) -> P | None:
        if not isinstance(event_type, str):
            return None
        found = self.exact.get(event_type)
        if found is None:
            found = next((h for prefix, h in self.prefixes.items() if event_type.startswith(prefix)), None)
        return found

    def event(self, payload: Mapping[str, Any]) -> InboundEvent | None:
        """The event, or None for a type no handler syncs. Raises WebhookRejected for a malformed one."""
        handler = self.handler(payload.get("type"))
        return handler.event(payload) if handler is not None else None


H = TypeVar("H", bound=KindHandler)
B = TypeVar("B", bound=BatchKindHandler)


class Dispatch(Generic[H]):
    """The calls a connector takes by kind, each sent to that kind's handler in `handlers` (its table)."""

    handlers: dict[str, H]

    async def fetch(self, kind: str, external_id: str) -> ExternalRecord:
        return await self.handlers[kind].fetch(external_id)

    async def create(self, kind: str, internal_id: int, fields: Mapping[str, str],
                     idempotency_key: str, uid: str | None = None) -> ExternalRecord:
        return await self.handlers[kind].create(internal_id, fields, idempotency_key, uid)

    async def update(self, kind: str, external_id: str, changes: Mapping[str, str],
                     idempotency_key: str) -> ExternalRecord:
        return await self.handlers[kind].update(external_id, changes, idempotency_key)

    async def delete(self, kind: str, external_id: str, idempotency_key: str) -> None:
        await self.handlers[kind].delete(external_id, idempotency_key)

    async def set_internal_id(self, kind: str, external_id: str, internal_id: int,
                              idempotency_key: str, uid: str | None = None) -> ExternalRecord:
        return await self.handlers[kind].set_internal_id(external_id, internal_id, idempotency_key, uid)

    async def find_by_internal_id(self, kind: str, internal_id: int, uid: str | None = None) -> ExternalRecord | None:
        return await self.handlers[kind].find_by_internal_id(internal_id, uid)

    def list_all(self, kind: str, page_size: int = 100) -> AsyncIterator[ExternalRecord]:
        return self.handlers[kind].list_all(page_size)

    def snapshot(self, kind: str, payload: Mapping[str, Any]) -> ExternalRecord | None:
        """The object a stored event carried, in our terms (a hint: it may be stale); None for a malformed one."""
        try:
            event = self.handlers[kind].event(payload)
        except WebhookRejected:
            return None
        return event.record if event else None


class BatchDispatch(Dispatch[B]):
    """`Dispatch` with the batch forms (`BatchWrites`), for a system whose kinds all have them."""

    async def create_many(self, kind: str, items: Sequence[CreateItem]) -> list[ExternalRecord | ConnectorError]:
        return await self.handlers[kind].create_many(items)

    async def update_many(self, kind: str, items: Sequence[UpdateItem]) -> list[ExternalRecord | ConnectorError]:
        return await self.handlers[kind].update_many(items)


class Connector(Protocol):
    """One external system. Its capabilities are fields the engine reads; its calls name the kind and go
    to that kind's handler."""

    system: str
    kinds: tuple[str, ...]  # the kinds it syncs: the keys of its handler table
    webhooks: bool  # the system delivers changes by webhook (verify_webhook)
    polls: bool  # poll_events reads changes (the worker polls when INBOUND_MODE says, always without webhooks)
    batch_writes: bool  # implements BatchWrites: the engine hands it a batch's creates / updates at once
    max_in_flight: int | None  # calls in flight the engine allows it; None: SYNC_MAX_IN_FLIGHT
    # How long a create may be re-sent with its first key and fields as a safe replay (then search first).
    idempotency_window: timedelta
    # Kinds whose event carries the object as it was at the event, which may stand for a read of it when
    # it is provably the newest state (sync/plan/inbound.py `newest_state`); the others are always read.
    event_objects: frozenset[str]

    async def fetch(self, kind: str, external_id: str) -> ExternalRecord: ...

    async def create(self, kind: str, internal_id: int, fields: Mapping[str, str],
                     idempotency_key: str, uid: str | None = None) -> ExternalRecord: ...

    async def update(self, kind: str, external_id: str, changes: Mapping[str, str],
                     idempotency_key: str) -> ExternalRecord: ...

    async def delete(self, kind: str, external_id: str, idempotency_key: str) -> None: ...

    async def set_internal_id(self, kind: str, external_id: str, internal_id: int,
                              idempotency_key: str, uid: str | None = None) -> ExternalRecord: ...

    async def find_by_internal_id(self, kind: str, internal_id: int,
                                  uid: str | None = None) -> ExternalRecord | None: ...

    def list_all(self, kind: str, page_size: int = 100) -> AsyncIterator[ExternalRecord]: ...

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> InboundEvent | None:
        """The event, or None for a verified event of a type we do not sync. Raises WebhookRejected."""
        ...

    def snapshot(self, kind: str, payload: Mapping[str, Any]) -> ExternalRecord | None:
        """The object an event of `kind` carried, in our terms (a hint: it may be stale)."""
        ...

    async def poll_events(self, cursor: str | None) -> tuple[list[InboundEvent], str | None]: ...

    async def close(self) -> None: ...
