"""The worker process: relay, one consumer group per connector, retries, sweeper and Events API poller."""

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
from twoway.kit.db import make_engine, make_sessionmaker, unit_of_work
from twoway.kit.kafka import ensure_topics, make_consumer, make_producer
from twoway.kit.outbox import INBOUND_TOPIC, OUTBOUND_TOPIC, enqueue_inbound, enqueue_outbound
from twoway.kit.relay import Relay
from twoway.logs import get_logger
from twoway.settings import Settings
from twoway.sync.consumer import consume
from twoway.sync.engine import SyncEngine
from twoway.webhooks.service import store_event

log = get_logger(__name__)
COMPONENTS = ("relay", "outbound", "inbound", "retry", "sweeper", "poller")


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
        self.engine = make_engine(settings.require_database_url())
        self.sessions: async_sessionmaker[AsyncSession] = make_sessionmaker(self.engine)
        self.connectors = connectors if connectors is not None else {
            name: registry.build(name, settings) for name in registry.enabled_systems(settings)}
        self.sync = SyncEngine(self.sessions, self.connectors, settings)
        self.stop = asyncio.Event()
        self._semaphore = asyncio.Semaphore(settings.sync_concurrency)
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
        log.info("worker started", components=sorted(self.components), systems=sorted(self.connectors))
        try:
            await self.stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for connector in self.connectors.values():
                await connector.close()
            await self.engine.dispose()

    def _loops(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        loops: list[tuple[str, Coroutine[Any, Any, None]]] = []
        if "relay" in self.components:
            loops.append(("relay", self._relay()))
        for system in self.connectors:
            if "outbound" in self.components:
                name = f"outbound:{system}"
                loops.append((name, self._consume(OUTBOUND_TOPIC, outbound_group(self.settings, system),
                                                  self._outbound_batch(system), self._assigned(name))))
        if "inbound" in self.components and self.connectors:
            loops.append(("inbound", self._consume(INBOUND_TOPIC, inbound_group(self.settings), self._inbound_batch,
                                                   self._assigned("inbound"))))
        if "retry" in self.components:
            loops.append(("retry", self._every(1.0, self.requeue_due)))
        if "sweeper" in self.components:
            loops.append(("sweeper", self._every(self.settings.sweeper_interval_seconds, self.sweep)))
        if "poller" in self.components:
            for system, connector in self.connectors.items():
                # A system without webhooks (Salesforce) is always polled; the others when INBOUND_MODE says.
                if self.settings.inbound_mode == "webhook" and getattr(connector, "webhooks", True):
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
                log.warning("producer start failed; retrying", error=repr(exc)[:200])
                await asyncio.sleep(1)
        try:
            relay = Relay(self.sessions, producer, self.settings.require_database_url(),
                          poll_seconds=self.settings.relay_poll_seconds, on_error=self._ensure_topics)
            await relay.run(self.stop)
        finally:
            await producer.stop()

    async def _announce_ready(self, patience: float = 20.0) -> None:
        """Tell `twoway dev` when every consumer holds partitions (or has waited long enough)."""
        deadline = asyncio.get_running_loop().time() + patience
        while self._waiting and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        log.info("worker ready", waiting_for=sorted(self._waiting))
        if self.settings.worker_ready_file:
            with contextlib.suppress(OSError), open(self.settings.worker_ready_file, "w") as f:
                f.write("ready\n")

    def _assigned(self, name: str) -> Callable[[], None]:
        return lambda: self._waiting.discard(name)

    async def _ensure_topics(self) -> None:
        await ensure_topics(self.settings.require_kafka(), self.settings.kafka_topic_partitions, timeout=5)

    async def _consume(self, topic: str, group: str,
                       handle: Callable[[Sequence[ConsumerRecord]], Awaitable[None]],
                       on_assigned: Callable[[], None] | None = None) -> None:
        consumer = make_consumer(self.settings, topic, group)
        while not self.stop.is_set():
            try:
                await consumer.start()
                break
            except Exception as exc:
                log.warning("consumer start failed; retrying", group=group, error=repr(exc)[:200])
                await asyncio.sleep(1)
        try:
            await consume(consumer, group, handle, self.stop, on_assigned=on_assigned,
                          linger_ms=self.settings.sync_linger_ms)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _outbound_batch(self, system: str) -> Callable[[Sequence[ConsumerRecord]], Awaitable[None]]:
        async def handle(records: Sequence[ConsumerRecord]) -> None:
            # Many messages about one record are one unit of work: the handler reads current state anyway.
            targets = {(p["kind"], int(p["id"])) for p in _payloads(records) if "id" in p}
            await self._bounded([self.sync.outbound(kind, rid, system) for kind, rid in targets])
        return handle

    async def _inbound_batch(self, records: Sequence[ConsumerRecord]) -> None:
        # An object named only by events is looked at only if one of its events is still pending;
        # a message without an event (reconcile, retry, sweeper) always gets a read.
        targets: dict[tuple[str, str, str], bool] = {}
        for p in _payloads(records):
            if p.get("system") in self.connectors:
                key = (p["system"], p["kind"], p["external_id"])
                targets[key] = targets.get(key, True) and bool(p.get("event_id"))
        await self._bounded([self.sync.inbound(s, k, x, hint_only=h) for (s, k, x), h in targets.items()])

    async def _bounded(self, jobs: list[Awaitable[str]]) -> None:
        async def one(job: Awaitable[str]) -> str:
            async with self._semaphore:
                return await job
        results = await asyncio.gather(*(one(j) for j in jobs), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _every(self, seconds: float, fn: Callable[[], Awaitable[Any]]) -> None:
        while not self.stop.is_set():
            try:
                await fn()
            except Exception as exc:
                log.warning("periodic task failed", task=getattr(fn, "__name__", "task"), error=repr(exc)[:300])
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), seconds)

    # -- periodic work ---------------------------------------------------------------------------

    async def requeue_due(self) -> int:
        """Retries whose time has come go back through the outbox, the one path into the handlers."""
        async with unit_of_work(self.sessions) as session:
            rows = (await session.execute(text("""
                UPDATE sync_events SET status = 'requeued', updated_at = now()
                WHERE id IN (SELECT id FROM sync_events WHERE status = 'retry' AND next_attempt_at <= now()
                             ORDER BY next_attempt_at LIMIT 200 FOR UPDATE SKIP LOCKED)
                RETURNING kind, internal_id, external_id, system, direction"""))).all()
            for r in rows:
                await _enqueue_for(session, r.direction, r.kind, r.internal_id, r.external_id, r.system)
        return len(rows)

    async def sweep(self) -> int:
        """The safety net: re-enqueue records ahead of their links and inbox events left behind."""
        grace = self.settings.sweeper_grace_seconds
        count = 0
        async with unit_of_work(self.sessions) as session:
            for system, connector in self.connectors.items():
                for kind in records.all_kinds():
                    if kind.name not in connector.kinds():
                        continue
                    rows = (await session.execute(_sweep_records(kind.table),
                                                  {"system": system, "grace": grace, "kind": kind.name})).all()
                    for r in rows:
                        await enqueue_outbound(session, kind.name, r.id, reason="sweep")
                    count += len(rows)
            events = (await session.execute(SWEEP_INBOX, {"grace": grace})).all()
            for e in {(e.system, e.kind, e.external_id) for e in events}:
                await enqueue_inbound(session, *e)
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
            log.warning("poll failed", system=connector.system, error=str(exc)[:200])
            return 0
        async with unit_of_work(self.sessions) as session:
            for event in events:
                await store_event(session, connector.system, event, source="poll")
            await session.execute(text("""
                INSERT INTO cursors (name, value) VALUES (:n, :v)
                ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()"""),
                {"n": name, "v": new_cursor or ""})
        return len(events)


