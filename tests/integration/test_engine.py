"""Issue 11, must show: the batch engine holds no transaction or pooled connection across a remote call,
never interleaves work on one record, defers what another holds, and rides out an outage with no dead
letter and no search storm. Real PostgreSQL, the real broker, the emulator through the SDK."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import emulator_call, wait_until
from tests.helpers import running_worker, set_faults
from tests.integration.test_outbound import _converged, _create, _why_not, by_internal_id
from twoway.sync.engine import SyncEngine
from twoway.sync.worker import Worker

PROBE = "twoway-engine-probe"


async def _landed(base: str, ids: list[int]) -> bool:
    side = by_internal_id(base)
    return all(str(i) in side for i in ids)


async def test_slow_answers_hold_no_transaction_and_few_connections(client, settings, emulator, db) -> None:
    """Every answer held 2 s, 200 records in flight: no session of the worker idles in a transaction,
    and it never has more connections than its small pool (plus its one lock connection)."""
    engine_settings = settings.model_copy(update={"db_application_name": PROBE, "worker_db_pool_size": 3})
    set_faults(emulator, response_delay_ms=2000)
    ids = [await _create(client, f"Slow {i}", f"slow{i}@example.com") for i in range(200)]
    worst: dict[str, Any] = {"connections": 0, "idle_in_transaction": []}

    async def sample() -> None:
        async with db() as s:
            rows = (await s.execute(text("""
                SELECT state, now() - state_change AS held FROM pg_stat_activity
                WHERE application_name = :name"""), {"name": PROBE})).all()
        worst["connections"] = max(worst["connections"], len(rows))
        # A statement boundary inside a short write-back can be seen for a moment; a call held is seconds.
        worst["idle_in_transaction"] += [r.held.total_seconds() for r in rows
                                         if r.state == "idle in transaction" and r.held.total_seconds() > 0.2]

    started = time.monotonic()
    async with running_worker(settings, ["relay"]), running_worker(engine_settings, ["outbound"]):
        async def done() -> bool:
            await sample()
            return await _landed(emulator, ids)
        assert await wait_until(done, timeout=120, step=0.1)
    took = time.monotonic() - started
    assert worst["idle_in_transaction"] == [], worst
    assert 0 < worst["connections"] <= 3 + 1, worst
    # One by one they would need 400 s; 16 at a time (the old engine) 25 s.
    assert took < 60, took


async def test_inbound_and_outbound_never_interleave_on_a_record(client, settings, emulator, stripe_client,
                                                                  db) -> None:
    """Two workers, one pushing our edits and one taking Stripe's, on the same records at once with slow
    answers: the spans of work (lock to write-back) on any one record never overlap."""
    async with running_worker(settings):
        ids = [await _create(client, f"Both {i}", f"both{i}@example.com") for i in range(10)]
        assert await wait_until(lambda: _converged(client, emulator, ids), timeout=60)
    xids = {cid: by_internal_id(emulator)[str(cid)][0]["id"] for cid in ids}
    set_faults(emulator, response_delay_ms=300)
    spans: list[tuple[int, float, float, str]] = []

    def record(worker: Worker, name: str) -> None:
        run = worker.sync.run

        async def timed(job: Any) -> None:
            start = time.monotonic()
            await run(job)
            snap = job.snapshot
            rid = snap.ours.id if snap.ours else (snap.link.internal_id if snap.link else None)
            if rid is not None:
                spans.append((rid, start, time.monotonic(), name))
        worker.sync.run = timed  # type: ignore[method-assign]

    # Inbound events reach the inbox through the poller here (no webhook server needed).
    poll = settings.model_copy(update={"inbound_mode": "poll"})
    async with running_worker(poll, ["relay", "outbound", "retry"]) as out_worker, \
            running_worker(poll, ["inbound", "poller"]) as in_worker:
        record(out_worker, "outbound")
        record(in_worker, "inbound")
        for round_ in range(4):
            for cid in ids:
                await client.patch(f"/api/v1/customers/{cid}", json={"email": f"ours{round_}.{cid}@example.com"})
                await asyncio.to_thread(stripe_client.v1.customers.update, xids[cid], {"name": f"Theirs {round_}"})
        set_faults(emulator, response_delay_ms=0)

        async def settled() -> bool:
            if not await _converged(client, emulator, ids):
                return False
            names = [(await client.get(f"/api/v1/customers/{cid}")).json()["name"] for cid in ids]
            return names == ["Theirs 3"] * len(ids)
        assert await wait_until(settled, timeout=90, step=1), await _why_not(client, emulator, ids)
    by_record: dict[int, list[tuple[float, float, str]]] = {}
    for rid, start, end, name in spans:
        by_record.setdefault(rid, []).append((start, end, name))
    both = [r for r, s in by_record.items() if {n for *_, n in s} == {"inbound", "outbound"}]
    assert both, "the test did not exercise both directions on one record"
    for rid, work in by_record.items():
        work.sort()
        for (_s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(work):
            assert s2 >= e1, f"record {rid}: {n1} and {n2} overlapped"


async def test_a_record_locked_elsewhere_is_deferred_then_done(client, settings, emulator, db) -> None:
    async with running_worker(settings):
        cid = await _create(client, "Held", "held@example.com")
        assert await wait_until(lambda: _converged(client, emulator, [cid]))
        async with db() as holder:  # someone else (a reconcile, an API merge) holds the record
            await holder.execute(text("SELECT pg_advisory_lock(hashtextextended(:k, 0))"), {"k": f"customer:{cid}"})
            await client.patch(f"/api/v1/customers/{cid}", json={"name": "Held Then Done"})
            other = await _create(client, "Free", "free@example.com")  # its batch is not held up
            assert await wait_until(lambda: _converged(client, emulator, [other]))
            assert by_internal_id(emulator)[str(cid)][0]["name"] == "Held"
            await holder.execute(text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"), {"k": f"customer:{cid}"})
            await holder.commit()
        assert await wait_until(lambda: _converged(client, emulator, [cid]), timeout=10)
    assert (await client.get("/api/v1/sync/failures")).json() == []


async def test_one_record_path_waits_for_a_lock_then_pushes(client, settings, emulator, db) -> None:
    from twoway.connectors.stripe.connector import StripeConnector

    cid = await _create(client, "Direct", "direct@example.com")
    engine = SyncEngine(db, {"stripe": StripeConnector.from_settings(settings)}, settings)
    assert await engine.outbound("customer", cid, "stripe") == "create"
    assert await engine.outbound("customer", cid, "stripe") == "noop"


async def _stats(base: str) -> dict[str, int]:
    return dict(emulator_call(base, "/_emulator/stats")["requests"])


@pytest.mark.heavy
async def test_outage_dead_letters_nothing_and_converges_after(client, settings, emulator, db) -> None:
    """Stripe answers 500/503 to everything for over twice the old retry budget (8 attempts of 0.2..2 s,
    ~11 s) while changes keep coming: nothing dies, searches stay few, all converges soon after. (The
    3-minute outage with production settings is in the bench: bench/outage.py.)"""
    fast = settings.model_copy(update={"breaker_max_open_seconds": 3.0, "sync_outage_retry_max_seconds": 3.0})
    async with running_worker(fast):
        ids = [await _create(client, f"Up {i}", f"up{i}@example.com") for i in range(20)]
        assert await wait_until(lambda: _converged(client, emulator, ids), timeout=60)
        before = await _stats(emulator)
        set_faults(emulator, error_rate=1.0)
        rng = random.Random(11)
        new: list[int] = []
        outage_seconds = 25
        end = time.monotonic() + outage_seconds
        n = 0
        while time.monotonic() < end:
            n += 1
            if n % 3 == 0:
                new.append(await _create(client, f"Down {n}", f"down{n}@example.com"))
            else:
                cid = rng.choice(ids + new)
                await client.patch(f"/api/v1/customers/{cid}", json={"name": f"Edit {n}"})
            await asyncio.sleep(0.5)
        during = await _stats(emulator)
        set_faults(emulator, error_rate=0.0)
        back = time.monotonic()
        everyone = ids + new
        assert await wait_until(lambda: _converged(client, emulator, everyone), timeout=60, step=1), \
            await _why_not(client, emulator, everyone)
        took = time.monotonic() - back
    assert (await client.get("/api/v1/sync/failures")).json() == []
    async with db() as s:
        dead = (await s.execute(text("SELECT count(*) FROM sync_events WHERE status = 'dead'"))).scalar()
    assert dead == 0
    searches = during.get("GET /v1/customers/search", 0) - before.get("GET /v1/customers/search", 0)
    calls = sum(during.values()) - sum(before.values())
    assert searches <= 2 * len(new) + 5, (searches, len(new))
    # The breaker probes; it does not hammer: a few calls a second at most over the outage.
    assert calls <= 5 * outage_seconds, calls
    assert took < 60



async def test_a_failing_record_builds_on_its_history(client, settings, emulator, db) -> None:
    """Each retry of a record that keeps failing counts on from the one before (tries go up, the first
    failure's time stays): the backoff grows and a transient error can eventually die. Reading the
    history after closing the open retry row would make every failure the first."""
    fast = settings.model_copy(update={"breaker_max_open_seconds": 3.0, "sync_outage_retry_max_seconds": 0.5,
                                       "sync_backoff_base_seconds": 0.05, "sync_backoff_max_seconds": 0.5})
    set_faults(emulator, error_rate=1.0)
    cid = await _create(client, "Keeps failing", "keepsfailing@example.com")

    async def history() -> list[Any]:
        async with db() as s:
            return list((await s.execute(text("""
                SELECT status, attempts, CAST(detail ->> 'tries' AS int) AS tries, detail ->> 'since' AS since
                FROM sync_events WHERE kind = 'customer' AND direction = 'outbound' AND internal_id = :id
                  AND detail ? 'tries' ORDER BY id"""), {"id": cid})).all())

    async with running_worker(fast):
        async def counted_on() -> bool:
            return max((r.tries for r in await history()), default=0) >= 4
        assert await wait_until(counted_on, timeout=60, step=0.2), await history()
        rows = await history()
        assert [r.tries for r in rows] == sorted(r.tries for r in rows), rows
        assert len({r.since for r in rows}) == 1, rows  # the first failure's time is carried, not reset
        set_faults(emulator, error_rate=0.0)
        assert await wait_until(lambda: _converged(client, emulator, [cid]), timeout=60, step=0.5), \
            await _why_not(client, emulator, [cid])
