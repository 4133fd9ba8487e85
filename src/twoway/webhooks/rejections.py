"""Bounded bookkeeping of rejected webhooks: a forged flood must neither grow the database nor slow real ones.

Every rejection is counted (in memory, added to `webhook_rejection_counts` once a second). A few per
second are also kept as samples in `webhook_rejections` (reason, size, body hash, sender; never the
body or the signature), trimmed to the newest `sample_max` rows as new ones arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import Counter

import asyncpg

from twoway.logs import get_logger

log = get_logger(__name__)

REASON_MAX = 200

SAMPLE = """
WITH sample AS (
  INSERT INTO webhook_rejections (system, reason, body_sha256, body_size, remote_addr)
  VALUES ($1, $2, $3, $4, $5) RETURNING id
), trimmed AS (
  DELETE FROM webhook_rejections WHERE id <= (SELECT id FROM sample) - $6
)
INSERT INTO webhook_rejection_counts (system, reason, count) VALUES ($1, $2, 1)
ON CONFLICT (system, reason) DO UPDATE SET count = webhook_rejection_counts.count + 1, last_at = now()
"""
COUNT = """
INSERT INTO webhook_rejection_counts (system, reason, count)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
ON CONFLICT (system, reason) DO UPDATE
SET count = webhook_rejection_counts.count + excluded.count, last_at = now()
"""


class RejectionLog:
    def __init__(self, pool: asyncpg.Pool, *, sample_max: int = 1000, samples_per_second: float = 5.0,
                 delay: float = 0.0) -> None:
        self.pool = pool
        self.delay = delay  # seconds a rejection's answer waits (routes.py)
        self.sample_max = sample_max
        self.rate = samples_per_second
        self._tokens = max(1.0, samples_per_second)
        self._refilled = time.monotonic()
        self._pending: Counter[tuple[str, str]] = Counter()

    async def record(self, system: str, reason: str, body: bytes, remote: str | None) -> None:
        key = (system, reason[:REASON_MAX])
        if not self._take():
            self._pending[key] += 1
            return
        try:
            await self.pool.execute(SAMPLE, system, key[1], hashlib.sha256(body).hexdigest(), len(body),
                                    (remote or "")[:100] or None, self.sample_max)
        except Exception as exc:  # the database is away: the 400 still goes out; the count waits
            log.debug("rejection sample not stored", error=repr(exc)[:200])
            self._pending[key] += 1

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, Counter()
        keys = sorted(pending)
        try:
            await self.pool.execute(COUNT, [k[0] for k in keys], [k[1] for k in keys], [pending[k] for k in keys])
        except Exception:
            self._pending.update(pending)  # kept for the next flush

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            await self.flush()

    def _take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(max(1.0, self.rate), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
