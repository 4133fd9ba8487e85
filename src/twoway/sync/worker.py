"""The worker process: relay, one consumer group per connector, retries, sweeper, Events API poller and retention."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from aiokafka import ConsumerRecord
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twoway.connectors import registry
from twoway.connectors.base import Connector, ConnectorError
from twoway.kit import records
from twoway.kit.db import RecordLocks, make_engine, make_sessionmaker, unit_of_work
from twoway.kit.kafka import ensure_topics, make_consumer, make_producer
from twoway.kit.metrics import sample_tasks
from twoway.kit.outbox import INBOUND_TOPIC, OUTBOUND_TOPIC, enqueue, enqueue_inbound, enqueue_outbound, outbound
from twoway.kit.relay import Relay
from twoway.kit.retention import Retention
from twoway.logs import get_logger
from twoway.settings import Settings
from twoway.sync.breaker import Breaker, save_state
from twoway.sync.consumer import consume_forever
from twoway.sync.engine import Item, SyncEngine
from twoway.sync.quiet import Quiet
from twoway.syncstate.words import Direction
from twoway.webhooks.service import store_event

log = get_logger(__name__)
quiet = Quiet(log)
COMPONENTS = ("relay", "outbound", "inbound", "retry", "sweeper", "poller", "retention")


def outbound_group(settings: Settings, system: str) -> str:
    """Each connector has its own group on sync.outbound, so one system's outage never blocks another."""
    return f"{settings.kafka_group_prefix}-{system}-outbound"


def inbound_group(settings: Settings) -> str:
    return f"{settings.kafka_group_prefix}-inbound"


