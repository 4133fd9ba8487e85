"""Client-side rate limits, so we stay under an external API's limits instead of hitting them.

An external account has one limit however many workers call it, so the limit lives in PostgreSQL:
one token bucket per account key (`rate_limits`), leased in small blocks by each process, one short
statement per block. A lease always succeeds and takes its tokens even into debt; the debt says when
they may be spent, so processes queue in the database's order and together use the whole rate with
no polling. 429s shrink the shared rate (at most once a second, multiplicatively, never below a
floor) and push the bucket into debt for the Retry-After; it recovers additively while leases go on.

Some APIs also limit each endpoint (a named operation: method and route template, so
`POST /v1/customers` and `GET /v1/customers/{id}` are two) within the account's limit: Stripe gives
each 25 requests/s inside the account's 100/s. `EndpointRates` names those limits, and a call that
names its endpoint (`acquire(endpoint=...)`) takes a token from the endpoint's bucket, then one from
the account's: a call only queues for the account's budget once its endpoint lets it go, so a
saturated endpoint never holds account tokens it cannot spend and other endpoints fill the rest. An
endpoint's bucket is a row of its own (`account`, `endpoint`), shared the same way; a 429 that names
the endpoint's limiter shrinks that bucket only (`rate_limited(..., endpoint=...)`).

`TokenBucket` is one bucket in one process, and `LocalLimiter` the nested buckets in one process,
for a process with no database; each shared bucket falls back to a `TokenBucket` of its own while the
database cannot be reached.

Within a process, a shared bucket serves its waiting callers oldest work first: a caller may set
`PRIORITY` (a `loop.time()`, lower goes first) for the work it calls for; by default a caller is as old
as its call. The sync engine sets it to when a record's pass began, so a record's next step (an
invoice's lines, then its finalize) goes before other records' first steps: records finish one after
another while the limit stays full, instead of all of them finishing together at the end of a drain.
"""

from __future__ import annotations

import asyncio
import fnmatch
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import DateTime, Float, Text
from sqlalchemy.orm import Mapped, mapped_column

from twoway.kit import metrics
from twoway.kit.db import Base

log = logging.getLogger(__name__)

SHRINK_FACTOR = 0.85  # a 429 takes 15 % off the shared rate...
RECOVER_SHARE_PER_SECOND = 0.04  # ...and 4 % of the limit comes back every second without one
FLOOR_SHARE = 0.1
SHRINK_INTERVAL = 1.0  # a burst of 429s from many workers is one signal, not many
DEFAULT_PENALTY = 0.25  # seconds of debt after a 429 without Retry-After
DB_RETRY_SECONDS = 5.0
ACCOUNT = ""  # the `endpoint` of an account's own bucket
# When the caller's work began (`loop.time()`); None: now. Lower is served first (see the module doc).
PRIORITY: ContextVar[float | None] = ContextVar("ratelimit_priority", default=None)


class RateLimitBucket(Base):
    """One shared token bucket per external account, and one per limited endpoint of it (see the module doc)."""

    __tablename__ = "rate_limits"

    account: Mapped[str] = mapped_column(Text, primary_key=True)
    endpoint: Mapped[str] = mapped_column(Text, primary_key=True, server_default="")  # "": the account's own
    limit_per_second: Mapped[float] = mapped_column(Float)  # configured: the account's (endpoint's) limit
    rate: Mapped[float] = mapped_column(Float)  # in force: the limit, less what 429s took off
    tokens: Mapped[float] = mapped_column(Float)  # negative: leased ahead, in the queue
    refilled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    shrunk_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Limiter(Protocol):
    async def acquire(self) -> None: ...

    async def rate_limited(self, retry_after: float | None = None) -> None:
        """The system answered 429 (or said its window is full): slow everyone down."""
        ...

    async def close(self) -> None: ...


