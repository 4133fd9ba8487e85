"""The engine: level-triggered handlers that make one record agree on both sides.

Handlers never trust a message body. They read our row, the link and (when needed) the external
object, then converge. Duplicates, replays and reordering are therefore harmless.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twoway.connectors.base import Connector, ConnectorError, ExternalRecord, NotFound
from twoway.kit import metrics, records
from twoway.kit.backoff import backoff_seconds
from twoway.kit.db import advisory_lock, unit_of_work
from twoway.kit.outbox import enqueue_outbound, record_key
from twoway.logs import get_logger
from twoway.settings import Settings
from twoway.sync import log as synclog
from twoway.sync.inbox import InboxRepository
from twoway.sync.links import LinkRepository
from twoway.sync.merge import merge
from twoway.sync.models import InboxEvent, Link

logger = get_logger(__name__)
DELETED = {"deleted": True}
# Stripe keeps idempotency keys for 24 hours; stay clear of the edge.
IDEMPOTENCY_WINDOW = timedelta(hours=23)


def _key(*parts: object) -> str:
    return "twoway:" + ":".join(str(p) for p in parts)


def _digest(values: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def _now() -> datetime:
    return datetime.now(UTC)


class SyncEngine:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], connectors: Mapping[str, Connector],
                 settings: Settings) -> None:
        self.sessions = sessions
        self.connectors = connectors
        self.settings = settings

    # -- outbound ------------------------------------------------------------------------------

    async def outbound(self, kind: str, internal_id: int, system: str) -> str:
        """Make `system` hold what our row holds. Returns the outcome for logs and tests."""
        connector = self.connectors[system]
        if kind not in connector.kinds():
            return "unsupported"
        async with unit_of_work(self.sessions) as session:
            await advisory_lock(session, record_key(kind, internal_id))
            row = await records.get(session, kind, internal_id)
            if row is None:
                return "missing"
            links = LinkRepository(session)
            link = await links.for_record(kind, internal_id, system)
            if link is not None and await InboxRepository(session).has_pending(system, kind, link.external_id):
                # Their change is waiting: merge it first, so a both-sides edit is resolved, not overwritten.
                await self._inbound_locked(session, connector, kind, link.external_id, link)
                await session.refresh(row)
            try:
                outcome = await self._push(session, connector, kind, row, link)
                logger.debug("outbound handled", system=system, kind=kind, internal_id=internal_id, outcome=outcome)
                return outcome
            except ConnectorError as exc:
                await self._record_failure(session, kind, system, "outbound", exc, internal_id=internal_id,
                                           external_id=link.external_id if link else None)
                return "failed"

    async def _push(self, session: AsyncSession, connector: Connector, kind: str, row: records.SyncedRecord,
                    link: Link | None) -> str:
        system = connector.system
        if row.deleted_at is not None:
            return await self._push_delete(session, connector, kind, row, link)
        operation = "update"
        if link is None:
            link = await self._create_or_adopt(session, connector, kind, row)
            operation = "create"
        if link.base.get("deleted"):
            return await self._gone_in_stripe(session, kind, row, link)
        ours = row.fields()
        changes = {k: v for k, v in ours.items() if link.base.get(k) != v}
        if changes:
            key = _key(system, kind, row.id, f"v{row.version}", _digest(changes))
            try:
                await connector.update(kind, link.external_id, changes, key)
            except NotFound:
                return await self._gone_in_stripe(session, kind, row, link)
            link.base = {**link.base, **changes}
        elif operation == "update":
            if link.last_pushed_version < row.version:
                link.last_pushed_version = row.version
            await synclog.close_open(session, kind, system, "outbound", row.id, None, include_dead=True)
            return "noop"
        await self._succeeded(session, kind, system, row, link, operation if operation == "create" else "update")
        return operation

    async def _create_or_adopt(self, session: AsyncSession, connector: Connector, kind: str,
                               row: records.SyncedRecord) -> Link:
        system = connector.system
        key = _key(system, kind, row.id, "create", f"v{row.version}")
        trace = await synclog.create_trace(session, kind, row.id, system)
        record: ExternalRecord | None = None
        if trace.exists and not trace.only_this_key_recently(key, IDEMPOTENCY_WINDOW):
            # An earlier create under another key (or too long ago for Stripe to replay it) may have
            # run, or a link was lost after a success: look before creating. Not before every create:
            # search is slow, eventually consistent and rate limited.
            record = await connector.find_by_internal_id(kind, row.id)
        if record is None:
            await self._mark_create_started(kind, row.id, system, key)
            try:
                record = await connector.create(kind, row.id, row.fields(), key)
            except ConnectorError as exc:
                if exc.code != "idempotency_error":
                    raise
                record = await connector.find_by_internal_id(kind, row.id)
                if record is None:
                    raise ConnectorError("create key reused but no customer found yet", transient=True)
            if record.replayed:
                # A replay answers with the customer as first created; it may have been deleted since.
                current = await connector.fetch(kind, record.external_id)
                record = current if current.deleted else record
        link = Link(kind=kind, internal_id=row.id, system=system, external_id=record.external_id,
                    base=dict(DELETED) if record.deleted else dict(record.fields), last_pushed_version=0)
        return await LinkRepository(session).add(link)

    async def _mark_create_started(self, kind: str, internal_id: int, system: str, key: str) -> None:
        """Committed on its own, before the call, so a crash leaves a trace that a create may exist."""
        async with unit_of_work(self.sessions) as side:
            trace = await synclog.create_trace(side, kind, internal_id, system)
            if key not in trace.started_keys:
                await synclog.add(side, kind=kind, system=system, direction="outbound", operation="create",
                                  status="started", internal_id=internal_id, detail={"key": key})

    async def _push_delete(self, session: AsyncSession, connector: Connector, kind: str, row: records.SyncedRecord,
                           link: Link | None) -> str:
        system = connector.system
        if link is None:
            found = None
            if (await synclog.create_trace(session, kind, row.id, system)).exists:
                found = await connector.find_by_internal_id(kind, row.id)
            if found is None:
                await synclog.close_open(session, kind, system, "outbound", row.id, None, include_dead=True)
                return "noop"
            link = await LinkRepository(session).add(Link(
                kind=kind, internal_id=row.id, system=system, external_id=found.external_id,
                base=dict(found.fields)))
        if link.base.get("deleted"):
            link.last_pushed_version = max(link.last_pushed_version, row.version)
            return "noop"
        await connector.delete(kind, link.external_id, _key(system, kind, row.id, "delete"))
        link.base = dict(DELETED)
        await self._succeeded(session, kind, system, row, link, "delete")
        return "delete"

    async def _gone_in_stripe(self, session: AsyncSession, kind: str, row: records.SyncedRecord, link: Link) -> str:
        """Deleted on their side while we edited: deletion wins (a recorded policy)."""
        link.base = dict(DELETED)
        await records.soft_delete(session, kind, row)
        await synclog.add(session, kind=kind, system=link.system, direction="outbound", operation="update",
                    status="conflict", internal_id=row.id, external_id=link.external_id,
                    detail={"resolution": "deleted in external system; delete wins over edit"})
        await self._succeeded(session, kind, link.system, row, link, "delete")
        return "gone"

    async def _succeeded(self, session: AsyncSession, kind: str, system: str, row: records.SyncedRecord, link: Link,
                         operation: str) -> None:
        link.last_pushed_version = row.version
        link.last_synced_at = func.now()  # type: ignore[assignment]
        link.updated_at = func.now()  # type: ignore[assignment]
        await synclog.close_open(session, kind, system, "outbound", row.id, None, include_dead=True)
        await synclog.add(session, kind=kind, system=system, direction="outbound", operation=operation, status="ok",
                    internal_id=row.id, external_id=link.external_id)
        metrics.SYNC_RESULTS.labels(system=system, direction="outbound", status="ok").inc()
        changed = records.changed_at(row)
        if changed is not None:
            metrics.SYNC_LATENCY.labels(system=system, direction="outbound").observe(
                max(0.0, (_now() - changed).total_seconds()))

    # -- inbound -------------------------------------------------------------------------------

    async def inbound(self, system: str, kind: str, external_id: str, *, hint_only: bool = False) -> str:
        """Make our catalog agree with the external object, merging both sides' changes.

        `hint_only`: the message named events that someone already handled, so when none is pending
        there is nothing to look at. Without it (reconcile, retries, sweeper) the object is always read.
        """
        connector = self.connectors[system]
        async with unit_of_work(self.sessions) as session:
            lock_key = await self._inbound_lock_key(session, system, kind, external_id)
            await advisory_lock(session, lock_key)
            link = await LinkRepository(session).for_external(system, kind, external_id)
            if hint_only and not await InboxRepository(session).has_pending(system, kind, external_id):
                return "handled"
            try:
                outcome = await self._inbound_locked(session, connector, kind, external_id, link)
                logger.debug("inbound handled", system=system, external_id=external_id, outcome=outcome,
                             lock=lock_key)
                return outcome
            except ConnectorError as exc:
                await self._record_failure(session, kind, system, "inbound", exc,
                                           internal_id=link.internal_id if link else None, external_id=external_id)
                return "failed"

    async def _inbound_lock_key(self, session: AsyncSession, system: str, kind: str, external_id: str) -> str:
        """Lock the internal record when we can name it, so inbound and outbound never interleave.

        Plain reads, not ORM loads: an object loaded before the lock would sit in the session's identity
        map and hide the values another transaction commits while we wait.
        """
        params = {"system": system, "kind": kind, "xid": external_id}
        linked = (await session.execute(_LINKED_ID, params)).scalar()
        if linked is not None:
            return record_key(kind, int(linked))
        for (payload,) in (await session.execute(_PENDING_PAYLOADS, params)).all():
            seen = self.connectors[system].snapshot(payload)
            if seen is not None and seen.internal_id is not None:
                return record_key(kind, seen.internal_id)
        return f"{system}:{kind}:{external_id}"

    async def _inbound_locked(self, session: AsyncSession, connector: Connector, kind: str, external_id: str,
                              link: Link | None) -> str:
        system = connector.system
        events = await InboxRepository(session).pending(system, kind, external_id)
        if link is not None and self._events_match_base(connector, events, link):
            await InboxRepository(session).mark_processed(events)
            await synclog.close_open(session, kind, system, "inbound", None, external_id, include_dead=True)
            return "echo"
        theirs = await connector.fetch(kind, external_id)
        theirs_at = max((e.event_created for e in events if e.event_created), default=None)
        if link is None:
            outcome = await self._inbound_unlinked(session, connector, kind, theirs)
        else:
            outcome = await self._inbound_linked(session, kind, link, theirs, theirs_at)
        await InboxRepository(session).mark_processed(events)
        await synclog.close_open(session, kind, system, "inbound", None, external_id, include_dead=True)
        metrics.SYNC_RESULTS.labels(system=system, direction="inbound", status="ok").inc()
        for e in events:
            metrics.SYNC_LATENCY.labels(system=system, direction="inbound").observe(
                max(0.0, (_now() - e.received_at).total_seconds()) if e.received_at else 0.0)
        return outcome

    def _events_match_base(self, connector: Connector, events: list[InboxEvent], link: Link) -> bool:
        """Our own write coming back (or an old state we already hold): no fetch needed."""
        if not events:
            return False
        for event in events:
            seen = connector.snapshot(event.payload)
            if seen is None:
                return False
            if seen.deleted != bool(link.base.get("deleted")):
                return False
            if not seen.deleted and seen.internal_id != link.internal_id:
                return False  # our id is missing over there: worth a look (and a write-back)
            if not seen.deleted and any(link.base.get(k) != v for k, v in seen.fields.items()):
                return False
        return True

    async def _inbound_linked(self, session: AsyncSession, kind: str, link: Link, theirs: ExternalRecord,
                              theirs_at: datetime | None) -> str:
        row = await records.get(session, kind, link.internal_id)
        if theirs.deleted:
            link.base = dict(DELETED)
            if row is not None and row.deleted_at is None:
                await records.soft_delete(session, kind, row)
                link.last_pushed_version = row.version
                await self._log_ok(session, kind, link, "delete")
                return "deleted"
            return "noop"
        if row is None or row.deleted_at is not None:
            # Deleted on our side: deletion wins over their edit; outbound deletes it in Stripe.
            if not link.base.get("deleted"):
                await enqueue_outbound(session, kind, link.internal_id, reason="delete-wins")
            return "ours-deleted"
        if link.base.get("deleted"):
            link.base = {}
        if theirs.internal_id != link.internal_id:
            # Level-triggered write-back: whenever we see our id missing (or wrong), put it there.
            await self.connectors[link.system].set_internal_id(kind, link.external_id, link.internal_id,
                                            _key(link.system, kind, link.internal_id, "adopt", link.external_id))
        result = merge(link.base, row.fields(), theirs.fields, ours_changed_at=records.changed_at(row),
                       theirs_changed_at=theirs_at, policy=self.settings.sync_conflict_policy)
        for conflict in result.conflicts:
            await synclog.add(session, kind=kind, system=link.system, direction="inbound", operation="merge",
                        status="conflict", internal_id=link.internal_id, external_id=link.external_id,
                        detail={"field": conflict.field, "ours": conflict.ours, "theirs": conflict.theirs,
                                "base": conflict.base, "winner": conflict.winner,
                                "policy": self.settings.sync_conflict_policy})
        changes = result.changes_for_ours(row.fields())
        link.base = dict(theirs.fields)
        if changes:
            await records.update(session, kind, row, changes)
        if result.merged == theirs.fields:
            link.last_pushed_version = row.version  # nothing left to push
        elif not changes:
            await enqueue_outbound(session, kind, row.id, reason="merge")
        link.last_synced_at = func.now()  # type: ignore[assignment]
        if changes or result.conflicts:
            await self._log_ok(session, kind, link, "merge", detail={"fields": sorted(changes)})
        return "merged" if changes else "noop"

    async def _inbound_unlinked(self, session: AsyncSession, connector: Connector, kind: str,
                                theirs: ExternalRecord) -> str:
        if theirs.deleted:
            return "noop"
        system = connector.system
        row = None
        if theirs.internal_id is not None:
            row = await records.get(session, kind, theirs.internal_id)
            other = await LinkRepository(session).for_record(kind, theirs.internal_id, system) if row else None
            if other is not None:
                # Two Stripe customers claim one row: keep the first link, import this one as its own record.
                row = None
        if row is not None:
            link = await LinkRepository(session).add(Link(
                kind=kind, internal_id=row.id, system=system, external_id=theirs.external_id,
                base=dict(theirs.fields)))
            await enqueue_outbound(session, kind, row.id, reason="adopted")
            await self._log_ok(session, kind, link, "adopt")
            return "adopted"
        row = await records.create(session, kind, dict(theirs.fields))
        link = await LinkRepository(session).add(Link(
            kind=kind, internal_id=row.id, system=system, external_id=theirs.external_id,
            base=dict(theirs.fields), last_pushed_version=row.version))
        await self._log_ok(session, kind, link, "create")
        # If this write-back fails, the import still commits with a retry; the linked path writes it then.
        await connector.set_internal_id(kind, theirs.external_id, row.id,
                                        _key(system, kind, row.id, "adopt", theirs.external_id))
        return "created"

    async def _log_ok(self, session: AsyncSession, kind: str, link: Link, operation: str,
                detail: dict[str, Any] | None = None) -> None:
        await synclog.add(session, kind=kind, system=link.system, direction="inbound", operation=operation, status="ok",
                    internal_id=link.internal_id, external_id=link.external_id, detail=detail)

    # -- failures ------------------------------------------------------------------------------

    async def _record_failure(self, session: AsyncSession, kind: str, system: str, direction: str,
                              exc: ConnectorError, *, internal_id: int | None, external_id: str | None) -> None:
        previous = await synclog.previous_attempts(session, kind, system, direction, internal_id, external_id)
        # A 429 is the limiter's business, not the record's: it does not use up attempts.
        attempts = previous if exc.rate_limited else previous + 1
        exhausted = attempts >= self.settings.sync_max_attempts
        status = "retry" if exc.transient and not exhausted else "dead"
        await synclog.close_open(session, kind, system, direction, internal_id, external_id, include_dead=True,
                                 keep_started=True)
        delay = backoff_seconds(max(1, attempts), self.settings.sync_backoff_base_seconds,
                                self.settings.sync_backoff_max_seconds)
        await synclog.add(session, kind=kind, system=system, direction=direction,
                    operation="sync", status=status, internal_id=internal_id, external_id=external_id,
                    attempts=max(1, attempts), error=str(exc)[:1000],
                    next_attempt_at=synclog.in_seconds(delay) if status == "retry" else None)
        metrics.SYNC_RESULTS.labels(system=system, direction=direction, status=status).inc()
        logger.warning("sync failed", kind=kind, system=system, direction=direction, internal_id=internal_id,
                       external_id=external_id, status=status, attempts=attempts, error=str(exc)[:300])


_LINKED_ID = text("SELECT internal_id FROM links WHERE system = :system AND kind = :kind AND external_id = :xid")
_PENDING_PAYLOADS = text("""
    SELECT payload FROM inbox
    WHERE system = :system AND kind = :kind AND external_id = :xid AND processed_at IS NULL
    ORDER BY id DESC LIMIT 20""")
