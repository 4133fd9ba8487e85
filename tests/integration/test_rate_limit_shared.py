"""One rate limit per external account, shared through PostgreSQL by every process that calls it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from tests.conftest import emulator_call, wait_until
from tests.e2e.test_processes import worker_env
from tests.helpers import set_faults
from twoway.kit.db import asyncpg_dsn
from twoway.kit.ratelimit import PRIORITY, SHRINK_FACTOR, EndpointRates, SharedLimiter
from twoway.settings import Settings


async def _spend(limiter: SharedLimiter, stamps: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        await limiter.acquire()
        stamps.append(time.monotonic())


async def test_limiters_in_one_account_share_its_rate(db, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    dsn = asyncpg_dsn(settings.require_database_url())
    limiters = [SharedLimiter(dsn, "test:shared", 40.0) for _ in range(3)]
    other = SharedLimiter(dsn, "test:other", 40.0)  # another account is not slowed by this one
    stamps: list[list[float]] = [[] for _ in range(4)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_spend(lim, stamps[i], stop)) for i, lim in enumerate([*limiters, other])
             for _ in range(20)]
    try:
        assert await wait_until(lambda: len(stamps[3]) >= 4 * 40, timeout=30)
    finally:
        stop.set()
        for lim in [*limiters, other]:
            await lim.close()
        await asyncio.gather(*tasks, return_exceptions=True)
    # Between the 1st and 4th second of spending: the three together hold the one account's 40/s.
    start = min(s[0] for s in stamps[:3])
    shared = sum(1 for s in stamps[:3] for t in s if start + 1 <= t < start + 4)
    assert 0.9 * 120 <= shared <= 120 + 5, shared
    assert all(len(s) > 10 for s in stamps[:3])  # nobody starves
    assert sum(lim.leases for lim in limiters) < sum(len(s) for s in stamps[:3]) / 1.5  # blocks, not calls


async def _spend_on(lanes: list[tuple[SharedLimiter, str]], seconds: float) -> list[tuple[float, str]]:
    """Each lane calls its endpoint through its limiter for `seconds`: when each call went, and where."""
    stamps: list[tuple[float, str]] = []

    async def lane(limiter: SharedLimiter, endpoint: str) -> None:
        while True:
            await limiter.acquire(endpoint=endpoint)
            stamps.append((time.monotonic(), endpoint))

    tasks = [asyncio.create_task(lane(lim, endpoint)) for lim, endpoint in lanes]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return stamps


def _busiest_second(times: list[float]) -> int:
    """The most calls in any one-second window (sliding, not aligned to the clock)."""
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times)), default=0)


async def test_endpoints_are_shared_by_processes_and_interleaving_fills_the_account(db, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    """Two processes' limiters, one account of 40/s whose endpoints may take 10/s each: calls to one
    endpoint from both never pass its 10/s together; calls to six endpoints fill the account's 40/s."""
    dsn = asyncpg_dsn(settings.require_database_url())
    limiters = [SharedLimiter(dsn, "test:nested", 40.0, endpoint_rates=EndpointRates(10.0)) for _ in range(2)]
    endpoints = ["POST /v1/customers", "POST /v1/customers/{id}", "GET /v1/customers/{id}",
                 "DELETE /v1/customers/{id}", "POST /v1/invoices", "GET /v1/invoices/{id}"]
    try:
        one = await _spend_on([(lim, endpoints[0]) for lim in limiters for _ in range(6)], 3.5)
        mixed = await _spend_on([(lim, e) for lim in limiters for e in endpoints for _ in range(3)], 3.5)
    finally:
        for lim in limiters:
            await lim.close()

    def between_1_and_3_s(stamps: list[tuple[float, str]]) -> list[tuple[float, str]]:
        start = stamps[0][0]
        return [(t, e) for t, e in stamps if start + 1 <= t < start + 3]

    window = between_1_and_3_s(mixed)
    print(f"one endpoint: {len(between_1_and_3_s(one))} calls in 2 s, busiest second {_busiest_second([t for t, _ in one])};"
          f" six endpoints: {len(window)} calls in 2 s")
    # One endpoint: its 10/s, however many processes call it. Slack in a sliding second: the bucket's burst
    # (1), a token handed out up to STOCK_SECONDS late next to one on time, and the window's two edges.
    assert _busiest_second([t for t, _ in one]) <= 10 + 3, _busiest_second([t for t, _ in one])
    assert 0.85 * 20 <= len(between_1_and_3_s(one)) <= 20 + 3, len(between_1_and_3_s(one))
    # Six endpoints wanting 60/s: the account's 40/s is full, and still no endpoint above its 10/s.
    assert 0.85 * 80 <= len(window) <= 80 + 5, len(window)
    for endpoint in endpoints:
        assert _busiest_second([t for t, e in mixed if e == endpoint]) <= 10 + 3, endpoint
        assert sum(1 for _, e in window if e == endpoint) >= 5, endpoint  # nobody starves


