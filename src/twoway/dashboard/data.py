"""What the dashboard shows, read in a few bounded queries. Works on any registered kind of record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.kit.records import Kind
from twoway.sync import replay as replays
from twoway.syncstate.models import SyncEvent
from twoway.syncstate.words import Direction

PER_PAGE = 25


@dataclass
class SyncState:
    external_id: str | None
    state: str
    last_error: str | None = None


@dataclass
class RecordView:
    id: int
    values: dict[str, str]
    deleted: bool
    systems: dict[str, SyncState] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.values.get("name", "")

    @property
    def email(self) -> str:
        return self.values.get("email", "")

    @property
    def label(self) -> str:
        """What the list links to the record page: the first non-empty synced field, else the id."""
        return next((v for v in self.values.values() if v), f"#{self.id}")


@dataclass
class Page:
    rows: list[RecordView]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def sync_state(*, linked: bool, deleted: bool, version: int, last_pushed: int | None, failure: str | None) -> str:
    """One word per record and system; failures win because they need a person."""
    if failure == "dead":
        return "dead"
    if failure == "retry":
        return "retrying"
    if not linked:
        return "not synced" if deleted else "pending"
    return "pending" if version > (last_pushed or 0) else "synced"


def _search_clause(kind: Kind, q: str) -> tuple[str, dict[str, Any]]:
    """Any synced field contains the text (case-insensitive); % and _ are literal, NUL is dropped."""
    q = q.replace("\x00", "").strip()
    if not q:
        return "TRUE", {}
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return "(" + " OR ".join(f"CAST(r.{f} AS text) ILIKE :q" for f in _columns(kind)) + ")", {"q": f"%{escaped}%"}


async def records_page(session: AsyncSession, kind: Kind, systems: Sequence[str], *, q: str = "", page: int = 1,
                       per_page: int = PER_PAGE) -> Page:
    # Table and column names come from the kind registry (code), never from the request.
    where, params = _search_clause(kind, q)
    total = int((await session.execute(text(f"SELECT count(*) FROM {kind.table} r WHERE {where}"), params))
                .scalar() or 0)
    columns = ", ".join(f"CAST(r.{f} AS text) AS f_{f}" for f in _columns(kind))
    rows = (await session.execute(text(f"""
        SELECT r.id, r.version, r.deleted_at IS NOT NULL AS deleted, {columns} FROM {kind.table} r
        WHERE {where} ORDER BY r.id DESC LIMIT :limit OFFSET :offset"""),
        {**params, "limit": per_page, "offset": (page - 1) * per_page})).all()
    views = [RecordView(r.id, {f: getattr(r, f"f_{f}") or "" for f in _columns(kind)}, r.deleted) for r in rows]
    await _fill_states(session, kind.name, views, {r.id: r.version for r in rows}, systems)
    return Page(views, total, page, per_page)


_LINKS = text("""SELECT internal_id, system, external_id, last_pushed_version FROM links
                 WHERE kind = :kind AND internal_id = ANY(:ids)""")
_FAILURES = text("""
    SELECT DISTINCT ON (internal_id, system) internal_id, system, status, error FROM sync_events
    WHERE kind = :kind AND internal_id = ANY(:ids) AND status IN ('retry', 'dead')
    ORDER BY internal_id, system, id DESC""")


async def _fill_states(session: AsyncSession, kind: str, views: list[RecordView], versions: dict[int, int],
                       systems: Sequence[str]) -> None:
    ids = [v.id for v in views]
    if not ids:
        return
    links = {(r.internal_id, r.system): r for r in await session.execute(_LINKS, {"kind": kind, "ids": ids})}
    failures = {(r.internal_id, r.system): r for r in await session.execute(_FAILURES, {"kind": kind, "ids": ids})}
    for view in views:
        for system in systems:
            link, failure = links.get((view.id, system)), failures.get((view.id, system))
            state = sync_state(linked=link is not None, deleted=view.deleted, version=versions[view.id],
                               last_pushed=link.last_pushed_version if link else None,
                               failure=failure.status if failure else None)
            view.systems[system] = SyncState(link.external_id if link else None, state,
                                             failure.error if failure else None)


async def record(session: AsyncSession, kind: Kind, record_id: int, systems: Sequence[str]) -> RecordView | None:
    columns = ", ".join(f"CAST(r.{f} AS text) AS f_{f}" for f in _columns(kind))
    row = (await session.execute(text(f"""
        SELECT r.id, r.version, r.deleted_at IS NOT NULL AS deleted, {columns} FROM {kind.table} r WHERE r.id = :id"""),
        {"id": record_id})).first()
    if row is None:
        return None
    view = RecordView(row.id, {f: getattr(row, f"f_{f}") or "" for f in _columns(kind)}, row.deleted)
    await _fill_states(session, kind.name, [view], {row.id: row.version}, systems)
    return view


@dataclass
class TimelineEntry:
    at: datetime
    system: str
    direction: str
    what: str  # create, update, delete, merge, customer.created (an event from them), ...
    outcome: str  # ok, retry, dead, conflict, echo, applied, waiting, ...
    detail: str = ""
    source: str = "sync"  # "sync": a row of sync_events; "event": an event the system sent us


_RECORD_EVENTS = text("""
    SELECT id, created_at, system, direction, operation, status, attempts, error, external_id FROM sync_events
    WHERE kind = :kind AND internal_id = :id ORDER BY id DESC LIMIT :limit""")
# Events the other side sent about this record's linked objects. An event handled in the same transaction
# as an inbound sync row (same now()) changed something; one handled with none was our own write coming back.
_RECORD_INBOX = text("""
    SELECT i.received_at, i.processed_at, i.system, i.event_type, i.event_id, i.source,
           (SELECT s.operation FROM sync_events s
             WHERE s.kind = i.kind AND s.system = i.system AND s.direction = 'inbound'
               AND (s.external_id = i.external_id OR s.internal_id = :id) AND s.created_at = i.processed_at
             ORDER BY s.id LIMIT 1) AS handled_by
    FROM inbox i JOIN links l ON l.system = i.system AND l.kind = i.kind AND l.external_id = i.external_id
    WHERE l.kind = :kind AND l.internal_id = :id ORDER BY i.id DESC LIMIT :limit""")


async def timeline(session: AsyncSession, kind: str, record_id: int, limit: int = 200) -> list[TimelineEntry]:
    """The record's sync history, newest first: our attempts and outcomes, and the events they sent us."""
    params = {"kind": kind, "id": record_id, "limit": limit}
    rows = sorted(await session.execute(_RECORD_EVENTS, params), key=lambda r: r.id)
    entries: list[TimelineEntry] = []
    order: list[datetime] = []
    for r in rows:
        # A row's created_at is its transaction's start, so a row written in a side transaction (a create's
        # "started" mark) can look older than the one that began first; the id is the true order.
        order.append(max(r.created_at, order[-1]) if order else r.created_at)
        entries.append(TimelineEntry(r.created_at, r.system, r.direction, r.operation, r.status,
                                     " · ".join(x for x in (r.external_id or "", f"attempt {r.attempts}"
                                                            if r.attempts > 1 else "", r.error or "") if x)))
    for r in await session.execute(_RECORD_INBOX, params):
        if r.processed_at is None:
            outcome = "waiting"
        elif r.handled_by:
            outcome = f"applied ({r.handled_by})"
        else:
            outcome = "echo"
        entries.append(TimelineEntry(r.received_at, r.system, Direction.INBOUND, r.event_type, outcome,
                                     f"{r.event_id} via {r.source}", source="event"))
        order.append(r.received_at)
    ranked = sorted(zip(order, range(len(entries)), entries, strict=True), key=lambda t: (t[0], t[1]), reverse=True)
    return [entry for _, _, entry in ranked][:limit]


