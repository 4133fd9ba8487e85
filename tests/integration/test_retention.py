"""Issue 24, retention: old payloads and old sync rows go, what the sync and a person need stays, and sync
keeps working while a purge runs."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from sqlalchemy import text

from tests.conftest import emulator_call, wait_until
from tests.helpers import running_worker
from tests.integration.test_webhooks import sign
from twoway.kit.db import unit_of_work
from twoway.kit.retention import Retention, Windows
from twoway.settings import Settings

PAYLOAD = json.dumps({"id": "evt", "type": "customer.updated", "data": {"object": {"id": "cus_x"}}})
FAKE = 900_000_000  # internal ids no customer row has: the sweeper and the retry loop leave their rows alone


async def _rows(db, sql: str, **params) -> list:  # type: ignore[no-untyped-def]
    async with db() as s:
        return list((await s.execute(text(sql), params)).all())


async def _scalar(db, sql: str, **params):  # type: ignore[no-untyped-def]
    async with db() as s:
        return (await s.execute(text(sql), params)).scalar()


INSERT_INBOX = text("""
    INSERT INTO inbox (system, event_id, event_type, kind, external_id, source, payload, received_at, processed_at)
    VALUES ('stripe', :event_id, 'customer.updated', 'customer', 'cus_x', 'webhook', CAST(:payload AS jsonb),
            now() - make_interval(secs => :received), now() - make_interval(secs => :processed))""")
# Rows of the sync log as they were :age seconds ago (oldest first, as the sync writes them).
INSERT_EVENTS = text("""
    INSERT INTO sync_events (kind, system, direction, operation, status, internal_id, external_id, next_attempt_at,
                             created_at, updated_at)
    SELECT 'customer', 'stripe', v.dir, 'update', v.status, v.iid, v.xid,
           CASE WHEN v.status = 'retry' THEN now() + interval '1 day' END,
           now() - make_interval(secs => :age), now() - make_interval(secs => :age)
    FROM unnest(CAST(:dirs AS text[]), CAST(:statuses AS text[]), CAST(:iids AS bigint[]), CAST(:xids AS text[]))
         WITH ORDINALITY AS v(dir, status, iid, xid, n) ORDER BY v.n
    RETURNING id""")


async def _log(session, rows: list[tuple[str, str, int | None, str | None]], age: float) -> list[int]:  # type: ignore[no-untyped-def]
    dirs, statuses, iids, xids = (list(c) for c in zip(*rows, strict=True))
    result = await session.execute(INSERT_EVENTS, {"dirs": dirs, "statuses": statuses, "iids": iids, "xids": xids,
                                                   "age": age})
    return [r.id for r in result]


DAY = 86400.0


async def test_a_round_purges_what_is_past_its_window_and_keeps_what_is_needed(settings: Settings, db) -> None:  # type: ignore[no-untyped-def]
    async with unit_of_work(db) as s:
        for event_id, received, processed in (("evt_hour", 2 * 3600, 2 * 3600), ("evt_month", 40 * DAY, 40 * DAY),
                                              ("evt_new", 600, 600)):
            await s.execute(INSERT_INBOX, {"event_id": event_id, "payload": PAYLOAD, "received": received,
                                           "processed": processed})
        await s.execute(INSERT_INBOX, {"event_id": "evt_pending", "payload": PAYLOAD, "received": 40 * DAY,
                                       "processed": None})
        one = FAKE + 1
        ids = await _log(s, [("outbound", "ok", one, "cus_1"), ("inbound", "conflict", one, "cus_1"),
                             ("outbound", "dead", one, "cus_1"), ("outbound", "retry", one, "cus_1"),
                             ("outbound", "superseded", one, "cus_1"), ("outbound", "ok", one, "cus_1"),
                             ("inbound", "ok", one, "cus_1"), ("outbound", "swept", one, "cus_1")], 8 * DAY)
        loose = await _log(s, [("inbound", "swept", None, "cus_l"), ("inbound", "swept", None, "cus_l"),
                               ("inbound", "ok", None, "cus_l"), ("inbound", "ok", None, "cus_l")], 8 * DAY)
        # Enough old records to take many batches: five rows each, the newest an `ok`.
        many = [("outbound", status, FAKE + 100 + i, None) for i in range(60)
                for status in ("ok", "superseded", "swept", "ok", "ok")]
        await _log(s, many, 8 * DAY)
        young = await _log(s, [("outbound", "ok", FAKE + 2, None), ("outbound", "ok", FAKE + 2, None)], 3600)
        await s.execute(text("""
            INSERT INTO outbox (topic, key, payload, created_at, sent_at) VALUES
              ('sync.outbound', 'customer:1', '{}', now() - interval '3 hours', now() - interval '2 hours'),
              ('sync.outbound', 'customer:2', '{}', now() - interval '3 hours', NULL),
              ('sync.outbound', 'customer:3', '{}', now() - interval '3 minutes', now() - interval '2 minutes')"""))
        await s.execute(text("""
            INSERT INTO idempotency_keys (key, request_hash, status, response, created_at) VALUES
              ('old', 'h', 201, '{}', now() - interval '25 hours'), ('new', 'h', 201, '{}', now() - interval '1 hour')"""))

    # The defaults, a small batch: many short transactions.
    retention = Retention(db, Windows.from_settings(Settings()), batch=7)
    done = await retention.run()
    assert done["sync_events"] > 0 and done["inbox"] == 1 and done["inbox_payloads"] == 1

    inbox = {r.event_id: r.payload for r in await _rows(db, "SELECT event_id, payload FROM inbox")}
    assert inbox == {"evt_hour": {}, "evt_new": json.loads(PAYLOAD), "evt_pending": json.loads(PAYLOAD)}
    kept = {r.id: r.status for r in await _rows(db, "SELECT id, status FROM sync_events")}
    # The first record: its old `ok` and its superseded row go; conflict, dead, the scheduled retry, the newest
    # ok per direction and the newest row stay.
    assert [kept.get(i) for i in ids] == [None, "conflict", "dead", "retry", None, "ok", "ok", "swept"]
    assert [kept.get(i) for i in loose] == [None, None, None, "ok"]
    assert all(kept.get(i) == "ok" for i in young)  # within the window
    per_record = await _rows(db, """SELECT internal_id, count(*) AS n FROM sync_events
                                    WHERE internal_id > :lo GROUP BY 1""", lo=FAKE + 99)
    assert len(per_record) == 60 and {r.n for r in per_record} == {1}
    assert {r.key for r in await _rows(db, "SELECT key FROM outbox")} == {"customer:2", "customer:3"}
    assert {r.key for r in await _rows(db, "SELECT key FROM idempotency_keys")} == {"new"}

    # Nothing more to do; two workers' rounds at once are harmless.
    again = await asyncio.gather(retention.run(), Retention(db, retention.windows, batch=7).run())
    assert all(not any(r.values()) for r in again)
    assert await _scalar(db, "SELECT count(*) FROM sync_events") == len(kept)


async def test_sync_and_dedup_keep_working_while_short_windows_purge(  # type: ignore[no-untyped-def]
        settings: Settings, client: httpx.AsyncClient, stripe_client, emulator, db) -> None:
    # A backlog from before, so that the purge is still running while the changes below are made.
    async with unit_of_work(db) as s:
        kept = await _log(s, [("outbound", "dead", FAKE + 1, None), ("inbound", "conflict", FAKE + 1, None),
                              ("outbound", "retry", FAKE + 1, None), ("outbound", "ok", FAKE + 1, None)], DAY)
        backlog = [("outbound", status, FAKE + 100 + i, None) for i in range(20_000)
                   for status in ("superseded", "ok", "ok")]
        await _log(s, backlog, DAY)
    short = settings.model_copy(update={
        "retention_interval_seconds": 0.2, "retention_batch_size": 200, "inbox_payload_retention_hours": 1 / 3600,
        "sync_events_retention_days": 2 / DAY, "outbox_retention_seconds": 1.0})
    async with running_worker(short):
        assert await wait_until(lambda: _scalar(db, "SELECT count(*) < 60004 FROM sync_events"), timeout=30)
        ids = [(await client.post("/api/v1/customers", json={"name": f"R{i}", "email": f"r{i}@example.com"})).json()["id"]
               for i in range(3)]
        for version in range(3):
            for cid in ids:
                assert (await client.patch(f"/api/v1/customers/{cid}", json={"name": f"R{cid} v{version}"})
                        ).status_code == 200
        purging = await _scalar(db, "SELECT count(*) FROM sync_events WHERE internal_id > :lo", lo=FAKE + 99)
        assert purging > 20_000, "the purge ended before the changes were made: make the backlog larger"

        async def in_stripe() -> bool:
            names = {c["metadata"].get("internal_id"): c["name"] for c in _emulator_customers(emulator)}
            return all(names.get(str(cid)) == f"R{cid} v2" for cid in ids)
        assert await wait_until(in_stripe, timeout=60)

        # A webhook, processed; its payload dropped after the (short) payload window, its id kept.
        theirs = stripe_client.v1.customers.create({"name": "Webhooked", "email": "hook@example.com"})
        body = json.dumps({"id": "evt_twice", "object": "event", "type": "customer.created", "livemode": False,
                           "created": int(time.time()), "data": {"object": theirs.to_dict()}}).encode()
        first = await client.post("/api/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body)})
        assert first.status_code == 200 and first.json()["duplicate"] is False
        assert await wait_until(lambda: _scalar(
            db, "SELECT payload = '{}'::jsonb FROM inbox WHERE event_id = 'evt_twice' AND processed_at IS NOT NULL"),
            timeout=30)
        processed = await _scalar(db, "SELECT processed_at FROM inbox WHERE event_id = 'evt_twice'")
        # The same delivery again, inside the dedup window: recognised, stored and processed once.
        second = await client.post("/api/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body)})
        assert second.status_code == 200 and second.json()["duplicate"] is True
        assert await _scalar(db, "SELECT count(*) FROM inbox WHERE event_id = 'evt_twice'") == 1
        assert await _scalar(db, "SELECT processed_at FROM inbox WHERE event_id = 'evt_twice'") == processed
        assert await _scalar(db, "SELECT count(*) FROM customers WHERE email = 'hook@example.com'") == 1

        # The backlog and the changes' own old rows go; each record keeps its newest row and newest ok.
        async def pruned() -> bool:
            extra = await _scalar(db, """
                SELECT count(*) FROM sync_events s WHERE s.status NOT IN ('retry', 'requeued', 'started', 'dead',
                                                                          'conflict')
                  AND s.internal_id IS NOT NULL
                  AND EXISTS (SELECT 1 FROM sync_events n WHERE n.kind = s.kind AND n.system = s.system
                              AND n.internal_id = s.internal_id AND n.id > s.id)
                  AND (s.status <> 'ok' OR EXISTS (
                       SELECT 1 FROM sync_events o WHERE o.kind = s.kind AND o.system = s.system AND o.status = 'ok'
                         AND o.internal_id = s.internal_id AND o.direction = s.direction AND o.id > s.id))""")
            return extra == 0
        assert await wait_until(pruned, timeout=60)
        assert await _scalar(db, "SELECT count(*) FROM sync_events WHERE internal_id > :lo", lo=FAKE + 99) == 20_000
        assert await _scalar(db, "SELECT count(*) FROM sync_events WHERE id = ANY(:ids)", ids=kept) == 4
        assert await wait_until(lambda: _scalar(db, "SELECT count(*) = 0 FROM outbox WHERE sent_at IS NOT NULL"),
                                timeout=30)
    for cid in ids:
        state = (await client.get(f"/api/v1/customers/{cid}/sync")).json()
        assert state["systems"]["stripe"]["state"] == "synced"
        assert state["events"]  # its newest outcome is still there to show


def _emulator_customers(emulator: str) -> list[dict]:
    rows = emulator_call(emulator, "/_emulator/customers")
    return rows["data"] if isinstance(rows, dict) else rows
