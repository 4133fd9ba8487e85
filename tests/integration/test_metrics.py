"""Issue 6: /metrics moves by the right amounts after a known sequence of operations.

Prometheus counters are process-global (and the worker runs in this process), so every check is a
difference between two scrapes.
"""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from tests.conftest import wait_until
from tests.helpers import running_worker
from twoway.settings import Settings
from twoway.sync.worker import outbound_group

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
STRIPE_OUT = {"system": "stripe", "direction": "outbound", "kind": "customer"}


def _lag(settings: Settings) -> tuple[str, dict[str, str]]:
    return "twoway_consumer_lag", {"group": outbound_group(settings, "stripe"), "topic": "sync.outbound"}


async def _scrape(client: httpx.AsyncClient) -> Samples:
    r = await client.get("/metrics", headers={"Authorization": ""})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def _get(samples: Samples, name: str, labels: dict[str, str] | None = None) -> float:
    return samples.get((name, frozenset((labels or {}).items())), 0.0)


def _delta(before: Samples, after: Samples, name: str, labels: dict[str, str] | None = None) -> float:
    return _get(after, name, labels) - _get(before, name, labels)


async def _scalar(db, sql: str) -> int:  # type: ignore[no-untyped-def]
    async with db() as s:
        return int((await s.execute(text(sql))).scalar() or 0)


async def test_metrics_follow_a_known_sequence(client: httpx.AsyncClient, settings: Settings, db) -> None:  # type: ignore[no-untyped-def]
    start = await _scrape(client)
    for name in ("Ada", "Bea"):
        r = await client.post("/api/v1/customers", json={"name": name, "email": f"{name.lower()}@example.com"})
        assert r.status_code == 201

    queued = await _scrape(client)
    assert _get(queued, "twoway_outbox_backlog") == 2

    # Relay only: both messages reach Kafka, nobody consumes them yet, so the group lags.
    async with running_worker(settings, components=["relay"]):
        assert await wait_until(lambda: _unsent_is_zero(db), timeout=20)
    published = await _scrape(client)
    assert _get(published, "twoway_outbox_backlog") == 0
    assert _delta(queued, published, "twoway_messages_published_total", {"topic": "sync.outbound"}) == 2
    # Lag is read from the broker at each scrape; a read that fails leaves the series absent (never a stale
    # number), so wait for a reading rather than trusting the first scrape.
    async def lagging() -> bool:
        return _get(await _scrape(client), *_lag(settings)) == 2

    assert await wait_until(lagging, timeout=30, step=0.5), await _lag_story(client, settings)

    async with running_worker(settings, components=["outbound"]):
        assert await wait_until(lambda: _links_are(db, 2), timeout=30)

        async def caught_up() -> bool:
            return _get(await _scrape(client), *_lag(settings)) == 0

        assert await wait_until(caught_up, timeout=30, step=0.5)
    synced = await _scrape(client)
    assert _delta(published, synced, "twoway_sync_results_total", {**STRIPE_OUT, "status": "ok"}) == 2
    assert _delta(published, synced, "twoway_sync_latency_seconds_count", STRIPE_OUT) == 2
    assert _delta(published, synced, "twoway_sync_latency_seconds_sum", STRIPE_OUT) > 0
    assert _delta(published, synced, "twoway_stripe_calls_total", {"op": "create", "status": "200"}) == 2
    consumed = _delta(published, synced, "twoway_messages_consumed_total",
                      {"group": outbound_group(settings, "stripe"), "topic": "sync.outbound"})
    assert consumed >= 2  # and more only if an earlier test left messages for this group

    reason = {"system": "stripe", "reason": "signature does not match"}
    forged = {"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}", "Content-Type": "application/json"}
    r = await client.post("/api/v1/webhooks/stripe", content=b'{"id": "evt_forged", "type": "customer.updated"}',
                          headers=forged)
    assert r.status_code == 400
    rejected = await _scrape(client)
    assert _delta(synced, rejected, "twoway_webhooks_rejected_total", reason) == 1
    assert _delta(start, rejected, "twoway_sync_results_total", {**STRIPE_OUT, "status": "dead"}) == 0


async def test_an_unreadable_lag_is_absent_not_stale(app, client: httpx.AsyncClient, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    group, topic = _lag(settings)[1]["group"], "sync.outbound"

    async def read() -> Samples | None:
        samples = await _scrape(client)
        return samples if ("twoway_consumer_lag", frozenset({"group": group, "topic": topic}.items())) in samples \
            else None

    before = await wait_until(read, timeout=30, step=0.5)
    assert before and _get(before, *_lag(settings)) == 0
    # The broker goes away: the lag is unknown, and the scrape says so instead of repeating the last number.
    app.state.settings = settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:9"})
    after = await _scrape(client)
    assert ("twoway_consumer_lag", frozenset({"group": group, "topic": topic}.items())) not in after
    assert _delta(before, after, "twoway_consumer_lag_read_failures_total", {"group": group}) == 1
    assert (await client.get("/api/v1/sync/status")).json()["consumer_lag"] == {"error": "broker unreachable: "
                                                                                         "BrokerUnreachable"}


async def _lag_story(client: httpx.AsyncClient, settings: Settings) -> str:
    """What the scrape and the broker say, for a failure message."""
    from twoway.ops.status import read_lag

    samples = await _scrape(client)
    lag = {k: v for k, v in samples.items() if k[0].startswith("twoway_consumer_lag")}
    return f"scrape: {lag}; direct: {await read_lag(settings)}"


async def _unsent_is_zero(db) -> bool:  # type: ignore[no-untyped-def]
    return await _scalar(db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0


async def _links_are(db, n: int) -> bool:  # type: ignore[no-untyped-def]
    return await _scalar(db, "SELECT count(*) FROM links") == n