class EndpointLimiter(Protocol):
    """A `Limiter` that also paces each endpoint within the account (see the module doc)."""

    async def acquire(self, endpoint: str | None = None) -> None: ...

    async def rate_limited(self, retry_after: float | None = None, endpoint: str | None = None) -> None:
        """A 429: from the endpoint's own limiter when `endpoint` is given, else from the account's."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class EndpointRates:
    """Each endpoint's limit (requests/s): `limits` by endpoint or by pattern (`fnmatch`, e.g.
    `GET /v1/*/search`), exact names first, then patterns in order; `default` for the rest."""

    default: float
    limits: Mapping[str, float] = field(default_factory=dict)

    def of(self, endpoint: str) -> float:
        if endpoint in self.limits:
            return self.limits[endpoint]
        return next((rate for pattern, rate in self.limits.items() if fnmatch.fnmatchcase(endpoint, pattern)),
                    self.default)


class TokenBucket:
    """One process's bucket. Waiters are served in order, spaced evenly at `rate`."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.limit = rate
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate / 10)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._shrunk = 0.0
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        elapsed = now - self.updated
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.rate = min(self.limit, self.rate + RECOVER_SHARE_PER_SECOND * self.limit * elapsed)
        self.updated = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            while self.tokens < 1:
                await asyncio.sleep((1 - self.tokens) / self.rate)
                self._refill()
            self.tokens -= 1

    def penalize(self, seconds: float) -> None:
        """The server's window is full: spend nothing for `seconds`."""
        self.tokens = min(self.tokens, -seconds * self.rate)

    async def rate_limited(self, retry_after: float | None = None) -> None:
        now = time.monotonic()
        if now - self._shrunk >= SHRINK_INTERVAL:
            self._shrunk = now
            self.rate = max(self.limit * FLOOR_SHARE, self.rate * SHRINK_FACTOR)
        self.penalize(retry_after if retry_after is not None else DEFAULT_PENALTY)

    async def close(self) -> None:
        return None


class _Bucket(Protocol):
    async def acquire(self) -> None: ...

    async def rate_limited(self, retry_after: float | None = None) -> None: ...

    async def close(self) -> None: ...


class _Nested:
    """The account's bucket and, made on first use, one bucket per endpoint within it."""

    def __init__(self, account_bucket: _Bucket, endpoint_rates: EndpointRates | None,
                 endpoint_bucket: Callable[[str, float], _Bucket]) -> None:
        self._account = account_bucket
        self.endpoint_rates = endpoint_rates
        self._endpoint_bucket = endpoint_bucket  # (endpoint, its rate) -> its bucket
        self._endpoints: dict[str, _Bucket] = {}

    def _bucket_of(self, endpoint: str | None) -> _Bucket | None:
        """The endpoint's bucket; None when no endpoint is named or endpoints have no limits of their own."""
        if endpoint is None or self.endpoint_rates is None:
            return None
        bucket = self._endpoints.get(endpoint)
        if bucket is None:
            bucket = self._endpoints[endpoint] = self._endpoint_bucket(endpoint, self.endpoint_rates.of(endpoint))
        return bucket

    async def acquire(self, endpoint: str | None = None) -> None:
        bucket = self._bucket_of(endpoint)
        if bucket is not None:
            await bucket.acquire()  # the endpoint first: the account's tokens go to calls that may be sent
        await self._account.acquire()

    async def rate_limited(self, retry_after: float | None = None, endpoint: str | None = None) -> None:
        await (self._bucket_of(endpoint) or self._account).rate_limited(retry_after)

    async def close(self) -> None:
        for bucket in (*self._endpoints.values(), self._account):
            await bucket.close()


class LocalLimiter(_Nested):
    """`TokenBucket`s nested as in `SharedLimiter`, for one process with no database."""

    def __init__(self, rate: float, *, endpoint_rates: EndpointRates | None = None) -> None:
        super().__init__(TokenBucket(rate), endpoint_rates, lambda _endpoint, rate: TokenBucket(rate))


