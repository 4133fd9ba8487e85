"""The sweeper repairs lost messages; polled and webhook copies of one event are stored once; the CLI replays."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from sqlalchemy import text

from tests.conftest import API_KEY, ROOT, emulator_call, wait_until
from tests.helpers import running_worker, set_faults
from tests.integration.test_inbound import inbound_system
from twoway.connectors.stripe.connector import event_from_payload
from twoway.customers import service
from twoway.kit.db import unit_of_work
from twoway.webhooks.service import store_event


async def _scalar(db, sql: str, **params):  # type: ignore[no-untyped-def]
    async with db() as s:
        return (await s.execute(text(sql), params)).scalar()


async def test_sweeper_pushes_a_change_whose_message_was_lost(settings, emulator, db) -> None:  # type: ignore[no-untyped-def]
    async with unit_of_work(db) as session:
        customer = await service.create(session, {"name": "Swept", "email": "swept@example.com"})
        await session.execute(text("DELETE FROM outbox"))  # as if the broker lost the message
    async with running_worker(settings):
        async def pushed() -> bool:
            rows = emulator_call(emulator, "/_emulator/customers")
            rows = rows["data"] if isinstance(rows, dict) else rows
            return any(c["metadata"].get("internal_id") == str(customer.id) for c in rows)
        assert await wait_until(pushed, timeout=30)
        assert await wait_until(lambda: _scalar(
            db, "SELECT last_pushed_version = 1 FROM links WHERE internal_id = :i", i=customer.id))


async def test_sweeper_reprocesses_an_inbox_event_whose_message_was_lost(settings, stripe_client, emulator, db) -> None:  # type: ignore[no-untyped-def]
    sc = stripe_client.v1.customers.create({"name": "Stuck", "email": "stuck@example.com"})
    payload = {"id": "evt_lost", "object": "event", "type": "customer.created", "livemode": False,
               "created": int(time.time()), "data": {"object": sc.to_dict()}}
    async with unit_of_work(db) as session:
        await store_event(session, "stripe", event_from_payload(payload), source="webhook")
        await session.execute(text("DELETE FROM outbox"))
    async with running_worker(settings):
        assert await wait_until(lambda: _scalar(db, "SELECT count(*) FROM links WHERE external_id = :e", e=sc.id),
                                timeout=30)
    assert await _scalar(db, "SELECT count(*) FROM inbox WHERE processed_at IS NULL") == 0
    assert await _scalar(db, "SELECT name FROM customers") == "Stuck"


async def test_webhook_and_polled_copies_are_stored_once(settings, stripe_client, emulator, db) -> None:  # type: ignore[no-untyped-def]
    async with inbound_system(settings, stripe_client, inbound_mode="both") as (_api, _):
        assert await wait_until(lambda: _scalar(db, "SELECT count(*) FROM cursors"))
        start = await _scalar(db, "SELECT value FROM cursors")
        created = [stripe_client.v1.customers.create({"name": f"B{i}", "email": f"b{i}@example.com"})
                   for i in range(5)]
        assert await wait_until(lambda: _scalar(db, "SELECT count(*) = 5 FROM links"), timeout=30)
        # the poller read past the same events the webhooks delivered
        assert await wait_until(lambda: _cursor_moved(db, start), timeout=10)
    distinct = await _scalar(db, "SELECT count(DISTINCT event_id) FROM inbox")
    assert await _scalar(db, "SELECT count(*) FROM inbox") == distinct >= len(created)
    assert await _scalar(db, "SELECT count(*) FROM customers") == 5


async def _cursor_moved(db, start: str) -> bool:  # type: ignore[no-untyped-def]
    return await _scalar(db, "SELECT value FROM cursors") != start


async def test_cli_replay_sends_dead_letters_back(settings, client, emulator, db) -> None:  # type: ignore[no-untyped-def]
    set_faults(emulator, reject_pattern="nope")
    async with running_worker(settings):
        cid = (await client.post("/api/v1/customers", json={"name": "Nope", "email": "nope@example.com"})).json()["id"]
        assert await wait_until(lambda: _scalar(db, "SELECT count(*) FROM sync_events WHERE status = 'dead'"))
    # No worker while Stripe takes the name again and the CLI replays: a running one may meet the create's
    # message again (delivered at least once: a rebalance before its offset was committed) and, Stripe
    # now willing, sync the record itself, so there would be nothing dead left to replay (seen once).
    set_faults(emulator, reject_pattern=None)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DATABASE_URL": settings.require_database_url(),
           "TWOWAY_API_KEYS": API_KEY}
    code, stdout, stderr = await _cli(env, "replay", "--all")
    assert code == 0 and "replayed 1" in stdout, stderr
    async with running_worker(settings):
        assert await wait_until(lambda: _scalar(db, "SELECT count(*) FROM links WHERE internal_id = :i", i=cid))
        code, stdout, stderr = await _cli({**env, "KAFKA_BOOTSTRAP_SERVERS": settings.require_kafka(),
                                           "STRIPE_SECRET_KEY": "sk_test_x"}, "status", "--json")
        assert code == 0, stderr
        assert json.loads(stdout)["dead_letters"] == 0


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`twoway <args>` awaited, not run blocking like `tests.helpers.run_cli`: a worker lives in this
    test's event loop while the CLI runs, and a blocking call would stop it for that time."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "twoway", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return int(proc.returncode or 0), out.decode(), err.decode()
