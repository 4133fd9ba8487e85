"""What is behind, what failed, when things last worked: for `twoway status`, the API, the dashboard and /metrics.

One row per connector and direction. Numbers come from the database (backlogs, open and dead sync work,
last success, breaker state) and from the broker (each consumer group's lag), read at call time; and, for
people (not /metrics), each table's size and oldest kept row (`ops.storage`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twoway.connectors import registry
from twoway.kit import metrics, records
from twoway.kit.outbox import INBOUND_TOPIC, OUTBOUND_TOPIC
from twoway.kit.retention import Windows
from twoway.ops import storage
from twoway.ops.lag import LagReader, LagReading
from twoway.settings import Settings
from twoway.sync.breaker import GAUGE_VALUE
from twoway.syncstate.words import Direction

DIRECTIONS = tuple(Direction)


@dataclass
class DatabaseStatus:
    summary: dict[str, Any]  # the `--json` / API shape
    outbox_by_topic: dict[str, int]
    inbox_by_system: dict[str, int]
    breakers: dict[str, dict[str, Any]]
    # The same counts split by kind of record: outbound messages not yet published, by kind; inbox, by
    # (system, kind); open and dead sync work and the last success, by (system, direction, kind).
    outbox_by_kind: dict[str, int] = field(default_factory=dict)
    inbox_by_kind: dict[tuple[str, str], int] = field(default_factory=dict)
    states_by_kind: list[dict[str, Any]] = field(default_factory=list)
    last_ok_by_kind: dict[tuple[str, str, str], datetime] = field(default_factory=dict)
    links_by_kind: dict[tuple[str, str], int] = field(default_factory=dict)


def _kinds() -> list[records.Kind]:
    try:
        return records.all_kinds()
    except RuntimeError:  # an entry point that registered no kind: the per-kind counts are left out
        return []


async def read_database(session: AsyncSession) -> DatabaseStatus:
    outbox_kinds = {(r[0], r[1] or ""): int(r[2]) for r in await session.execute(text(
        "SELECT topic, payload ->> 'kind', count(*) FROM outbox WHERE sent_at IS NULL GROUP BY 1, 2"))}
    outbox: dict[str, int] = {}
    for (topic, _), n in outbox_kinds.items():
        outbox[topic] = outbox.get(topic, 0) + n
    inbox_kinds = {(r[0], r[1]): int(r[2]) for r in await session.execute(text(
        "SELECT system, kind, count(*) FROM inbox WHERE processed_at IS NULL GROUP BY 1, 2"))}
    inbox: dict[str, int] = {}
    for (system, _), n in inbox_kinds.items():
        inbox[system] = inbox.get(system, 0) + n
    states = (await session.execute(text("""
        SELECT system, direction, kind, status, count(*) AS n FROM sync_events
        WHERE status IN ('retry', 'requeued', 'dead', 'started') GROUP BY 1, 2, 3, 4"""))).all()
    last_ok = (await session.execute(text("""
        SELECT system, direction, kind, max(created_at) AS at FROM sync_events WHERE status = 'ok'
        GROUP BY 1, 2, 3"""))).all()
    links = (await session.execute(text("SELECT system, kind, count(*) FROM links GROUP BY 1, 2"))).all()
    customers = (await session.execute(text(
        "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FROM customers"))).one()
    kinds: dict[str, Any] = {}
    for kind in _kinds():  # table names come from the kind registry, never from input
        live, total = (await session.execute(text(
            f"SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FROM {kind.table}"))).one()
        kinds[kind.name] = {"live": int(live), "total": int(total),
                            "links": {r[0]: int(r[2]) for r in links if r[1] == kind.name}}
    last: dict[str, datetime] = {}
    for r in last_ok:
        key = f"{r.system}:{r.direction}"
        last[key] = max(last.get(key, r.at), r.at)
    link_totals: dict[str, int] = {}
    for r in links:
        link_totals[r[0]] = link_totals.get(r[0], 0) + int(r[2])
    by_state: dict[tuple[str, str, str], int] = {}
    for r in states:
        by_state[(r.system, r.direction, r.status)] = by_state.get((r.system, r.direction, r.status), 0) + int(r.n)
    by_kind = [{"system": r.system, "direction": r.direction, "kind": r.kind, "status": r.status, "count": int(r.n)}
               for r in states]
    summary = {
        "outbox_backlog": sum(outbox.values()),
        "inbox_backlog": sum(inbox.values()),
        "customers": {"live": int(customers[0]), "total": int(customers[1])},
        "links": link_totals,
        "sync_states": [{"system": system, "direction": direction, "status": status, "count": n}
                        for (system, direction, status), n in by_state.items()],
        "dead_letters": sum(int(r.n) for r in states if r.status == "dead"),
        "last_success": {key: at.isoformat() for key, at in last.items()},
        # Added with invoices: every kind's records and links; the open work of each kind.
        "records": kinds,
        "sync_states_by_kind": by_kind,
    }
    return DatabaseStatus(summary, outbox, inbox, await breakers(session),
                          outbox_by_kind={k: n for (t, k), n in outbox_kinds.items() if t == OUTBOUND_TOPIC},
                          inbox_by_kind=inbox_kinds,
                          states_by_kind=by_kind,
                          last_ok_by_kind={(r.system, r.direction, r.kind): r.at for r in last_ok},
                          links_by_kind={(r[0], r[1]): int(r[2]) for r in links})


async def database_status(session: AsyncSession) -> dict[str, Any]:
    return (await read_database(session)).summary


async def breakers(session: AsyncSession) -> dict[str, dict[str, Any]]:
    """Each connector's circuit breaker as its worker last saved it; empty where that table does not exist."""
    exists = (await session.execute(text("SELECT to_regclass('connector_state') IS NOT NULL"))).scalar()
    if not exists:
        return {}
    rows = await session.execute(text("SELECT system, breaker, since FROM connector_state"))
    return {r.system: {"state": r.breaker, "since": r.since} for r in rows}


