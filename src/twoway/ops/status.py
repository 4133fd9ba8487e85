"""What is behind, what failed, when things last worked: for `twoway status`, the API and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twoway.connectors import registry
from twoway.kit import metrics
from twoway.kit.outbox import INBOUND_TOPIC, OUTBOUND_TOPIC
from twoway.settings import Settings


async def database_status(session: AsyncSession) -> dict[str, Any]:
    outbox = (await session.execute(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))).scalar() or 0
    inbox = (await session.execute(text("SELECT count(*) FROM inbox WHERE processed_at IS NULL"))).scalar() or 0
    states = (await session.execute(text("""
        SELECT system, direction, status, count(*) AS n FROM sync_events
        WHERE status IN ('retry', 'requeued', 'dead', 'started') GROUP BY 1, 2, 3"""))).all()
    last_ok = (await session.execute(text("""
        SELECT system, direction, max(created_at) AS at FROM sync_events WHERE status = 'ok' GROUP BY 1, 2"""))).all()
    links = (await session.execute(text("SELECT system, count(*) FROM links GROUP BY 1"))).all()
    customers = (await session.execute(text(
        "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FROM customers"))).one()
    return {
        "outbox_backlog": int(outbox),
        "inbox_backlog": int(inbox),
        "customers": {"live": int(customers[0]), "total": int(customers[1])},
        "links": {r[0]: int(r[1]) for r in links},
        "sync_states": [{"system": r.system, "direction": r.direction, "status": r.status, "count": int(r.n)}
                        for r in states],
        "dead_letters": sum(int(r.n) for r in states if r.status == "dead"),
        "last_success": {f"{r.system}:{r.direction}": r.at.isoformat() for r in last_ok},
    }


async def consumer_lag(settings: Settings, timeout: float = 5.0) -> dict[str, dict[str, int]]:
    """Messages between each group's committed offset and the end of its topic."""
    from twoway.sync.worker import inbound_group, outbound_group

    groups = {outbound_group(settings, s): OUTBOUND_TOPIC for s in registry.enabled_systems(settings)}
    groups[inbound_group(settings)] = INBOUND_TOPIC
    lag: dict[str, dict[str, int]] = {}
    for group, topic in groups.items():
        behind = await _group_lag(settings.require_kafka(), group, topic, timeout)
        if behind is not None:
            lag[group] = {topic: behind}
    return lag


async def _group_lag(bootstrap: str, group: str, topic: str, timeout: float) -> int | None:
    # A consumer that never subscribes reads the group's offsets without joining it. (The admin client's
    # OffsetFetch is not understood by the dev broker, Tansu; the consumer's is, and by Kafka too.)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(probe.start(), timeout)
        tps = [TopicPartition(topic, p) for p in probe.partitions_for_topic(topic) or set()]
        if not tps:
            return None
        ends = await asyncio.wait_for(probe.end_offsets(tps), timeout)
        committed = [await asyncio.wait_for(probe.committed(tp), timeout) for tp in tps]
        return int(sum(max(0, ends[tp] - (c or 0)) for tp, c in zip(tps, committed, strict=True)))
    finally:
        with contextlib.suppress(Exception):
            await probe.stop()


async def full_status(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> dict[str, Any]:
    async with sessions() as session:
        status = await database_status(session)
    try:
        status["consumer_lag"] = await consumer_lag(settings)
    except Exception as exc:
        status["consumer_lag"] = {"error": f"broker unreachable: {type(exc).__name__}"}
    return status


async def refresh_gauges(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    async with sessions() as session:
        status = await database_status(session)
    metrics.OUTBOX_BACKLOG.set(status["outbox_backlog"])
    metrics.INBOX_BACKLOG.set(status["inbox_backlog"])
    dead: dict[str, int] = {}
    for state in status["sync_states"]:
        if state["status"] == "dead":
            dead[state["system"]] = dead.get(state["system"], 0) + state["count"]
    for system in registry.enabled_systems(settings):
        metrics.DEAD_LETTERS.labels(system=system).set(dead.get(system, 0))
    with contextlib.suppress(Exception):
        for group, topics in (await consumer_lag(settings, timeout=2.0)).items():
            for topic, behind in topics.items():
                metrics.CONSUMER_LAG.labels(group=group, topic=topic).set(behind)
