"""Issue 13, operate: invoices through the operator's tools. Idempotent creates, the shared sync-state view,
the sweeper and the metrics' `kind` label."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import text

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