def lag_groups(settings: Settings) -> dict[tuple[str, str], tuple[str, str]]:
    """(system, direction) -> (consumer group, topic). Inbound work of every system shares one group."""
    from twoway.sync.worker import inbound_group, outbound_group

    groups: dict[tuple[str, str], tuple[str, str]] = {}
    for system in registry.enabled_systems(settings):
        groups[(system, Direction.OUTBOUND)] = (outbound_group(settings, system), OUTBOUND_TOPIC)
        groups[(system, Direction.INBOUND)] = (inbound_group(settings), INBOUND_TOPIC)
    return groups


async def read_lag(settings: Settings, timeout: float = 5.0, reader: LagReader | None = None) -> list[LagReading]:
    """Every group's lag, read now; with no long-lived `reader`, over a connection made for this read."""
    pairs = sorted(set(lag_groups(settings).values()))
    if reader is not None:
        return await reader.read(settings.require_kafka(), pairs)
    once = LagReader(timeout)
    try:
        return await once.read(settings.require_kafka(), pairs)
    finally:
        await once.close()


class BrokerUnreachable(Exception):
    pass


async def consumer_lag(settings: Settings, timeout: float = 5.0) -> dict[str, dict[str, int]]:
    """{group: {topic: messages behind}} for the groups that could be read; raises when none could."""
    return _by_group(await read_lag(settings, timeout))


def _by_group(readings: list[LagReading]) -> dict[str, dict[str, int]]:
    if readings and all(r.behind is None for r in readings):
        raise BrokerUnreachable(readings[0].error)
    lag: dict[str, dict[str, int]] = {}
    for r in readings:
        if r.behind is not None:
            lag.setdefault(r.group, {})[r.topic] = r.behind
    return lag


@dataclass(frozen=True)
class KindRow:
    """One kind's share of a connector and direction's work (lag and breaker are the connector's own)."""

    kind: str
    backlog: int
    retrying: int
    dead_letters: int
    last_success: datetime | None

    def as_dict(self, now: datetime) -> dict[str, Any]:
        age = (now - self.last_success).total_seconds() if self.last_success else None
        return {"backlog": self.backlog, "retrying": self.retrying, "dead_letters": self.dead_letters,
                "last_success": self.last_success.isoformat() if self.last_success else None,
                "last_success_age_seconds": round(age, 1) if age is not None else None}


@dataclass(frozen=True)
class ConnectorRow:
    system: str
    direction: str
    backlog: int
    consumer_group: str
    consumer_lag: int | None
    retrying: int
    dead_letters: int
    breaker: str | None
    breaker_since: datetime | None
    last_success: datetime | None
    kinds: tuple[KindRow, ...] = ()

    def as_dict(self, now: datetime) -> dict[str, Any]:
        age = (now - self.last_success).total_seconds() if self.last_success else None
        since = self.breaker_since.isoformat() if self.breaker_since else None
        return {"system": self.system, "direction": self.direction, "backlog": self.backlog,
                "consumer_group": self.consumer_group, "consumer_lag": self.consumer_lag,
                "retrying": self.retrying, "dead_letters": self.dead_letters,
                "breaker": self.breaker, "breaker_since": since,
                "last_success": self.last_success.isoformat() if self.last_success else None,
                "last_success_age_seconds": round(age, 1) if age is not None else None,
                "kinds": {k.kind: k.as_dict(now) for k in self.kinds}}


