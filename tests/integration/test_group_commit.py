"""Issue 12: group commit of webhook events and customer creates, capped rejections, Idempotency-Key, 503s."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from tests.conftest import API_KEY
from tests.integration.test_webhooks import event, sign
from twoway.kit.db import asyncpg_dsn
from twoway.settings import Settings

URL = "/api/v1/webhooks/stripe"


@pytest.fixture
async def grouped(settings: Settings, db: object) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The app with a long linger, so requests sent together surely share one group."""
    from twoway.api import create_app

    app = create_app(settings.model_copy(update={"group_commit_max_wait_ms": 100.0,
                                                 "webhook_rejection_sample_max": 3,
                                                 "webhook_rejection_samples_per_second": 1000.0}))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t",
            headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        yield app, client


async def _scalar(db: Any, sql: str) -> int:
    async with db() as s:
        return int((await s.execute(text(sql))).scalar() or 0)


async def _deliver(client: httpx.AsyncClient, event_id: str) -> httpx.Response:
    body = json.dumps(event(event_id)).encode()
    return await client.post(URL, content=body, headers={"Stripe-Signature": sign(body)})


async def test_duplicates_inside_one_group_and_across_groups_are_stored_once(grouped, db) -> None:  # type: ignore[no-untyped-def]
    app, client = grouped
    answers = await asyncio.gather(*(_deliver(client, e) for e in ["evt_a", "evt_a", "evt_b", "evt_a"]))
    assert [r.status_code for r in answers] == [200] * 4
    assert app.state.inbox_writer.groups == 1  # all four in one transaction
    assert [r.json()["duplicate"] for r in answers] == [False, True, False, True]
    again = await asyncio.gather(_deliver(client, "evt_a"), _deliver(client, "evt_c"))
    assert [r.json()["duplicate"] for r in again] == [True, False]
    assert await _scalar(db, "SELECT count(*) FROM inbox") == 3
    assert await _scalar(db, "SELECT count(*) FROM outbox WHERE topic = 'sync.inbound'") == 3


@pytest.mark.parametrize("when", ["before_commit", "during_commit"])
async def test_a_failed_group_answers_every_request_5xx_and_the_retry_stores_each_once(
        grouped, db, settings, when) -> None:  # type: ignore[no-untyped-def]
    app, client = grouped
    admin = await asyncpg.connect(asyncpg_dsn(settings.require_database_url()))

    async def fail(conn: asyncpg.Connection, size: int) -> None:
        if when == "before_commit":
            raise ConnectionResetError("database restarted")
        # The server goes away just before COMMIT: the writer cannot know whether it committed.
        await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())

    app.state.inbox_writer.before_commit = fail
    ids = [f"evt_fail_{i}" for i in range(5)]
    try:
        failed = await asyncio.gather(*(_deliver(client, e) for e in ids))
    finally:
        app.state.inbox_writer.before_commit = None
        await admin.close()
    assert {r.status_code for r in failed} == {503}
    assert all(r.headers["Retry-After"] for r in failed)
    expected = "service_unavailable" if when == "before_commit" else "outcome_unknown"
    assert {r.json()["error"]["type"] for r in failed} == {expected}
    assert await _scalar(db, "SELECT count(*) FROM inbox") == 0  # nothing half stored
    # The sender retries (twice, even): each event stored once, with its outbox row.
    retried = await asyncio.gather(*(_deliver(client, e) for e in ids + ids))
    assert {r.status_code for r in retried} == {200}
    assert sum(not r.json()["duplicate"] for r in retried) == 5
    assert await _scalar(db, "SELECT count(*) FROM inbox") == 5
    assert await _scalar(db, "SELECT count(*) FROM outbox WHERE topic = 'sync.inbound'") == 5


async def test_rejections_are_counted_and_their_sample_is_capped(grouped, db) -> None:  # type: ignore[no-untyped-def]
    app, client = grouped
    body = json.dumps(event("evt_forged")).encode()
    for _ in range(10):
        r = await client.post(URL, content=body, headers={"Stripe-Signature": sign(body, "whsec_forged")})
        assert r.status_code == 400 and r.json()["error"]["message"] == "signature does not match"
    assert await _scalar(db, "SELECT count(*) FROM webhook_rejections") == 3  # the newest 3 of 10
    await app.state.webhook_rejections.flush()
    assert await _scalar(db, "SELECT sum(count) FROM webhook_rejection_counts") == 10
    assert await _scalar(db, "SELECT count(*) FROM inbox") + await _scalar(db, "SELECT count(*) FROM outbox") == 0


