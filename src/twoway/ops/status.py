"""What is behind, what failed, when things last worked: for `twoway status`, the API, the dashboard and /metrics.

One row per connector and direction. Numbers come from the database (backlogs, open and dead sync work,
last success, breaker state) and from the broker (each consumer group's lag), read at call time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twoway.connectors import registry
from twoway.kit import metrics
from twoway.kit.outbox import INBOUND_TOPIC, OUTBOUND_TOPIC
from twoway.ops.lag import LagReader, LagReading
from twoway.settings import Settings
from twoway.sync.breaker import GAUGE_VALUE

DIRECTIONS = ("outbound", "inbound")


@dataclass
class DatabaseStatus:
    summary: dict[str, Any]  # the `--json` / API shape
    outbox_by_topic: dict[str, int]
    inbox_by_system: dict[str, int]
    breakers: dict[str, dict[str, Any]]


async def read_database(session: AsyncSession) -> DatabaseStatus:
    outbox = {r[0]: int(r[1]) for r in await session.execute(text(
        "SELECT topic, count(*) FROM outbox WHERE sent_at IS NULL GROUP BY 1"))}
    inbox = {r[0]: int(r[1]) for r in await session.execute(text(
        "SELECT system, count(*) FROM inbox WHERE processed_at IS NULL GROUP BY 1"))}
    states = (await session.execute(text("""
        SELECT system, direction, status, count(*) AS n FROM sync_events
        WHERE status IN ('retry', 'requeued', 'dead', 'started') GROUP BY 1, 2, 3"""))).all()
    last_ok = (await session.execute(text("""
        SELECT system, direction, max(created_at) AS at FROM sync_events WHERE status = 'ok' GROUP BY 1, 2"""))).all()
    links = (await session.execute(text("SELECT system, count(*) FROM links GROUP BY 1"))).all()
    customers = (await session.execute(text(
        "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FROM customers"))).one()
    summary = {
        "outbox_backlog": sum(outbox.values()),
        "inbox_backlog": sum(inbox.values()),
        "customers": {"live": int(customers[0]), "total": int(customers[1])},
        "links": {r[0]: int(r[1]) for r in links},
        "sync_states": [{"system": r.system, "direction": r.direction, "status": r.status, "count": int(r.n)}
                        for r in states],
        "dead_letters": sum(int(r.n) for r in states if r.status == "dead"),
        "last_success": {f"{r.system}:{r.direction}": r.at.isoformat() for r in last_ok},
    }
    return DatabaseStatus(summary, outbox, inbox, await breakers(session))


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
        groups[(system, "outbound")] = (outbound_group(settings, system), OUTBOUND_TOPIC)
        groups[(system, "inbound")] = (inbound_group(settings), INBOUND_TOPIC)
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

    def as_dict(self, now: datetime) -> dict[str, Any]:
        age = (now - self.last_success).total_seconds() if self.last_success else None
        since = self.breaker_since.isoformat() if self.breaker_since else None
        return {"system": self.system, "direction": self.direction, "backlog": self.backlog,
                "consumer_group": self.consumer_group, "consumer_lag": self.consumer_lag,
                "retrying": self.retrying, "dead_letters": self.dead_letters,
                "breaker": self.breaker, "breaker_since": since,
                "last_success": self.last_success.isoformat() if self.last_success else None,
                "last_success_age_seconds": round(age, 1) if age is not None else None}


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
            backlog = (db.outbox_by_topic.get(OUTBOUND_TOPIC, 0) if direction == "outbound"
                       else db.inbox_by_system.get(system, 0))
            last = db.summary["last_success"].get(f"{system}:{direction}")
            rows.append(ConnectorRow(
                system=system, direction=direction, backlog=backlog, consumer_group=groups[(system, direction)][0],
                consumer_lag=behind.get(groups[(system, direction)]),
                retrying=counts.get((system, direction, "open"), 0),
                dead_letters=counts.get((system, direction, "dead"), 0),
                breaker=breaker.get("state"), breaker_since=breaker.get("since"),
                last_success=datetime.fromisoformat(last) if last else None))
    return rows


async def full_status(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                      lag_reader: LagReader | None = None) -> dict[str, Any]:
    async with sessions() as session:
        db = await read_database(session)
    status = dict(db.summary)
    readings: list[LagReading] | None = None
    try:
        readings = await read_lag(settings, reader=lag_reader)
        status["consumer_lag"] = _by_group(readings)
    except Exception as exc:
        status["consumer_lag"] = {"error": f"broker unreachable: {type(exc).__name__}"}
    status["connectors"] = [row.as_dict(datetime.now(UTC)) for row in connector_rows(settings, db, readings)]
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
    dead: dict[str, int] = {}
    for state in db.summary["sync_states"]:
        if state["status"] == "dead":
            dead[state["system"]] = dead.get(state["system"], 0) + state["count"]
    for system in registry.enabled_systems(settings):
        metrics.DEAD_LETTERS.labels(system=system).set(dead.get(system, 0))
    for system, breaker in db.breakers.items():
        metrics.CONNECTOR_BREAKER.labels(system=system).set(GAUGE_VALUE.get(breaker["state"], 2))
    for reading in await read_lag(settings, reader=lag_reader):
        if reading.behind is not None:
            metrics.CONSUMER_LAG.labels(group=reading.group, topic=reading.topic).set(reading.behind)
        else:
            metrics.LAG_READ_FAILURES.labels(group=reading.group).inc()
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(reading.group, reading.topic)