# One statement per lease. The first lease of a bucket creates it full; later ones refill it for the
# time since the last lease (at the rate in force), let the rate recover, and take `want`.
_LEASE = """
WITH p AS (SELECT $1::text AS account, $6::text AS endpoint, $2::float8 AS want, $3::float8 AS lim,
                  $4::float8 AS cap, $5::float8 AS recover)
INSERT INTO rate_limits AS r (account, endpoint, limit_per_second, rate, tokens, refilled_at)
SELECT account, endpoint, lim, lim, cap - want, clock_timestamp() FROM p
ON CONFLICT (account, endpoint) DO UPDATE SET
    tokens = least($4::float8, r.tokens
                   + r.rate * greatest(0, extract(epoch FROM clock_timestamp() - r.refilled_at))::float8) - $2::float8,
    rate = least($3::float8,
                 r.rate + $5::float8 * greatest(0, extract(epoch FROM clock_timestamp() - r.refilled_at))::float8),
    refilled_at = clock_timestamp(),
    limit_per_second = $3::float8
RETURNING tokens, rate
"""

_SHRINK = """
UPDATE rate_limits SET
    rate = CASE WHEN shrunk_at IS NULL OR shrunk_at < clock_timestamp() - make_interval(secs => $5::float8)
                THEN greatest($2::float8, rate * $3::float8) ELSE rate END,
    shrunk_at = CASE WHEN shrunk_at IS NULL OR shrunk_at < clock_timestamp() - make_interval(secs => $5::float8)
                THEN clock_timestamp() ELSE shrunk_at END,
    tokens = least(tokens, -$4::float8 * rate)
WHERE account = $1::text AND endpoint = $6::text
"""


