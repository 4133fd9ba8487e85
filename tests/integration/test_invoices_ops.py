"""Issue 13, operate: invoices through the operator's tools. Idempotent creates, the shared sync-state view,
the sweeper and the metrics' `kind` label."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from tests.conftest import wait_until
from tests.helpers import run_cli, running_worker
from twoway.connectors.stripe.connector import event_from_payload
from twoway.kit.db import unit_of_work
from twoway.webhooks.service import store_event

BODY = {"customer_id": 0, "currency": "usd", "description": "Once", "collection_method": "send_invoice",
        "days_until_due": 30, "lines": [{"description": "Seats", "quantity": 2, "unit_amount": 1500}]}


async def _scalar(db, sql: str, **params):  # type: ignore[no-untyped-def]
    async with db() as s:
        return (await s.execute(text(sql), params)).scalar()


async def _customer(client: httpx.AsyncClient) -> int:
    r = await client.post("/api/v1/customers", json={"name": "Ops Co", "email": "ops@example.com"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def test_invoice_create_honours_idempotency_key(client: httpx.AsyncClient, db) -> None:  # type: ignore[no-untyped-def]
    body = {**BODY, "customer_id": await _customer(client)}
    key = {"Idempotency-Key": "inv-1"}
    # Concurrent copies, then a later retry: one invoice, the same answer every time.
    answers = await asyncio.gather(*(client.post("/api/v1/invoices", json=body, headers=key) for _ in range(3)))
    later = await client.post("/api/v1/invoices", json=body, headers=key)
    assert {r.status_code for r in [*answers, later]} == {201}, [r.text for r in answers]
    assert len({r.text for r in [*answers, later]}) == 1
    assert later.headers["Idempotent-Replayed"] == "true" and later.json()["lines"][0]["amount"] == 3000
    assert await _scalar(db, "SELECT count(*) FROM invoices") == 1
    assert await _scalar(db, "SELECT count(*) FROM invoice_lines") == 1
    outbox = await _scalar(db, "SELECT count(*) FROM outbox")
    # Same key, other body: a clear 400, nothing changes.
    other = await client.post("/api/v1/invoices", json={**body, "description": "Twice"}, headers=key)
    assert other.status_code == 400 and "Idempotency-Key" in other.json()["error"]["message"]
    # A key of a customer create is not an invoice's either.
    await client.post("/api/v1/customers", json={"name": "K", "email": "k@example.com"},
                      headers={"Idempotency-Key": "shared"})
    assert (await client.post("/api/v1/invoices", json=body, headers={"Idempotency-Key": "shared"})).status_code == 400
    # A refused create does not use up its key: fixed, the same key creates.
    bad = await client.post("/api/v1/invoices", json={**body, "customer_id": 999999}, headers={"Idempotency-Key": "k2"})
    assert bad.status_code == 422
    assert await _scalar(db, "SELECT count(*) FROM invoices") == 1
    assert await _scalar(db, "SELECT count(*) FROM outbox") == outbox + 1  # the customer "K" only
    good = await client.post("/api/v1/invoices", json=body, headers={"Idempotency-Key": "k2"})
    assert good.status_code == 201 and await _scalar(db, "SELECT count(*) FROM invoices") == 2
    # Without a key, every create is its own.
    for _ in range(2):
        assert (await client.post("/api/v1/invoices", json=body)).status_code == 201
    assert await _scalar(db, "SELECT count(*) FROM invoices") == 4
    # A key that is too long is a 422 before anything is written.
    long = await client.post("/api/v1/invoices", json=body, headers={"Idempotency-Key": "k" * 300})
    assert long.status_code == 422 and await _scalar(db, "SELECT count(*) FROM invoices") == 4


async def test_sync_state_view_is_the_same_for_both_kinds(client: httpx.AsyncClient, db) -> None:  # type: ignore[no-untyped-def]
    cid = await _customer(client)
    iid = (await client.post("/api/v1/invoices", json={**BODY, "customer_id": cid})).json()["id"]
    async with db() as s:
        await s.execute(text("INSERT INTO sync_events (kind, system, direction, operation, status, internal_id, "
                             "attempts, error) VALUES ('invoice', 'stripe', 'outbound', 'create', 'retry', :i, 2, "
                             "'boom'), ('customer', 'stripe', 'outbound', 'create', 'ok', :c, 1, NULL)"),
                        {"i": iid, "c": cid})
        await s.execute(text("INSERT INTO links (kind, system, internal_id, external_id, base, last_pushed_version) "
                             "VALUES ('customer', 'stripe', :c, 'cus_x', '{}', 1)"), {"c": cid})
        await s.commit()
    inv = (await client.get(f"/api/v1/invoices/{iid}/sync")).json()
    cus = (await client.get(f"/api/v1/customers/{cid}/sync")).json()
    assert inv["invoice_id"] == iid and inv["systems"]["stripe"]["state"] == "retrying"
    assert inv["systems"]["stripe"]["last_error"] == "boom" and inv["events"][0]["kind"] == "invoice"
    assert cus["customer_id"] == cid and cus["systems"]["stripe"]["state"] == "synced"
    assert cus["systems"]["stripe"]["external_id"] == "cus_x" and set(cus) == set(inv) - {"invoice_id"} | {"customer_id"}
    assert (await client.get("/api/v1/invoices/999999/sync")).status_code == 404
    assert (await client.get("/api/v1/customers/999999/sync")).status_code == 404


async def test_sweeper_pushes_an_invoice_whose_message_was_lost(  # type: ignore[no-untyped-def]
        client: httpx.AsyncClient, settings, stripe_client, db) -> None:
    cid = await _customer(client)
    iid = (await client.post("/api/v1/invoices", json={**BODY, "customer_id": cid})).json()["id"]
    async with db() as s:
        await s.execute(text("DELETE FROM outbox"))  # as if the broker lost both messages
        await s.commit()
    async with running_worker(settings, components=("relay", "outbound", "sweeper")):
        def pushed() -> bool:
            found = [i.to_dict() for i in stripe_client.v1.invoices.list({"limit": 10}).data]
            mine = [i for i in found if (i.get("metadata") or {}).get("internal_id") == str(iid)]
            return bool(mine) and mine[0]["total"] == 3000
        assert await wait_until(pushed, timeout=30)
    assert await _scalar(db, "SELECT count(*) FROM sync_events WHERE kind = 'invoice' AND operation = 'sweep' "
                             "AND internal_id = :i", i=iid) >= 1
    assert await _scalar(db, "SELECT count(*) FROM links WHERE kind = 'invoice' AND internal_id = :i", i=iid) == 1


async def _scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = await client.get("/metrics", headers={"Authorization": ""})
    assert r.status_code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


async def test_status_and_metrics_count_each_kind(client: httpx.AsyncClient, settings, db) -> None:  # type: ignore[no-untyped-def]
    cid = await _customer(client)
    iid = (await client.post("/api/v1/invoices", json={**BODY, "customer_id": cid})).json()["id"]
    before = await _scrape(client)
    ok = ("twoway_sync_results_total", frozenset({"system": "stripe", "direction": "outbound", "kind": "invoice",
                                                  "status": "ok"}.items()))
    async with running_worker(settings):
        async def linked() -> bool:
            return await _scalar(db, "SELECT count(*) FROM links WHERE kind = 'invoice'") == 1
        assert await wait_until(linked, timeout=30)
    # Counters of the sync carry the kind (the worker runs in this process, so its counters are scraped here).
    assert (await _scrape(client)).get(ok, 0) - before.get(ok, 0) >= 1
    async with db() as s:
        await s.execute(text("INSERT INTO sync_events (kind, system, direction, operation, status, internal_id, "
                             "attempts, error) VALUES ('invoice', 'stripe', 'outbound', 'update', 'dead', :i, 5, "
                             "'gave up'), ('customer', 'stripe', 'outbound', 'update', 'retry', :c, 1, 'soon')"),
                        {"i": iid, "c": cid})
        await s.commit()

    result = run_cli(settings, "status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    # Every key scripts read is still there with its old shape; the split by kind is added.
    assert {"outbox_backlog", "inbox_backlog", "customers", "links", "sync_states", "dead_letters",
            "last_success", "consumer_lag", "connectors"} <= set(data)
    assert data["customers"] == {"live": 1, "total": 1} and data["links"] == {"stripe": 2}
    assert data["dead_letters"] == 1 and all(set(s) == {"system", "direction", "status", "count"}
                                             for s in data["sync_states"])
    assert data["records"]["invoice"] == {"live": 1, "total": 1, "links": {"stripe": 1}}
    rows = {(r["system"], r["direction"]): r for r in data["connectors"]}
    out = rows[("stripe", "outbound")]
    assert out["dead_letters"] == 1 and out["retrying"] == 1
    assert list(out["kinds"]) == ["customer", "invoice"]
    assert out["kinds"]["invoice"]["dead_letters"] == 1 and out["kinds"]["invoice"]["retrying"] == 0
    assert out["kinds"]["customer"]["retrying"] == 1 and out["kinds"]["invoice"]["last_success"]

    table = run_cli(settings, "status")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    invoice_out = next(line for line in lines if "outbound" in line and "invoice" in line)
    assert re.search(r"invoice\s.*\b1\b", invoice_out) and "s ago" in invoice_out
    assert "invoices 1 live" in table.stdout and "{" not in table.stdout

    scraped = await _scrape(client)
    assert scraped[("twoway_dead_letters", frozenset({"system": "stripe", "kind": "invoice"}.items()))] == 1
    assert scraped[("twoway_dead_letters", frozenset({"system": "stripe", "kind": "customer"}.items()))] == 0
    assert ("twoway_outbox_backlog_by_kind", frozenset({"kind": "invoice"}.items())) in scraped


async def test_sweeper_reprocesses_an_invoice_event_whose_message_was_lost(  # type: ignore[no-untyped-def]
        settings, stripe_client, db) -> None:
    sc = stripe_client.v1.customers.create({"name": "Swept Co", "email": "swept@example.com"})
    si = stripe_client.v1.invoices.create({"customer": sc.id, "collection_method": "send_invoice",
                                           "days_until_due": 7, "description": "swept in"})
    payload = {"id": "evt_lost_invoice", "object": "event", "type": "invoice.created", "livemode": False,
               "created": int(time.time()), "data": {"object": si.to_dict()}}
    async with unit_of_work(db) as session:
        await store_event(session, "stripe", event_from_payload(payload), source="webhook")
        await session.execute(text("DELETE FROM outbox"))  # as if the broker lost the message
    async with running_worker(settings, components=("relay", "inbound", "sweeper")):
        async def imported() -> bool:
            return await _scalar(db, "SELECT count(*) FROM links WHERE kind = 'invoice' AND external_id = :x",
                                 x=si.id) == 1
        assert await wait_until(imported, timeout=40)
    assert await _scalar(db, "SELECT description FROM invoices") == "swept in"
    assert await _scalar(db, "SELECT count(*) FROM sync_events WHERE kind = 'invoice' AND operation = 'sweep'") >= 1


async def test_dashboard_connectors_split_by_kind(client: httpx.AsyncClient, db) -> None:  # type: ignore[no-untyped-def]
    cid = await _customer(client)
    iid = (await client.post("/api/v1/invoices", json={**BODY, "customer_id": cid})).json()["id"]
    async with db() as s:
        await s.execute(text("INSERT INTO sync_events (kind, system, direction, operation, status, internal_id, "
                             "attempts) VALUES ('invoice', 'stripe', 'outbound', 'create', 'dead', :i, 5)"), {"i": iid})
        await s.commit()
    live = await client.get("/dashboard/live", params={"kind": "invoice"})
    assert live.status_code == 200, live.text
    # The connector row splits its counts by kind; the invoice list shows status and sync state.
    assert 'data-kind="invoice"' in live.text and "invoices: backlog 1, retrying 0, dead 1" in live.text
    assert "draft" in live.text and ">dead<" in live.text.replace(" ", "")
