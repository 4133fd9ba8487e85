"""customers <-> Salesforce Accounts. Creates are upserts by our External ID (a retried create lands on
the same Account); batches go through `composite/sobjects`, 200 records a call; changes made in
Salesforce are polled over SystemModstamp (no public URL needed)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from simple_salesforce import Salesforce

from twoway.connectors.base import (
    ConnectorError,
    CreateItem,
    ExternalRecord,
    InboundEvent,
    NotFound,
    UpdateItem,
    WebhookRejected,
)
from twoway.connectors.salesforce.auth import TokenSource
from twoway.connectors.salesforce.batching import Filler
from twoway.connectors.salesforce.client import SalesforceClient, record_error
from twoway.connectors.salesforce.mapping import Mapping_
from twoway.kit.db import asyncpg_dsn
from twoway.kit.ratelimit import Limiter, SharedLimiter, TokenBucket
from twoway.logs import get_logger
from twoway.settings import Settings

SYSTEM = "salesforce"
KIND = "customer"
BATCH = 200  # composite/sobjects takes up to 200 records a call
DELETED_EVERY = 5  # polls between two looks at `deleted/` (queryAll already sees the recycle bin)
log = get_logger(__name__)


class SchemaMissing(ConnectorError):
    """Fields the mapping needs are not on the object: nothing can sync until an admin adds them."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True, outage=True, code="schema_missing", retry_after=60.0)