def _sweep_records(table: str) -> Any:
    # The table name comes from the kind registry, never from input.
    return text(f"""
    SELECT c.id FROM {table} c
    LEFT JOIN links l ON l.kind = :kind AND l.internal_id = c.id AND l.system = :system
    WHERE c.version > COALESCE(l.last_pushed_version, 0)
      AND c.updated_at < now() - make_interval(secs => :grace)
      AND NOT (c.deleted_at IS NOT NULL AND l.id IS NULL)
      AND NOT EXISTS (SELECT 1 FROM sync_events s WHERE s.kind = :kind AND s.internal_id = c.id
                      AND s.system = :system AND s.direction = 'outbound' AND s.status IN ('retry', 'dead'))
    ORDER BY c.id LIMIT 1000
    """)
SWEEP_INBOX = text("""
    SELECT system, kind, external_id FROM inbox
    WHERE processed_at IS NULL AND received_at < now() - make_interval(secs => :grace)
    ORDER BY id LIMIT 1000
""")


async def _enqueue_for(session: AsyncSession, direction: str, kind: str, internal_id: int | None,
                       external_id: str | None, system: str) -> None:
    if direction == "outbound" and internal_id is not None:
        await enqueue_outbound(session, kind, internal_id, reason="retry")
    elif external_id is not None:
        await enqueue_inbound(session, system, kind, external_id)


def _payloads(records: Sequence[ConsumerRecord]) -> list[dict[str, Any]]:
    out = []
    for record in records:
        try:
            payload = json.loads(record.value)
        except (TypeError, ValueError):
            log.warning("skipping undecodable message", offset=record.offset)
            continue
        if isinstance(payload, dict):
            out.append(payload)
    return out
