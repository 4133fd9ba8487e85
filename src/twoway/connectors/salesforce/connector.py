"""Salesforce: the client (auth, rate limit, the daily allowance), the schema check, polling for changes
over SystemModstamp (no public URL needed), and the table of the kinds it syncs (each kind's calls and
fields live in its own module: accounts.py)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from simple_salesforce import Salesforce

from twoway.connectors.base import (
    BatchDispatch,
    BatchKindHandler,
    ConnectorError,
    InboundEvent,
    WebhookRejected,
)
from twoway.connectors.salesforce import accounts
from twoway.connectors.salesforce.auth import TokenSource
from twoway.connectors.salesforce.client import SalesforceClient
from twoway.connectors.salesforce.mapping import Mapping_
from twoway.kit.db import asyncpg_dsn
from twoway.kit.ratelimit import Limiter, SharedLimiter, TokenBucket
from twoway.logs import get_logger
from twoway.settings import Settings

SYSTEM = "salesforce"
DELETED_EVERY = 5  # polls between two looks at `deleted/` (queryAll already sees the recycle bin)
log = get_logger(__name__)


class SObjectHandler(BatchKindHandler, Protocol):
    """A kind held as one Salesforce object: what the connector's schema check and poll need of it."""

    @property
    def sobject(self) -> str: ...

    def select(self) -> str: ...

    def schema_problems(self, described: Mapping[str, Any]) -> list[str]: ...