async def test_concurrent_creates_share_commits_and_each_gets_its_own_row(grouped, db) -> None:  # type: ignore[no-untyped-def]
    app, client = grouped
    answers = await asyncio.gather(*(client.post("/api/v1/customers", json={"name": f"N{i}", "email": f"n{i}@ex.io"})
                                     for i in range(40)))
    assert {r.status_code for r in answers} == {201}
    bodies = [r.json() for r in answers]
    assert [b["name"] for b in bodies] == [f"N{i}" for i in range(40)]  # each answer is its own row
    assert len({b["id"] for b in bodies}) == 40
    assert app.state.customer_writer.groups < 40
    assert await _scalar(db, "SELECT count(*) FROM customers") == 40
    assert await _scalar(db, "SELECT count(*) FROM outbox WHERE topic = 'sync.outbound'") == 40
    got = await client.get(f"/api/v1/customers/{bodies[0]['id']}")
    assert got.json() == bodies[0]


async def test_idempotency_key_makes_a_create_retry_safe(grouped, db) -> None:  # type: ignore[no-untyped-def]
    _, client = grouped
    payload = {"name": "Once", "email": "once@ex.io"}
    # Concurrent copies in one group, then a later retry: one customer, the same answer every time.
    answers = await asyncio.gather(*(client.post("/api/v1/customers", json=payload,
                                                 headers={"Idempotency-Key": "k-1"}) for _ in range(3)))
    later = await client.post("/api/v1/customers", json=payload, headers={"Idempotency-Key": "k-1"})
    assert {r.status_code for r in [*answers, later]} == {201}
    assert len({r.text for r in [*answers, later]}) == 1
    assert later.headers["Idempotent-Replayed"] == "true"
    assert await _scalar(db, "SELECT count(*) FROM customers") == 1
    other = await client.post("/api/v1/customers", json={**payload, "name": "Other"},
                              headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 400 and "Idempotency-Key" in other.json()["error"]["message"]


async def test_a_create_whose_commit_outcome_is_unknown_is_retried_into_one_customer(grouped, db, settings) -> None:  # type: ignore[no-untyped-def]
    app, client = grouped
    admin = await asyncpg.connect(asyncpg_dsn(settings.require_database_url()))

    async def lose_the_connection(conn: asyncpg.Connection, size: int) -> None:
        await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())

    app.state.customer_writer.before_commit = lose_the_connection
    payload = {"name": "Unknown", "email": "unknown@ex.io"}
    try:
        first = await client.post("/api/v1/customers", json=payload, headers={"Idempotency-Key": "k-unknown"})
    finally:
        app.state.customer_writer.before_commit = None
        await admin.close()
    assert first.status_code == 503 and first.json()["error"]["type"] == "outcome_unknown"
    assert "may or may not" in first.json()["error"]["message"] and first.headers["Retry-After"]
    retries = [await client.post("/api/v1/customers", json=payload, headers={"Idempotency-Key": "k-unknown"})
               for _ in range(2)]
    assert [r.status_code for r in retries] == [201, 201] and retries[0].text == retries[1].text
    assert await _scalar(db, "SELECT count(*) FROM customers") == 1


async def test_database_unreachable_is_503_with_retry_after(settings, db) -> None:  # type: ignore[no-untyped-def]
    from twoway.api import create_app

    app = create_app(settings.model_copy(update={"database_url": "postgresql+asyncpg://nobody@127.0.0.1:1/none"}))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t",
            headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        body = json.dumps(event("evt_down")).encode()
        answers = [await client.post(URL, content=body, headers={"Stripe-Signature": sign(body)}),
                   await client.post("/api/v1/customers", json={"name": "A", "email": "a@ex.io"}),
                   await client.get("/api/v1/customers/1"),
                   await client.get("/api/v1/customers")]
    for r in answers:
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] and r.json()["error"]["type"] == "service_unavailable"


async def test_a_one_statement_group_that_loses_its_connection_has_an_unknown_outcome(settings, db) -> None:  # type: ignore[no-untyped-def]
    from twoway.kit.db import make_pool
    from twoway.kit.groupcommit import GroupCommit, OutcomeUnknown

    async def dies(conn: asyncpg.Connection, items: Any) -> list[int]:
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return list(items)

    async def works(conn: asyncpg.Connection, items: Any) -> list[int]:
        return [int(await conn.fetchval("SELECT $1::int + 1", i)) for i in items]

    pool = await make_pool(settings.require_database_url(), max_size=2)
    try:
        failing = GroupCommit(pool, dies, name="t", one_statement=True)
        outcomes = await asyncio.gather(*(failing.submit(i) for i in range(3)), return_exceptions=True)
        assert all(isinstance(o, OutcomeUnknown) for o in outcomes), outcomes
        assert await GroupCommit(pool, works, name="t2", one_statement=True).submit(41) == 42  # the pool recovers
    finally:
        await pool.close()