async def test_an_endpoint_429_shrinks_that_endpoint_only(db, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    limiter = SharedLimiter(asyncpg_dsn(settings.require_database_url()), "test:endpoint429", 50.0,
                            endpoint_rates=EndpointRates(20.0))

    async def rates() -> dict[str, float]:
        async with db() as s:
            rows = await s.execute(text("SELECT endpoint, rate FROM rate_limits WHERE account = 'test:endpoint429'"))
            return {endpoint: rate for endpoint, rate in rows}
    try:
        await limiter.acquire(endpoint="POST /v1/customers")
        await limiter.acquire(endpoint="GET /v1/customers/{id}")
        await limiter.rate_limited(0.2, endpoint="POST /v1/customers")
        assert await rates() == {"": 50.0, "POST /v1/customers": 20.0 * SHRINK_FACTOR, "GET /v1/customers/{id}": 20.0}
        await limiter.rate_limited(0.2)  # a 429 that names no endpoint's limiter: the account's
        assert (await rates())[""] == 50.0 * SHRINK_FACTOR
    finally:
        await limiter.close()


async def test_a_429_shrinks_the_rate_for_everyone_then_it_recovers(db, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    dsn = asyncpg_dsn(settings.require_database_url())
    a, b = SharedLimiter(dsn, "test:shrink", 50.0), SharedLimiter(dsn, "test:shrink", 50.0)
    try:
        await a.acquire()
        await a.rate_limited(0.2)
        await a.rate_limited(0.2)  # a burst of 429s within a second is one signal
        async with db() as s:
            rate = (await s.execute(text("SELECT rate FROM rate_limits WHERE account = 'test:shrink'"))).scalar()
        assert rate == 50.0 * SHRINK_FACTOR
        await b.acquire()  # b leases after the penalty: it waited for it, and sees the shrunk rate
        assert b.rate < 50.0

        async def recovered() -> bool:
            await b.acquire()
            return b.rate >= 50.0
        assert await wait_until(recovered, timeout=15, step=0.2)
    finally:
        await a.close()
        await b.close()


@pytest.mark.heavy
async def test_three_workers_share_one_stripe_limit(client, settings, emulator, db, workdir) -> None:  # type: ignore[no-untyped-def]
    """Three `twoway worker` processes, each told the account's limit (30/s), against a Stripe that 429s
    above 30/s: together they use >= 90 % of it, with few 429s, and nothing ends dead.

    The window is 30 s (900 calls), not 60: long enough for the shared bucket's 429 feedback to show.
    """
    limit, window_calls, customers = 30, 900, 1150
    set_faults(emulator, rate_limit_per_second=limit)
    sem = asyncio.Semaphore(16)

    async def create(i: int) -> None:
        async with sem:
            r = await client.post("/api/v1/customers", json={"name": f"Shared {i}", "email": f"s{i}@example.com"})
            assert r.status_code == 201

    await asyncio.gather(*(create(i) for i in range(customers)))
    # This Stripe limits only the account (no `limits` knob): so do the workers, whose creates would
    # otherwise stop at the 24/s of Stripe's per-endpoint default.
    env = {**worker_env(settings), "STRIPE_RATE_LIMIT_PER_SECOND": str(limit),
           "STRIPE_ENDPOINT_RATE_LIMIT_PER_SECOND": str(2 * limit)}
    workers = [subprocess.Popen([sys.executable, "-m", "twoway", "worker"], env=env, start_new_session=True,
                                stdout=open(workdir / f"worker-shared-{i}.log", "ab"),  # noqa: SIM115
                                stderr=subprocess.STDOUT)
               for i in range(3)]

    def answered() -> tuple[int, int]:
        stats = emulator_call(emulator, "/_emulator/stats")
        by_status = [v for route, v in stats["responses"].items() if " /v1/" in route]
        ok = sum(n for statuses in by_status for code, n in statuses.items() if code != "429")
        return ok, sum(statuses.get("429", 0) for statuses in by_status)

    try:
        # Measure once all three are spending (the first 100 calls are the warm-up).
        assert await wait_until(lambda: answered()[0] >= 100, timeout=90, step=0.05)
        ok0, limited0 = answered()
        t0 = time.monotonic()
        assert await wait_until(lambda: answered()[0] >= ok0 + window_calls, timeout=60, step=0.05)
        elapsed = time.monotonic() - t0
        ok1, limited1 = answered()
        used = (ok1 - ok0) / elapsed / limit
        print(f"shared limit: {used:.1%} used, {limited1 - limited0} 429s in {ok1 - ok0} calls")
        assert used >= 0.9, f"{used:.1%} of the limit"
        assert limited1 - limited0 <= 0.05 * (ok1 - ok0), (limited1 - limited0, ok1 - ok0)

        async def all_linked() -> bool:
            async with db() as s:
                return (await s.execute(text("SELECT count(*) FROM links"))).scalar() == customers
        assert await wait_until(all_linked, timeout=90, step=0.5)
        async with db() as s:
            dead = (await s.execute(text("SELECT count(*) FROM sync_events WHERE status = 'dead'"))).scalar()
        assert dead == 0
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)


async def test_a_high_limit_costs_few_statements(db, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    """Far below its limit a process leases what it will spend in the next moment, not one token a call."""
    limiter = SharedLimiter(asyncpg_dsn(settings.require_database_url()), "test:high", 10_000.0)
    calls = 0

    async def lane() -> None:
        nonlocal calls
        for _ in range(200):
            await limiter.acquire()
            calls += 1
            await asyncio.sleep(0.001)  # a call's worth of work between acquisitions
    try:
        await asyncio.gather(*(lane() for _ in range(10)))
    finally:
        await limiter.close()
    assert calls == 2000
    print(f"{limiter.leases} leases for {calls} calls")
    assert limiter.leases <= calls / 10, limiter.leases


async def test_waiters_are_served_oldest_work_first(db, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    """A caller's PRIORITY (when its work began) orders the queue: a record's next step goes before
    records whose work began later, whatever order the calls arrive in."""
    limiter = SharedLimiter(asyncpg_dsn(settings.require_database_url()), "test:priority", 20.0)
    served: list[float] = []
    base = asyncio.get_running_loop().time()

    async def call(age: float) -> None:
        PRIORITY.set(base + age)  # this task's own context
        await limiter.acquire()
        served.append(age)
    try:
        await asyncio.gather(*(call(age) for age in (3.0, 1.0, 4.0, 0.5, 2.0, 5.0)))
    finally:
        await limiter.close()
    assert served == sorted(served), served