class Worker:
    def __init__(self, settings: Settings, *, components: Sequence[str] = COMPONENTS,
                 connectors: dict[str, Connector] | None = None) -> None:
        self.settings = settings
        self.components = set(components)
        # A small pool: calls in flight hold no connection, so hundreds of them need only a few.
        self.engine = make_engine(settings.require_database_url(), pool_size=settings.worker_db_pool_size,
                                  max_overflow=0, application_name=settings.db_application_name)
        self.sessions: async_sessionmaker[AsyncSession] = make_sessionmaker(self.engine)
        self.connectors = connectors if connectors is not None else {
            name: registry.build(name, settings) for name in registry.enabled_systems(settings)}
        self.locks = RecordLocks(settings.require_database_url(), application_name=settings.db_application_name)
        self._closed_again: set[str] = set()
        breakers = {system: Breaker.from_settings(system, settings, on_change=self._breaker_moved)
                    for system in self.connectors}
        self.sync = SyncEngine(self.sessions, self.connectors, settings, locks=self.locks, breakers=breakers)
        self.stop = asyncio.Event()
        self._waiting: set[str] = set()

    async def run(self) -> None:
        await ensure_topics(self.settings.require_kafka(), self.settings.kafka_topic_partitions)
        if self.settings.worker_metrics_port:
            from prometheus_client import start_http_server

            start_http_server(self.settings.worker_metrics_port, addr=self.settings.api_host)
        loops = self._loops()
        self._waiting = {name for name, _ in loops if name.startswith(("outbound:", "inbound"))}
        tasks = [asyncio.create_task(coro, name=name) for name, coro in loops]
        tasks.append(asyncio.create_task(self._announce_ready()))
        tasks.append(asyncio.create_task(sample_tasks(self.stop)))
        log.info("worker started", components=sorted(self.components), systems=sorted(self.connectors))
        try:
            await self.stop.wait()
        finally:
            # Loops see `stop` and finish what is in flight (calls made are written back); then cancel.
            await asyncio.wait(tasks, timeout=15)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for connector in self.connectors.values():
                await connector.close()
            await self.locks.close()
            await self.engine.dispose()

    def _loops(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        loops: list[tuple[str, Coroutine[Any, Any, None]]] = []
        if "relay" in self.components:
            loops.append(("relay", self._relay()))
        for system in self.connectors:
            if "outbound" in self.components:
                name = f"outbound:{system}"
                loops.append((name, self._consume(OUTBOUND_TOPIC, outbound_group(self.settings, system),
                                                  functools.partial(_outbound_items, system), self._assigned(name))))
        if "inbound" in self.components and self.connectors:
            loops.append(("inbound", self._consume(INBOUND_TOPIC, inbound_group(self.settings),
                                                   functools.partial(_inbound_items, set(self.connectors)),
                                                   self._assigned("inbound"))))
        if "retry" in self.components:
            loops.append(("retry", self._every(1.0, self.requeue_due)))
        if "sweeper" in self.components:
            loops.append(("sweeper", self._every(self.settings.sweeper_interval_seconds, self.sweep)))
        if "retention" in self.components:
            retention = Retention.from_settings(self.sessions, self.settings, self.stop)
            loops.append(("retention", self._every(self.settings.retention_interval_seconds, retention.run)))
        if self.connectors and ({"outbound", "inbound"} & self.components):
            loops.append(("breakers", self._every(1.0, self.save_breakers)))
        if "poller" in self.components:
            for system, connector in self.connectors.items():
                # A system without webhooks (Salesforce) is always polled; the others when INBOUND_MODE says.
                if not connector.polls or (self.settings.inbound_mode == "webhook" and connector.webhooks):
                    continue
                loops.append((f"poller:{system}", self._every(self.settings.poll_interval_seconds,
                                                              functools.partial(self.poll, connector))))
        return loops

    async def _relay(self) -> None:
        producer = make_producer(self.settings)
        while not self.stop.is_set():
            try:
                await producer.start()
                break
            except Exception as exc:
                quiet.warning("producer start failed; retrying", error=repr(exc)[:200])
                await asyncio.sleep(1)
        try:
            relay = Relay(producer, self.settings.require_database_url(),
                          poll_seconds=self.settings.relay_poll_seconds, on_error=self._ensure_topics)
            await relay.run(self.stop)
        finally:
            await producer.stop()

    async def _announce_ready(self, patience: float = 20.0) -> None:
        """Tell `twoway dev` when every consumer holds partitions (or has waited long enough)."""
        deadline = asyncio.get_running_loop().time() + patience
        while self._waiting and asyncio.get_running_loop().time() < deadline and not self.stop.is_set():
            await asyncio.sleep(0.1)
        log.info("worker ready", waiting_for=sorted(self._waiting))
        if self.settings.worker_ready_file:
            with contextlib.suppress(OSError), open(self.settings.worker_ready_file, "w") as f:
                f.write("ready\n")

    def _assigned(self, name: str) -> Callable[[], None]:
        return lambda: self._waiting.discard(name)

    async def _ensure_topics(self) -> None:
        await ensure_topics(self.settings.require_kafka(), self.settings.kafka_topic_partitions, timeout=5)

    async def _consume(self, topic: str, group: str, to_items: Callable[[ConsumerRecord], list[Item]],
                       on_assigned: Callable[[], None] | None = None) -> None:
        await consume_forever(functools.partial(make_consumer, self.settings, topic, group), group, self.sync,
                              to_items, self.stop, on_assigned=on_assigned,
                              stall_seconds=self.settings.kafka_consumer_stall_seconds,
                              linger_ms=self.settings.sync_linger_ms, max_in_flight=self.settings.sync_max_in_flight)

    async def _every(self, seconds: float, fn: Callable[[], Awaitable[Any]]) -> None:
        while not self.stop.is_set():
            try:
                await fn()
            except Exception as exc:
                name = getattr(fn, "__name__", "task")
                quiet.warning("periodic task failed", key=name, task=name, error=repr(exc)[:300])
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), seconds)

    # -- breakers --------------------------------------------------------------------------------

    def _breaker_moved(self, breaker: Breaker, old: str) -> None:
        log.warning("circuit breaker", system=breaker.system, state=breaker.state, was=old,
                    failures=breaker.consecutive_failures)
        if breaker.state == "closed":
            self._closed_again.add(breaker.system)

    async def save_breakers(self) -> None:
        """Make each breaker visible (status, dashboard); when one closes, release what it held back."""
        async with unit_of_work(self.sessions) as session:
            for system, breaker in self.sync.breakers.items():
                await save_state(session, system, breaker)
        for system in list(self._closed_again):
            self._closed_again.discard(system)
            await self.sync.wake(system)

    # -- periodic work ---------------------------------------------------------------------------

    async def requeue_due(self) -> int:
        """Retries whose time has come go back through the outbox, the one path into the handlers."""
        async with unit_of_work(self.sessions) as session:
            rows = (await session.execute(text("""
                UPDATE sync_events SET status = 'requeued', updated_at = now()
                WHERE id IN (SELECT id FROM sync_events WHERE status = 'retry' AND next_attempt_at <= now()
                             ORDER BY next_attempt_at LIMIT 500 FOR UPDATE SKIP LOCKED)
                RETURNING kind, internal_id, external_id, system, direction"""))).all()
            for r in {(r.direction, r.kind, r.internal_id, r.external_id, r.system) for r in rows}:
                await _enqueue_for(session, *r)
        return len(rows)

    async def sweep(self) -> int:
        """The safety net: re-enqueue records ahead of their links and inbox events left behind.

        Without flooding: a record is swept at most once per `sweeper_resweep_seconds` (each sweep is
        marked in the sync log), and never while a retry is scheduled or a message for it still waits in
        the outbox (the broker is down: the relay will send it).
        """
        grace = self.settings.sweeper_grace_seconds
        again = self.settings.sweeper_resweep_seconds
        count = 0
        async with unit_of_work(self.sessions) as session:
            for system, connector in self.connectors.items():
                for kind in records.all_kinds():
                    if kind.name not in connector.kinds:
                        continue
                    rows = (await session.execute(_sweep_records(kind.table), {
                        "system": system, "grace": grace, "kind": kind.name, "again": again})).all()
                    await enqueue(session, [outbound(kind.name, r.id, reason="sweep") for r in rows])
                    await _mark_swept(session, kind.name, system, Direction.OUTBOUND, [r.id for r in rows], None)
                    count += len(rows)
            events = (await session.execute(SWEEP_INBOX, {"grace": grace, "again": again})).all()
            for e in events:
                await enqueue_inbound(session, e.system, e.kind, e.external_id)
            for (system, kind_name), xids in _by_pair(events).items():
                await _mark_swept(session, kind_name, system, Direction.INBOUND, None, xids)
            count += len(events)
        if count:
            log.info("sweeper re-enqueued work", count=count)
        return count

    async def poll(self, connector: Connector) -> int:
        name = f"{connector.system}:events"
        async with self.sessions() as session:
            cursor = (await session.execute(text("SELECT value FROM cursors WHERE name = :n"),
                                            {"n": name})).scalar()
        try:
            events, new_cursor = await connector.poll_events(cursor)
        except ConnectorError as exc:
            quiet.warning("poll failed", key=connector.system, system=connector.system, error=str(exc)[:200])
            return 0
        async with unit_of_work(self.sessions) as session:
            for event in events:
                await store_event(session, connector.system, event, source="poll")
            await session.execute(text("""
                INSERT INTO cursors (name, value) VALUES (:n, :v)
                ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()"""),
                {"n": name, "v": new_cursor or ""})
        return len(events)