class SalesforceConnector:
    system = SYSTEM
    webhooks = False  # changes are polled (the worker polls a connector without webhooks in every INBOUND_MODE)

    def __init__(self, client: SalesforceClient, mapping: Mapping_, *, poll_overlap_seconds: float = 60.0,
                 poll_settle_seconds: float = 2.0, poll_interval_seconds: float = 0.0,
                 batch_linger_seconds: float = 0.2) -> None:
        self.client = client
        self.map = mapping
        self.overlap = poll_overlap_seconds
        self.settle = poll_settle_seconds
        self.poll_interval = poll_interval_seconds
        self._last_poll = -1e9
        self._polls = 0
        self._deleted_from: float | None = None  # start of the window `deleted/` has not looked at yet
        upsert_path = f"composite/sobjects/{mapping.sobject}/{mapping.external_id_field}"
        self._upserts = Filler(lambda rs: self._composite("upsert_many", "PATCH", upsert_path, rs),
                               size=BATCH, linger=batch_linger_seconds)
        self._updates = Filler(lambda rs: self._composite("update_many", "PATCH", "composite/sobjects", rs),
                               size=BATCH, linger=batch_linger_seconds)
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
                           settings.salesforce_email_field, settings.salesforce_external_id_field)
        return cls(client, mapping, poll_overlap_seconds=settings.salesforce_poll_overlap_seconds,
                   poll_settle_seconds=settings.salesforce_poll_settle_seconds,
                   poll_interval_seconds=settings.salesforce_poll_interval_seconds,
                   batch_linger_seconds=settings.salesforce_batch_linger_ms / 1000)

    def kinds(self) -> tuple[str, ...]:
        return (KIND,)

    def _check_schema(self, sf: Salesforce) -> None:
        """At start: the object and fields of the mapping exist (blocking; runs in the pool)."""
        from simple_salesforce.exceptions import SalesforceError

        try:
            described = getattr(sf, self.map.sobject).describe()
        except SalesforceError as exc:
            raise self.client.translate(exc)
        have = {f["name"].lower(): f for f in described.get("fields", [])}
        missing = [f for f in (self.map.name_field, self.map.email_field, self.map.external_id_field)
                   if f.lower() not in have]
        ext = have.get(self.map.external_id_field.lower())
        problems = [f"missing field {self.map.sobject}.{f}" for f in missing]
        if ext is not None and not (ext.get("externalId") and ext.get("unique")):
            problems.append(f"{self.map.sobject}.{self.map.external_id_field} must be a unique External ID field")
        if problems:
            message = "salesforce schema: " + "; ".join(problems) + " (create them in Setup > Object Manager)"
            log.error(message)
            raise SchemaMissing(message)

    # -- reads ---------------------------------------------------------------------------------

    def _record(self, raw: Mapping[str, Any], deleted: bool = False) -> ExternalRecord:
        gone = deleted or bool(raw.get("IsDeleted"))
        return ExternalRecord(external_id=str(raw["Id"]), fields={} if gone else self.map.from_sf(raw),
                              internal_id=self.map.internal_id(raw), deleted=gone)

    async def fetch(self, kind: str, external_id: str) -> ExternalRecord:
        fields = ",".join(self.map.fields())
        try:
            raw = await self.client.call("retrieve", lambda sf: getattr(sf, self.map.sobject).get(
                external_id, params={"fields": fields}))
        except NotFound:
            return ExternalRecord(external_id, {}, deleted=True)
        return self._record(raw)

    async def find_by_internal_id(self, kind: str, internal_id: int) -> ExternalRecord | None:
        q = (f"SELECT {', '.join(self.map.fields())} FROM {self.map.sobject} "
             f"WHERE {self.map.external_id_field} = '{int(internal_id)}' ORDER BY CreatedDate LIMIT 10")
        page = await self.client.call("query", lambda sf: sf.query(q))
        found = [r for r in page["records"] if self.map.internal_id(r) == internal_id]
        return self._record(found[0]) if found else None

    async def list_all(self, kind: str, page_size: int = 100) -> AsyncIterator[ExternalRecord]:
        q = f"SELECT {', '.join(self.map.fields())} FROM {self.map.sobject} ORDER BY Id"
        page = await self.client.call("query", lambda sf: sf.query(q))
        while True:
            for raw in page["records"]:
                yield self._record(raw)
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                return
            page = await self._more("query", page["nextRecordsUrl"])

    async def _more(self, op: str, url: str) -> Any:
        def more(sf: Salesforce) -> Any:
            return sf.query_more(url, identifier_is_url=True)
        return await self.client.call(op, more)

    # -- writes --------------------------------------------------------------------------------

    async def create(self, kind: str, internal_id: int, fields: Mapping[str, str],
                     idempotency_key: str) -> ExternalRecord:
        """An upsert by our External ID: a create retried after a crash updates the Account it made."""
        path = f"{self.map.external_id_field}/{int(internal_id)}"
        body = self.map.to_sf(fields)
        answer = await self.client.call("upsert", lambda sf: getattr(sf, self.map.sobject).upsert(
            path, body, raw_response=True).json())
        return ExternalRecord(str(answer["id"]), self._normal(fields), internal_id=internal_id,
                              replayed=answer.get("created") is False)

    async def update(self, kind: str, external_id: str, changes: Mapping[str, str],
                     idempotency_key: str) -> ExternalRecord:
        body = self.map.to_sf(changes)
        await self.client.call("update", lambda sf: getattr(sf, self.map.sobject).update(external_id, body))
        return ExternalRecord(external_id, self._normal(changes))

    async def set_internal_id(self, kind: str, external_id: str, internal_id: int,
                              idempotency_key: str) -> ExternalRecord:
        body = {self.map.external_id_field: str(int(internal_id))}
        await self.client.call("update", lambda sf: getattr(sf, self.map.sobject).update(external_id, body))
        return await self.fetch(kind, external_id)

    async def delete(self, kind: str, external_id: str, idempotency_key: str) -> None:
        try:
            await self.client.call("delete", lambda sf: getattr(sf, self.map.sobject).delete(external_id))
        except NotFound:
            return  # already gone (or in the recycle bin): the goal state holds

    async def create_many(self, kind: str, items: Sequence[CreateItem]) -> list[ExternalRecord | ConnectorError]:
        """Upserts by External ID through composite/sobjects, 200 a call, allOrNone=false."""
        records = [{"attributes": {"type": self.map.sobject}, **self.map.to_sf(i.fields),
                    self.map.external_id_field: str(int(i.internal_id))} for i in items]
        results = await self._upserts.submit(records)
        return [r if isinstance(r, ConnectorError) else
                ExternalRecord(str(r["id"]), self._normal(i.fields), internal_id=i.internal_id,
                               replayed=r.get("created") is False)
                for i, r in zip(items, results, strict=True)]

    async def update_many(self, kind: str, items: Sequence[UpdateItem]) -> list[ExternalRecord | ConnectorError]:
        records = [{"attributes": {"type": self.map.sobject}, "id": i.external_id, **self.map.to_sf(i.changes)}
                   for i in items]
        results = await self._updates.submit(records)
        return [r if isinstance(r, ConnectorError) else ExternalRecord(i.external_id, self._normal(i.changes))
                for i, r in zip(items, results, strict=True)]

    async def _composite(self, op: str, method: str, path: str,
                         records: list[dict[str, Any]]) -> list[dict[str, Any] | ConnectorError]:
        n = len(records)
        body = {"allOrNone": False, "records": records}
        try:
            answer = await self.client.call(op, lambda sf: sf.restful(path, method=method, json=body))
        except ConnectorError as exc:
            return [exc] * n  # the whole call failed: every record in it carries the error
        results = answer if isinstance(answer, list) else []
        if len(results) != n:
            err = ConnectorError(f"salesforce composite answered {len(results)} results for {n}", transient=True)
            return [err] * n
        return [r if r.get("success") else record_error((r.get("errors") or [{}])[0]) for r in results]

    def _normal(self, fields: Mapping[str, str]) -> dict[str, str]:
        """What Salesforce holds after our write, in our terms (it is `base` for the next diff)."""
        return self.map.from_sf(self.map.to_sf(fields)) if fields else {}

    # -- inbound -------------------------------------------------------------------------------

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> InboundEvent | None:
        raise WebhookRejected("salesforce changes are polled, not delivered by webhook")

    def snapshot(self, payload: Mapping[str, Any]) -> ExternalRecord | None:
        raw = payload.get("record")
        if not isinstance(raw, Mapping) or not isinstance(raw.get("Id"), str):
            return None
        return self._record(raw, deleted=bool(payload.get("deleted")))

    async def poll_events(self, cursor: str | None) -> tuple[list[InboundEvent], str | None]:
        """Changes with SystemModstamp in [cursor - overlap, now - settle), deletes included.

        Records can commit late with an earlier SystemModstamp, hence the overlap; events are
        (id, SystemModstamp), so what the overlap reads again dedups in the inbox. One `queryAll` a
        poll (it sees the recycle bin: a delete moves SystemModstamp); `deleted/` every few polls over
        everything since its last look, for deletes whose record left the bin before we read it. Polls
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
        lo, hi = _soql_time(start), _soql_time(end)
        q = (f"SELECT {', '.join(self.map.fields())}, IsDeleted FROM {self.map.sobject} "
             f"WHERE SystemModstamp >= {lo} AND SystemModstamp < {hi} ORDER BY SystemModstamp, Id")
        events: list[InboundEvent] = []
        page = await self.client.call("poll", lambda sf: sf.query(q, include_deleted=True))
        while True:
            for raw in page["records"]:
                events.append(self._event(raw, deleted=bool(raw.get("IsDeleted")), stamp=str(raw["SystemModstamp"])))
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                break
            page = await self._more("poll", page["nextRecordsUrl"])
        self._polls += 1
        since = min(start, self._deleted_from) if self._deleted_from is not None else start
        if self._polls % DELETED_EVERY == 1 or DELETED_EVERY == 1:
            t0, t1 = datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(end, UTC)
            gone = await self.client.call("poll_deleted",
                                          lambda sf: getattr(sf, self.map.sobject).deleted(t0, t1))
            for d in gone.get("deletedRecords", []):
                events.append(self._event({"Id": d["id"]}, deleted=True, stamp=str(d["deletedDate"])))
            self._deleted_from = None
        else:
            self._deleted_from = since
        return events, _stamp(end)

    def _event(self, raw: Mapping[str, Any], *, deleted: bool, stamp: str) -> InboundEvent:
        ident = str(raw["Id"])
        kind = "deleted" if deleted else "updated"
        payload = {"record": dict(raw), "deleted": deleted, "stamp": stamp}
        return InboundEvent(event_id=f"{ident}:{kind}:{stamp}", type=f"{self.map.sobject.lower()}.{kind}", kind=KIND,
                            external_id=ident, created=_parse_sf_time(stamp), record=self._record(raw, deleted),
                            payload=payload)

    async def close(self) -> None:
        await self.client.close()


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _soql_time(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_sf_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return None


def limiter_for(settings: Settings) -> Limiter:
    """SALESFORCE_RATE_LIMIT_PER_SECOND is the org's, shared through the database by every process that
    uses the same connected app and login URL (named by a hash); a process with no database keeps it."""
    rate = settings.salesforce_rate_limit_per_second
    if not settings.database_url:
        return TokenBucket(rate)
    ident = f"{settings.salesforce_login_url}|{settings.salesforce_client_id}|{settings.salesforce_username}"
    return SharedLimiter(asyncpg_dsn(settings.database_url),
                         "salesforce:" + hashlib.sha256(ident.encode()).hexdigest()[:12], rate)