class _Database:
    """One small asyncpg connection (opened on first use) for all of a limiter's buckets, one statement
    at a time. While the database cannot be reached, statements answer None for `DB_RETRY_SECONDS`."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.statements = 0
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._down_until = 0.0

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        if self.down:
            return None
        async with self._lock:
            try:
                conn = await self._connection()
                row = await conn.fetchrow(sql, *args)
            except Exception as exc:  # the database is away: do not stop calling, fall back
                await self._drop_connection()
                self._down_until = time.monotonic() + DB_RETRY_SECONDS
                log.warning("shared rate limit unavailable, using a per-process one for %.0f s: %s",
                            DB_RETRY_SECONDS, type(exc).__name__)
                return None
        self.statements += 1
        return row

    async def execute(self, sql: str, *args: Any) -> None:
        if self.down:
            return
        async with self._lock:
            try:
                conn = await self._connection()
                await conn.execute(sql, *args)
            except Exception:
                await self._drop_connection()

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            import asyncpg

            self._conn = await asyncpg.connect(self.dsn, timeout=5, command_timeout=5,
                                               server_settings={"application_name": "twoway-ratelimit"})
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=1)
            except Exception:
                conn.terminate()

    async def close(self) -> None:
        async with self._lock:
            await self._drop_connection()


class _SharedBucket:
    """One row of `rate_limits` as one process spends it.

    Callers queue here; one lease at a time fetches what this process will spend in the next ~50 ms (at
    least the callers waiting, at most `max_block`), and hands the tokens out at the times the bucket's
    debt says. A token nobody asked for by its time is kept for `STOCK_SECONDS`, then dropped: that
    bounds any burst.
    """

    PREFETCH_SECONDS = 0.05
    STOCK_SECONDS = 0.1

    def __init__(self, db: _Database, account: str, endpoint: str, rate: float, *, burst: float | None = None,
                 max_block: int | None = None) -> None:
        self.db = db
        self.account = account
        self.endpoint = endpoint
        self.limit = rate
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate / 10)
        # A block is at most ~50 ms of the limit: leases stay rare, and tokens stay spread out.
        self.max_block = max_block if max_block is not None else max(1, int(rate / 20))
        self.leases = 0
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []  # a heap: oldest work first
        self._seq = itertools.count()
        self._tokens: deque[float] = deque()  # leased tokens not yet handed out: when each may be spent
        self._recent: deque[float] = deque()  # acquire() times over the last second: this process's demand
        self._pump: asyncio.Task[None] | None = None
        self._fallback = TokenBucket(rate, self.capacity)

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._recent.append(now)
        while self._recent[0] < now - 1.0:
            self._recent.popleft()
        self._drop_stale(now)
        if not self._waiters and self._tokens and self._tokens[0] <= now:
            self._tokens.popleft()  # a token already leased and due: no queue, no statement
            return
        fut: asyncio.Future[None] = loop.create_future()
        priority = PRIORITY.get()
        heapq.heappush(self._waiters, (now if priority is None else priority, next(self._seq), fut))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._serve())
        await fut

    def _drop_stale(self, now: float) -> None:
        while self._tokens and self._tokens[0] < now - self.STOCK_SECONDS:
            self._tokens.popleft()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._waiters and self._waiters[0][2].done():
                heapq.heappop(self._waiters)  # cancelled callers
            if not self._waiters:
                return
            now = loop.time()
            self._drop_stale(now)
            if self._tokens:
                if self._tokens[0] > now:
                    await asyncio.sleep(self._tokens[0] - now)
                    continue
                self._tokens.popleft()
                self._release_one()
                continue
            waiting = sum(1 for w in self._waiters if not w[2].done())
            want = min(self.max_block, max(waiting, math.ceil(len(self._recent) * self.PREFETCH_SECONDS)))
            leased = await self._lease(want)
            if leased is None:  # no database: this process's own bucket, until it is back
                await self._fallback.acquire()
                self._release_one()
                continue
            tokens_after, rate = leased
            available = tokens_after + want  # what the bucket held for us, in its queue order
            start = loop.time()
            self._tokens.extend(start + max(0.0, (i + 1 - available) / rate) for i in range(want))

    def _release_one(self) -> None:
        while self._waiters:
            fut = heapq.heappop(self._waiters)[2]
            if not fut.done():
                fut.set_result(None)
                return
        # Nobody waits any more (cancelled): the token is lost, which only errs on the safe side.

    async def _lease(self, want: int) -> tuple[float, float] | None:
        row = await self.db.fetchrow(_LEASE, self.account, float(want), self.limit, self.capacity,
                                     RECOVER_SHARE_PER_SECOND * self.limit, self.endpoint)
        if row is None:
            return None
        self.leases += 1
        self.rate = float(row["rate"])
        metrics.RATE_LIMIT.labels(account=self.account, endpoint=self.endpoint).set(self.rate)
        return float(row["tokens"]), self.rate

    async def rate_limited(self, retry_after: float | None = None) -> None:
        penalty = retry_after if retry_after is not None else DEFAULT_PENALTY
        await self._fallback.rate_limited(retry_after)
        await self.db.execute(_SHRINK, self.account, FLOOR_SHARE * self.limit, SHRINK_FACTOR, penalty,
                              SHRINK_INTERVAL, self.endpoint)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        for _, _, fut in self._waiters:
            fut.cancel()
        self._waiters.clear()


class SharedLimiter(_Nested):
    """The account's bucket in PostgreSQL, shared by every process that names the same `account`, and
    with `endpoint_rates`, a bucket per endpoint within it (see the module doc).

    Without `endpoint_rates` an endpoint named to `acquire` counts against the account's limit only.
    """

    def __init__(self, dsn: str, account: str, rate: float, *, burst: float | None = None,
                 max_block: int | None = None, endpoint_rates: EndpointRates | None = None) -> None:
        self.dsn = dsn
        self.account = account
        self.limit = rate
        self._db = _Database(dsn)
        self._global = _SharedBucket(self._db, account, ACCOUNT, rate, burst=burst, max_block=max_block)
        super().__init__(self._global, endpoint_rates,
                         lambda endpoint, rate: _SharedBucket(self._db, account, endpoint, rate))

    @property
    def rate(self) -> float:
        """The account's rate in force, as of this process's last lease."""
        return self._global.rate

    @property
    def leases(self) -> int:
        """Statements that leased tokens, for every bucket of this process."""
        return self._db.statements

    async def close(self) -> None:
        await super().close()
        await self._db.close()
