"""The outbox relay: publishes unsent rows in id order and marks them sent only after the broker acks.

Woken by NOTIFY, with a slow poll as a fallback; SKIP LOCKED lets several relays share the work.
A crash between publish and mark re-publishes on restart: at-least-once, which the handlers absorb.

Batched: one statement claims up to `batch_size` rows (payloads as text, never decoded), every message
is handed to the producer before any ack is awaited (it packs them into per-partition batches), and
one statement marks them all. Plain asyncpg on its own connection: no ORM on this path. Sent rows are
purged by the worker's retention round (kit/retention.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable

import asyncpg
from aiokafka import AIOKafkaProducer

from twoway.kit import metrics
from twoway.kit.db import asyncpg_dsn
from twoway.kit.outbox import NOTIFY_CHANNEL
from twoway.logs import get_logger

log = get_logger(__name__)

CLAIM = """
    SELECT id, topic, key, payload::text AS payload FROM outbox
    WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""
MARK = "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])"


class Relay:
    def __init__(self, producer: AIOKafkaProducer, database_url: str,
                 *, batch_size: int = 2000, poll_seconds: float = 1.0,
                 before_mark: Callable[[list[int]], Awaitable[None]] | None = None,
                 on_error: Callable[[], Awaitable[None]] | None = None) -> None:
        self.producer = producer
        self.database_url = database_url
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.before_mark = before_mark  # a seam for crash tests: runs after publishing, before marking
        self.on_error = on_error  # e.g. recreate topics that a restarted dev broker forgot
        self._wake = asyncio.Event()
        self._conn: asyncpg.Connection | None = None

    async def publish_batch(self) -> int:
        conn = await self._connection()
        try:
            async with conn.transaction():
                rows = await conn.fetch(CLAIM, self.batch_size)
                if not rows:
                    return 0
                send = self.producer.send
                acks = [await send(r["topic"], key=r["key"].encode(), value=r["payload"].encode()) for r in rows]
                await asyncio.gather(*acks)
                ids = [r["id"] for r in rows]
                if self.before_mark is not None:
                    await self.before_mark(ids)
                await conn.execute(MARK, ids)
        except BaseException:
            if conn.is_closed():
                self._conn = None
            raise
        for topic, count in Counter(r["topic"] for r in rows).items():
            metrics.PUBLISHED.labels(topic=topic).inc(count)
        return len(rows)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(asyncpg_dsn(self.database_url), command_timeout=30)
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def run(self, stop: asyncio.Event) -> None:
        listener = await self._listen()
        try:
            while not stop.is_set():
                try:
                    published = await self.publish_batch()
                except Exception as exc:
                    log.warning("relay batch failed; will retry", error=repr(exc)[:300])
                    published = 0
                    if self.on_error is not None:
                        with contextlib.suppress(Exception):
                            await self.on_error()
                    await _sleep_or_stop(stop, 1.0)
                if published >= self.batch_size:
                    continue
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=self.poll_seconds,
                                   return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
        finally:
            await self.close()
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()

    async def _listen(self) -> asyncpg.Connection | None:
        try:
            conn = await asyncpg.connect(asyncpg_dsn(self.database_url))
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
            return conn
        except Exception as exc:
            log.warning("LISTEN failed; relying on polling", error=repr(exc)[:200])
            return None


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