def _kind_rows(db: DatabaseStatus, system: str, direction: str) -> tuple[KindRow, ...]:
    """The kinds this connector has dealt with (links, sync work, events), in registration order."""
    counts: dict[tuple[str, str], int] = {}
    seen: set[str] = set()
    for s in db.states_by_kind:
        if s["system"] == system:
            seen.add(s["kind"])
            if s["direction"] == direction:
                key = (s["kind"], "dead" if s["status"] == "dead" else "open")
                counts[key] = counts.get(key, 0) + s["count"]
    seen |= {k for (sys_, _d, k) in db.last_ok_by_kind if sys_ == system}
    seen |= {k for (sys_, k) in db.inbox_by_kind if sys_ == system}
    seen |= {k for (sys_, k) in db.links_by_kind if sys_ == system}
    rows = []
    for kind in [k.name for k in _kinds() if k.name in seen] + sorted(seen - {k.name for k in _kinds()}):
        backlog = (db.outbox_by_kind.get(kind, 0) if direction == Direction.OUTBOUND
                   else db.inbox_by_kind.get((system, kind), 0))
        rows.append(KindRow(kind, backlog, counts.get((kind, "open"), 0), counts.get((kind, "dead"), 0),
                            db.last_ok_by_kind.get((system, direction, kind))))
    return tuple(rows)


def connector_rows(settings: Settings, db: DatabaseStatus, lag: list[LagReading] | None) -> list[ConnectorRow]:
    """Backlog: outbound, messages not yet published (shared by every connector); inbound, the system's
    stored events not yet handled. Lag: what the direction's consumer group has not yet committed."""
    behind = {(r.group, r.topic): r.behind for r in lag or []}
    groups = lag_groups(settings)
    counts: dict[tuple[str, str, str], int] = {}
    for s in db.summary["sync_states"]:
        key = (s["system"], s["direction"], "dead" if s["status"] == "dead" else "open")
        counts[key] = counts.get(key, 0) + s["count"]
    rows = []
    for system in registry.enabled_systems(settings):
        breaker = db.breakers.get(system) or {}
        for direction in DIRECTIONS:
            backlog = (db.outbox_by_topic.get(OUTBOUND_TOPIC, 0) if direction == Direction.OUTBOUND
                       else db.inbox_by_system.get(system, 0))
            last = db.summary["last_success"].get(f"{system}:{direction}")
            rows.append(ConnectorRow(
                system=system, direction=direction, backlog=backlog, consumer_group=groups[(system, direction)][0],
                consumer_lag=behind.get(groups[(system, direction)]),
                retrying=counts.get((system, direction, "open"), 0),
                dead_letters=counts.get((system, direction, "dead"), 0),
                breaker=breaker.get("state"), breaker_since=breaker.get("since"),
                last_success=datetime.fromisoformat(last) if last else None,
                kinds=_kind_rows(db, system, direction)))
    return rows


async def full_status(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                      lag_reader: LagReader | None = None) -> dict[str, Any]:
    async with sessions() as session:
        db = await read_database(session)
        tables = await storage.read_tables(session, Windows.from_settings(settings))
    status = dict(db.summary)
    readings: list[LagReading] | None = None
    try:
        readings = await read_lag(settings, reader=lag_reader)
        status["consumer_lag"] = _by_group(readings)
    except Exception as exc:
        status["consumer_lag"] = {"error": f"broker unreachable: {type(exc).__name__}"}
    status["connectors"] = [row.as_dict(datetime.now(UTC)) for row in connector_rows(settings, db, readings)]
    status["tables"] = tables
    return status


async def refresh_gauges(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                         lag_reader: LagReader | None = None) -> None:
    """Set the database- and broker-backed gauges, at scrape time.

    A lag that cannot be read is removed, not left at its last value: a stale number that looks current
    is worse than a missing one (absent() alerts on it), and a failed read is counted.
    """
    async with sessions() as session:
        db = await read_database(session)
    metrics.OUTBOX_BACKLOG.set(db.summary["outbox_backlog"])
    metrics.INBOX_BACKLOG.set(db.summary["inbox_backlog"])
    kinds = [k.name for k in _kinds()]
    for kind in {*kinds, *db.outbox_by_kind}:
        metrics.OUTBOX_BACKLOG_BY_KIND.labels(kind=kind).set(db.outbox_by_kind.get(kind, 0))
    dead: dict[tuple[str, str], int] = {}
    for state in db.states_by_kind:
        if state["status"] == "dead":
            key = (state["system"], state["kind"])
            dead[key] = dead.get(key, 0) + state["count"]
    for system in registry.enabled_systems(settings):
        # Every kind at 0 too: a series that exists only while something is dead cannot be alerted on well.
        for kind in {*kinds, *(k for s, k in dead if s == system)}:
            metrics.DEAD_LETTERS.labels(system=system, kind=kind).set(dead.get((system, kind), 0))
        for kind in {*kinds, *(k for s, k in db.inbox_by_kind if s == system)}:
            metrics.INBOX_BACKLOG_BY_KIND.labels(system=system, kind=kind).set(db.inbox_by_kind.get((system, kind), 0))
    for system, breaker in db.breakers.items():
        metrics.CONNECTOR_BREAKER.labels(system=system).set(GAUGE_VALUE.get(breaker["state"], 2))
    for reading in await read_lag(settings, reader=lag_reader):
        if reading.behind is not None:
            metrics.CONSUMER_LAG.labels(group=reading.group, topic=reading.topic).set(reading.behind)
        else:
            metrics.LAG_READ_FAILURES.labels(group=reading.group).inc()
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(reading.group, reading.topic)
