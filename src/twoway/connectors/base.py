"""The seam every external system plugs into. Neutral dataclasses in and out; no SDK objects."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ExternalRecord:
    """An external object in our terms: field values keyed by our field names."""

    external_id: str
    fields: dict[str, str]
    internal_id: int | None = None
    deleted: bool = False
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


class WebhookRejected(Exception):
    """Verification failed; the reason is safe to record (no secret, no signature)."""


@dataclass(frozen=True)
class CreateItem:
    internal_id: int
    fields: Mapping[str, str]
    idempotency_key: str


@dataclass(frozen=True)
class UpdateItem:
    external_id: str
    changes: Mapping[str, str]
    idempotency_key: str


@runtime_checkable
class BatchWrites(Protocol):
    """Optional, for systems with a batch API (Salesforce `composite/sobjects`, 200 records a call).

    The engine hands a connector that has these every create / update of one kind in a batch at once.
    Results come back in the order of `items`: the record, or the error of that one item.
    """

    async def create_many(self, kind: str, items: Sequence[CreateItem]) -> list[ExternalRecord | ConnectorError]: ...

    async def update_many(self, kind: str, items: Sequence[UpdateItem]) -> list[ExternalRecord | ConnectorError]: ...


class Connector(Protocol):
    system: str

    def kinds(self) -> tuple[str, ...]: ...

    async def fetch(self, kind: str, external_id: str) -> ExternalRecord: ...

    async def create(self, kind: str, internal_id: int, fields: Mapping[str, str],
                     idempotency_key: str) -> ExternalRecord: ...

    async def update(self, kind: str, external_id: str, changes: Mapping[str, str],
                     idempotency_key: str) -> ExternalRecord: ...

    async def delete(self, kind: str, external_id: str, idempotency_key: str) -> None: ...

    async def set_internal_id(self, kind: str, external_id: str, internal_id: int,
                              idempotency_key: str) -> ExternalRecord: ...

    async def find_by_internal_id(self, kind: str, internal_id: int) -> ExternalRecord | None: ...

    def list_all(self, kind: str, page_size: int = 100) -> AsyncIterator[ExternalRecord]: ...

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> InboundEvent | None:
        """The event, or None for a verified event of a type we do not sync. Raises WebhookRejected."""
        ...

    def snapshot(self, payload: Mapping[str, Any]) -> ExternalRecord | None:
        """The object an event carried, in our terms (a hint: it may be stale)."""
        ...

    async def poll_events(self, cursor: str | None) -> tuple[list[InboundEvent], str | None]: ...

    async def close(self) -> None: ...