def _outbound_items(system: str, record: ConsumerRecord) -> list[Item]:
    p = _payload(record)
    if p is None or "id" not in p or "kind" not in p:
        return []
    try:
        return [Item(Direction.OUTBOUND, str(p["kind"]), system, internal_id=int(p["id"]))]
    except (TypeError, ValueError):
        return []


def _inbound_items(systems: set[str], record: ConsumerRecord) -> list[Item]:
    # An object named only by events is looked at only if one of its events is still pending;
    # a message without an event (reconcile, retry, sweeper) always gets a read.
    p = _payload(record)
    if p is None or p.get("system") not in systems or not p.get("external_id") or not p.get("kind"):
        return []
    hint = p.get("hint")
    return [Item(Direction.INBOUND, str(p["kind"]), str(p["system"]), external_id=str(p["external_id"]),
                 hint_only=bool(p.get("event_id")), hint=int(hint) if isinstance(hint, int) else None)]


def _payload(record: ConsumerRecord) -> dict[str, Any] | None:
    try:
        payload = json.loads(record.value)
    except (TypeError, ValueError):
        log.warning("skipping undecodable message", offset=record.offset)
        return None
    return payload if isinstance(payload, dict) else None


def _by_pair(events: Sequence[Any]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for e in events:
        out.setdefault((e.system, e.kind), []).append(e.external_id)
    return out


_MARK_SWEPT = text("""
    INSERT INTO sync_events (kind, system, direction, operation, status, internal_id, external_id)
    SELECT :kind, :system, :direction, 'sweep', 'swept', v.iid, v.xid
    FROM unnest(CAST(:iids AS bigint[]), CAST(:xids AS text[])) AS v(iid, xid)""")


async def _mark_swept(session: AsyncSession, kind: str, system: str, direction: str,
                      iids: list[int] | None, xids: list[str] | None) -> None:
    n = len(iids or xids or [])
    if n:
        none: list[None] = [None] * n
        await session.execute(_MARK_SWEPT, {"kind": kind, "system": system, "direction": direction,
                                            "iids": iids or none, "xids": xids or none})


def _sweep_records(table: str) -> Any:
    # The table name comes from the kind registry, never from input. Skipped: records with a retry
    # scheduled or a sweep in the last `again` seconds (their message is on its way), and records parked
    # dead at their current version (a person decides; a newer version is swept again).
    return text(f"""
    SELECT c.id FROM {table} c
    LEFT JOIN links l ON l.kind = :kind AND l.internal_id = c.id AND l.system = :system
    WHERE c.version > COALESCE(l.last_pushed_version, 0)
      AND c.updated_at < now() - make_interval(secs => :grace)
      AND NOT (c.deleted_at IS NOT NULL AND l.id IS NULL)
      AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.sent_at IS NULL AND o.key = :kind || ':' || c.id)
      AND NOT EXISTS (
          SELECT 1 FROM sync_events s WHERE s.kind = :kind AND s.internal_id = c.id AND s.system = :system
            AND s.direction = 'outbound' AND (
                (s.status IN ('retry', 'requeued', 'swept') AND s.updated_at > now() - make_interval(secs => :again))
                OR (s.status = 'retry' AND s.next_attempt_at > now())
                OR (s.status = 'dead' AND COALESCE(CAST(s.detail ->> 'version' AS int), c.version) >= c.version)))
    ORDER BY c.id LIMIT 1000
    """)


SWEEP_INBOX = text("""
    SELECT DISTINCT i.system, i.kind, i.external_id FROM inbox i
    WHERE i.processed_at IS NULL AND i.received_at < now() - make_interval(secs => :grace)
      AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.sent_at IS NULL
                      AND o.key = i.system || ':' || i.kind || ':' || i.external_id)
      AND NOT EXISTS (
          SELECT 1 FROM sync_events s WHERE s.system = i.system AND s.kind = i.kind AND s.external_id = i.external_id
            AND s.direction = 'inbound' AND (
                (s.status IN ('retry', 'requeued', 'swept') AND s.updated_at > now() - make_interval(secs => :again))
                OR (s.status = 'retry' AND s.next_attempt_at > now())))
    LIMIT 1000
""")


async def _enqueue_for(session: AsyncSession, direction: str, kind: str, internal_id: int | None,
                       external_id: str | None, system: str) -> None:
    if direction == Direction.OUTBOUND and internal_id is not None:
        await enqueue_outbound(session, kind, internal_id, reason="retry")
    elif external_id is not None:
        await enqueue_inbound(session, system, kind, external_id)
