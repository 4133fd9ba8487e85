"""Signed webhook delivery with retries, bounded concurrency and delivery faults.

Each endpoint gets a queue drained by a fixed pool of workers, each holding one
keep-alive connection, so a burst of thousands of events never opens thousands
of sockets, and a failed attempt is re-queued later by a timer instead of
holding a worker while it waits.

Every account's store publishes here with its events' targets: its own endpoints, and for a connected
account the platform's Connect endpoints, whose copy carries the top-level `account`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
from dataclasses import dataclass

from twoway.emulators.stripe.faults import Faults
from twoway.emulators.stripe.state import Obj, Target
from twoway.emulators.stripe.stats import Stats
from twoway.emulators.stripe.transport import Connection

log = logging.getLogger(__name__)

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
# Delays before retries 1..7: eight attempts in about two minutes, for local work.
LOCAL_SCHEDULE: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64)
# Live-mode Stripe retries with exponential backoff for up to three days.
REAL_SCHEDULE: tuple[float, ...] = (60, 300, 1800, 3600, 7200, 14400, 28800, 43200, 43200, 43200, 43200)
REORDER_FLUSH_SECONDS = 1.0


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


@dataclass(slots=True)
class Delivery:
    event: Obj
    target: Target
    generation: int
    attempt: int = 1
    body: bytes | None = None


class Dispatcher:
    def __init__(
        self,
        faults: Faults,
        stats: Stats,
        *,
        timeout: float = 10.0,
        schedule: tuple[float, ...] = LOCAL_SCHEDULE,
        concurrency: int = 32,
    ) -> None:
        self.faults, self.stats = faults, stats
        self.timeout, self.schedule, self.concurrency = timeout, schedule, concurrency
        self.pending = 0  # deliveries not yet delivered or given up, plus held events
        self._generation = 0  # bumped on reset so stale retries and timers are ignored
        self._queues: dict[str, asyncio.Queue[Delivery]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._reorder: list[tuple[Obj, list[Target], int]] = []
        self._reorder_timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        pass  # workers start lazily with the first delivery to each endpoint

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    def reset(self) -> None:
        self._generation += 1
        self.pending = 0
        self._reorder.clear()
        if self._reorder_timer is not None:
            self._reorder_timer.cancel()
            self._reorder_timer = None
        for queue in self._queues.values():
            while not queue.empty():
                queue.get_nowait()

    # -- fan-out with delivery faults ---------------------------------------------------

    def publish(self, event: Obj, targets: list[Target]) -> None:
        """Store listener: called synchronously for every recorded event."""
        if not targets:
            return
        faults = self.faults
        if faults.chance(faults.webhook_drop_rate):
            self.stats.webhooks.dropped += 1
            return
        copies = 1
        if faults.chance(faults.webhook_duplicate_rate):
            copies = 2
            self.stats.webhooks.duplicated += 1
        self.pending += 1  # held until _fan_out turns it into deliveries
        if faults.webhook_reorder > 1:
            self._hold_for_reorder(event, targets, copies)
        else:
            self._after_reorder(event, targets, copies, self._generation)

    def _hold_for_reorder(self, event: Obj, targets: list[Target], copies: int) -> None:
        self._reorder.append((event, targets, copies))
        if len(self._reorder) >= self.faults.webhook_reorder:
            self._flush_reorder()
        elif self._reorder_timer is None:
            loop = asyncio.get_running_loop()
            self._reorder_timer = loop.call_later(REORDER_FLUSH_SECONDS, self._flush_reorder)

    def _flush_reorder(self) -> None:
        if self._reorder_timer is not None:
            self._reorder_timer.cancel()
            self._reorder_timer = None
        window, self._reorder = self._reorder, []
        shuffled = window[:]
        random.shuffle(shuffled)
        if len(window) > 1 and shuffled == window:
            # A shuffle can land on the original order; rotate so the fault is real.
            shuffled = shuffled[1:] + shuffled[:1]
        self.stats.webhooks.reordered += sum(1 for a, b in zip(window, shuffled, strict=True) if a is not b)
        for event, targets, copies in shuffled:
            self._after_reorder(event, targets, copies, self._generation)

    def _after_reorder(self, event: Obj, targets: list[Target], copies: int, generation: int) -> None:
        delay = self.faults.webhook_delay_ms / 1000
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._fan_out, event, targets, copies, generation)
        else:
            self._fan_out(event, targets, copies, generation)

    def _fan_out(self, event: Obj, targets: list[Target], copies: int, generation: int) -> None:
        if generation != self._generation:
            return
        self.pending -= 1
        for target in targets:
            for _ in range(copies):
                self.pending += 1
                self._queue(target.endpoint_id).put_nowait(Delivery(event, target, generation))

    # -- delivery -------------------------------------------------------------------

    def _queue(self, endpoint_id: str) -> asyncio.Queue[Delivery]:
        queue = self._queues.get(endpoint_id)
        if queue is None:
            queue = self._queues[endpoint_id] = asyncio.Queue()
            for _ in range(self.concurrency):
                self._workers.append(asyncio.create_task(self._work(queue)))
        return queue

    async def _work(self, queue: asyncio.Queue[Delivery]) -> None:
        conn = Connection()
        try:
            while True:
                item = await queue.get()
                try:
                    await self._deliver(item, conn)
                except Exception:  # a worker must survive anything one delivery throws
                    log.exception("webhook delivery crashed")
        finally:
            conn.close()

    async def _deliver(self, item: Delivery, conn: Connection) -> None:
        endpoint = item.target.endpoints.get(item.target.endpoint_id)
        if item.generation != self._generation:
            return
        if endpoint is None or endpoint.get("status") != "enabled":
            # Stripe stops retrying once an endpoint is deleted or disabled.
            self.pending -= 1
            return
        ok = await self._attempt(endpoint, item, conn)
        if item.generation != self._generation:
            return
        if ok:
            self.stats.webhooks.delivered += 1
            self.pending -= 1
            item.event["pending_webhooks"] = max(0, item.event["pending_webhooks"] - 1)
            return
        self.stats.webhooks.failed_attempts += 1
        self._retry_later(item)

    def _retry_later(self, item: Delivery) -> None:
        if item.attempt > len(self.schedule):
            self.pending -= 1  # out of attempts; Stripe marks the delivery failed
            return
        delay = self.schedule[item.attempt - 1]
        item.attempt += 1
        queue = self._queue(item.target.endpoint_id)
        asyncio.get_running_loop().call_later(delay, queue.put_nowait, item)

    async def _attempt(self, endpoint: Obj, item: Delivery, conn: Connection) -> bool:
        if item.body is None:
            account = item.target.account
            item.body = json.dumps(item.event if account is None else {**item.event, "account": account}).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            # Stripe signs each attempt afresh, so retries carry a new timestamp.
            "Stripe-Signature": sign(endpoint["secret"], item.body, int(time.time())),
        }
        try:
            status = await conn.post(endpoint["url"], item.body, headers, self.timeout)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False
        # Stripe does not follow redirects: anything but 2xx is a failed attempt.
        return 200 <= status < 300