@dataclass
class Series:
    """Per-minute counts for the last hour, one line per connector and direction."""

    minutes: list[datetime]
    lines: dict[str, list[float]]


_PER_MINUTE = text("""
    SELECT date_trunc('minute', created_at) AS minute, system, direction,
           count(*) FILTER (WHERE status = 'ok') AS synced,
           count(*) FILTER (WHERE error IS NOT NULL) AS failed
    FROM sync_events WHERE created_at >= date_trunc('minute', now()) - make_interval(mins => :window)
    GROUP BY 1, 2, 3""")


async def per_minute(session: AsyncSession, systems: Sequence[str], window: int = 59) -> tuple[Series, Series]:
    """Synced changes and failures per minute (a failure keeps its error after a later retry succeeds)."""
    now = (await session.execute(text("SELECT date_trunc('minute', now())"))).scalar_one()
    minutes = [now - timedelta(minutes=window - i) for i in range(window + 1)]
    index = {m: i for i, m in enumerate(minutes)}
    names = [f"{s} {d}" for s in systems for d in Direction]
    synced = Series(minutes, {n: [0.0] * len(minutes) for n in names})
    failed = Series(minutes, {n: [0.0] * len(minutes) for n in names})
    for r in await session.execute(_PER_MINUTE, {"window": window}):
        name, i = f"{r.system} {r.direction}", index.get(r.minute)
        if i is None or name not in synced.lines:
            continue
        synced.lines[name][i] += r.synced
        failed.lines[name][i] += r.failed
    return synced, failed


async def recent_events(session: AsyncSession, limit: int = 30) -> Sequence[SyncEvent]:
    stmt = select(SyncEvent).order_by(SyncEvent.id.desc()).limit(limit)
    return (await session.execute(stmt)).scalars().all()


async def dead_letters(session: AsyncSession, limit: int = 50) -> Sequence[SyncEvent]:
    return await replays.dead_letters(session, limit)


async def emulator_customers(api_base: str, timeout: float = 2.0) -> list[dict[str, Any]] | None:
    """The emulator's own view, for the side-by-side table; None when it cannot be read right now."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(api_base.rstrip("/") + "/_emulator/customers")
            response.raise_for_status()
            body = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, list) else None


def side_by_side(ours: Sequence[RecordView], theirs: list[dict[str, Any]], system: str) -> dict[str, Any]:
    """Our shown customers next to the emulator's, and the emulator's customers we have never seen."""
    by_id = {c.get("id"): c for c in theirs}
    pairs = []
    for view in ours:
        state = view.systems.get(system)
        other = by_id.get(state.external_id) if state and state.external_id else None
        same = other is not None and (other.get("name") or "") == view.name and (other.get("email") or "") == view.email
        pairs.append({"ours": view, "theirs": other, "match": same and not view.deleted})
    # Everything we created or adopted carries metadata.internal_id; the rest is unknown to us so far.
    unlinked = [c for c in theirs if not (c.get("metadata") or {}).get("internal_id")]
    return {"pairs": pairs, "unlinked": unlinked[:20], "unlinked_count": len(unlinked), "total": len(theirs)}


def _columns(kind: Kind) -> list[str]:
    """The synced fields that are columns of the kind's table (a kind with a store may sync others)."""
    table = kind.model.__table__.c
    return [f for f in kind.fields if f in table]