class SchemaMissing(ConnectorError):
    """Fields the mapping needs are not on the object: nothing can sync until an admin adds them."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True, outage=True, code="schema_missing", retry_after=60.0)


class SalesforceConnector(BatchDispatch[SObjectHandler]):
    system = SYSTEM
    webhooks = False  # changes are polled (the worker polls a connector without webhooks in every INBOUND_MODE)
    polls = True
    batch_writes = True  # composite/sobjects: 200 records a call
    # None: the engine's SYNC_MAX_IN_FLIGHT. The client bounds its own HTTP calls (SALESFORCE_MAX_IN_FLIGHT);
    # the engine must keep hundreds of records in flight so composite calls fill up to 200.
    max_in_flight: int | None = None
    # Salesforce keeps no idempotency keys: a create is an upsert by our External ID, so re-sending it lands
    # on the same Account at any age, and the system sets no limit. The window is ours: a replay there is a
    # real write of the first create's fields (over edits made since), and past it the planner searches
    # first (SOQL by External ID, one call). 23 h, as for Stripe: the behaviour so far.
    idempotency_window = timedelta(hours=23)
    event_objects: frozenset[str] = frozenset()  # polled changes are hints: every one is read

    def __init__(self, client: SalesforceClient, mapping: Mapping_, *, poll_overlap_seconds: float = 60.0,
                 poll_settle_seconds: float = 2.0, poll_interval_seconds: float = 0.0,
                 batch_linger_seconds: float = 0.2) -> None:
        self.client = client
        self.overlap = poll_overlap_seconds
        self.settle = poll_settle_seconds
        self.poll_interval = poll_interval_seconds
        self._last_poll = -1e9
        self._polls = 0
        self._deleted_from: float | None = None  # start of the window `deleted/` has not looked at yet
        # One row per kind this connector syncs: the kind's module holds its calls, fields and events.
        self.handlers: dict[str, SObjectHandler] = {h.kind: h for h in (
            accounts.Accounts(client, mapping, batch_linger_seconds=batch_linger_seconds),
        )}
        self.kinds = tuple(self.handlers)
        client._ready = self._check_schema

    @classmethod
    def from_settings(cls, settings: Settings) -> SalesforceConnector:
        source = TokenSource(
            login_url=settings.salesforce_login_url, client_id=settings.salesforce_client_id or "",
            client_secret=settings.salesforce_secret(), jwt_key_file=settings.salesforce_jwt_key_file,
            username=settings.salesforce_username, audience=settings.salesforce_jwt_audience,
            timeout=settings.salesforce_timeout_seconds)
        client = SalesforceClient(
            source, version=settings.salesforce_api_version.lstrip("v"), ca_file=settings.salesforce_ca_file,
            timeout=settings.salesforce_timeout_seconds, max_in_flight=settings.salesforce_max_in_flight,
            limiter=limiter_for(settings),
            reserve_fraction=settings.salesforce_api_reserve_percent / 100,
            limit_pause_seconds=settings.salesforce_limit_pause_seconds)
        mapping = Mapping_(settings.salesforce_object, settings.salesforce_name_field,
                           settings.salesforce_email_field, settings.salesforce_external_id_field,
                           None if settings.salesforce_uid_field.lower() == "none" else settings.salesforce_uid_field)
        return cls(client, mapping, poll_overlap_seconds=settings.salesforce_poll_overlap_seconds,
                   poll_settle_seconds=settings.salesforce_poll_settle_seconds,
                   poll_interval_seconds=settings.salesforce_poll_interval_seconds,
                   batch_linger_seconds=settings.salesforce_batch_linger_ms / 1000)

    def _check_schema(self, sf: Salesforce) -> None:
        """At start: the objects and fields every kind maps exist (blocking; runs in the pool)."""
        from simple_salesforce.exceptions import SalesforceError

        problems: list[str] = []
        for handler in self.handlers.values():
            try:
                described = getattr(sf, handler.sobject).describe()
            except SalesforceError as exc:
                raise self.client.translate(exc)
            problems += handler.schema_problems(described)
        if problems:
            message = "salesforce schema: " + "; ".join(problems) + " (create them in Setup > Object Manager)"
            log.error(message)
            raise SchemaMissing(message)

    # -- inbound -------------------------------------------------------------------------------

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> InboundEvent | None:
        raise WebhookRejected("salesforce changes are polled, not delivered by webhook")

    async def poll_events(self, cursor: str | None) -> tuple[list[InboundEvent], str | None]:
        """Changes with SystemModstamp in [cursor - overlap, now - settle), deletes included, of every kind.

        Records can commit late with an earlier SystemModstamp, hence the overlap; events are
        (id, SystemModstamp), so what the overlap reads again dedups in the inbox. One `queryAll` a
        poll and kind (it sees the recycle bin: a delete moves SystemModstamp); `deleted/` every few polls
        over everything since its last look, for deletes whose record left the bin before we read it. Polls
        come at most every SALESFORCE_POLL_INTERVAL_SECONDS: each costs API calls from the daily allowance.
        """
        if cursor is None:
            await self.client.call("limits", lambda sf: sf.limits())  # learns the server's clock
            return [], _stamp(self.client.server_now() - self.settle)
        now = time.monotonic()
        if now - self._last_poll < self.poll_interval:
            return [], cursor
        self._last_poll = now
        start = datetime.fromisoformat(cursor).timestamp() - self.overlap
        end = float(int(self.client.server_now() - self.settle))  # whole seconds: SOQL literals
        if end <= start:
            return [], cursor
        events: list[InboundEvent] = []
        for handler in self.handlers.values():
            events += await self._changed(handler, start, end)
        self._polls += 1
        since = min(start, self._deleted_from) if self._deleted_from is not None else start
        if self._polls % DELETED_EVERY == 1 or DELETED_EVERY == 1:
            t0, t1 = datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(end, UTC)
            for handler in self.handlers.values():
                events += await self._deleted(handler, t0, t1)
            self._deleted_from = None
        else:
            self._deleted_from = since
        return events, _stamp(end)

    async def _changed(self, handler: SObjectHandler, start: float, end: float) -> list[InboundEvent]:
        q = (f"SELECT {handler.select()}, IsDeleted FROM {handler.sobject} "
             f"WHERE SystemModstamp >= {_soql_time(start)} AND SystemModstamp < {_soql_time(end)} "
             "ORDER BY SystemModstamp, Id")
        page = await self.client.call("poll", lambda sf: sf.query(q, include_deleted=True))
        return [_event(handler, raw, deleted=bool(raw.get("IsDeleted")), stamp=str(raw["SystemModstamp"]))
                async for raw in self.client.query_all_pages("poll", page)]

    async def _deleted(self, handler: SObjectHandler, t0: datetime, t1: datetime) -> list[InboundEvent]:
        gone = await self.client.call("poll_deleted", lambda sf: getattr(sf, handler.sobject).deleted(t0, t1))
        return [_event(handler, {"Id": d["id"]}, deleted=True, stamp=str(d["deletedDate"]))
                for d in gone.get("deletedRecords", [])]

    async def close(self) -> None:
        await self.client.close()


def _event(handler: SObjectHandler, raw: Mapping[str, Any], *, deleted: bool, stamp: str) -> InboundEvent:
    event = handler.event({"record": dict(raw), "deleted": deleted, "stamp": stamp})
    assert event is not None  # a polled record always carries its Id
    return event


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _soql_time(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def limiter_for(settings: Settings) -> Limiter:
    """SALESFORCE_RATE_LIMIT_PER_SECOND is the org's, shared through the database by every process that
    uses the same connected app and login URL (named by a hash); a process with no database keeps it."""
    rate = settings.salesforce_rate_limit_per_second
    if not settings.database_url:
        return TokenBucket(rate)
    ident = f"{settings.salesforce_login_url}|{settings.salesforce_client_id}|{settings.salesforce_username}"
    return SharedLimiter(asyncpg_dsn(settings.database_url),
                         "salesforce:" + hashlib.sha256(ident.encode()).hexdigest()[:12], rate)
