"""Issue 13: the invoice API. Drafts with lines, frozen fields after finalization, commands on the status
ladder, pagination and filters, and bad input that changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

LINES = [{"description": "Seats", "quantity": 3, "unit_amount": 1500},
         {"description": "Support", "quantity": 1, "unit_amount": 5000},
         {"description": "Setup", "quantity": 2, "unit_amount": 250}]


async def _count(db, sql: str, **params) -> int:  # type: ignore[no-untyped-def]
    async with db() as s:
        return int((await s.execute(text(sql), params)).scalar() or 0)


async def _snapshot(db) -> list:  # type: ignore[no-untyped-def]
    """Everything a refused request must leave as it was."""
    async with db() as s:
        return [tuple(r) for r in (await s.execute(text(
            "SELECT 'i', id, version, status, coalesce(requested_status, ''), description, deleted_at::text"
            " FROM invoices UNION ALL SELECT 'l', id, quantity, description, '', unit_amount::text, position::text"
            " FROM invoice_lines UNION ALL SELECT 'o', count(*), 0, '', '', '', '' FROM outbox"
            " UNION ALL SELECT 'c', id, version, name, '', '', deleted_at::text FROM customers"
            " ORDER BY 1, 2"))).all()]


def effective(invoice: dict) -> str:
    """Where an invoice is headed: a command waits for the external system to confirm it."""
    return invoice["requested_status"] or invoice["status"]


@pytest.fixture
async def customer(client: httpx.AsyncClient) -> int:
    r = await client.post("/api/v1/customers", json={"name": "Inv Co", "email": "inv@example.com"})
    return int(r.json()["id"])


def draft(customer: int, **over) -> dict:  # type: ignore[no-untyped-def]
    return {"customer_id": customer, "currency": "usd", "description": "March",
            "collection_method": "send_invoice", "days_until_due": 30, "lines": LINES, **over}


async def test_create_read_update_delete_a_draft(client: httpx.AsyncClient, db, customer: int) -> None:  # type: ignore[no-untyped-def]
    r = await client.post("/api/v1/invoices", json=draft(customer))
    assert r.status_code == 201, r.text
    inv = r.json()
    assert inv["status"] == "draft" and inv["number"] is None and inv["version"] == 1
    assert inv["total"] == 3 * 1500 + 5000 + 2 * 250 and inv["amount_paid"] == 0
    assert [(x["description"], x["amount"]) for x in inv["lines"]] == [("Seats", 4500), ("Support", 5000),
                                                                        ("Setup", 500)]
    assert [x["position"] for x in inv["lines"]] == [0, 1, 2]
    # Stripe keeps a due date, not a term: the term resolves to a date both sides hold.
    assert inv["days_until_due"] == 30 and inv["due_date"] == str(datetime.now(UTC).date() + timedelta(days=30))
    iid, line_ids = inv["id"], [x["id"] for x in inv["lines"]]

    assert (await client.get(f"/api/v1/invoices/{iid}")).json() == inv

    # A line edit without ids keeps the lines at their positions (an update on the other side, not new lines).
    edited = [dict(LINES[0], quantity=4), LINES[1], LINES[2]]
    r = await client.patch(f"/api/v1/invoices/{iid}", json={"description": "April", "lines": edited})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["description"] == "April" and out["version"] == 2 and out["total"] == 6000 + 5000 + 500
    assert [x["id"] for x in out["lines"]] == line_ids and out["lines"][0]["amount"] == 6000

    # With ids: reorder, drop one, add one.
    r = await client.patch(f"/api/v1/invoices/{iid}", json={"lines": [
        {"id": line_ids[2], **LINES[2]}, {"id": line_ids[0], **edited[0]},
        {"description": "Extra", "quantity": 1, "unit_amount": 99}]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [x["id"] for x in out["lines"]][:2] == [line_ids[2], line_ids[0]]
    assert out["lines"][2]["id"] not in line_ids and out["total"] == 500 + 6000 + 99
    assert await _count(db, "SELECT count(*) FROM invoice_lines WHERE invoice_id = :i", i=iid) == 3

    # Switching due terms: to a due date, then to charge_automatically (which drops due terms).
    r = await client.patch(f"/api/v1/invoices/{iid}", json={"days_until_due": None, "due_date": "2031-01-31"})
    assert r.status_code == 200 and r.json()["due_date"] == "2031-01-31" and r.json()["days_until_due"] is None
    r = await client.patch(f"/api/v1/invoices/{iid}", json={"collection_method": "charge_automatically"})
    assert r.status_code == 200 and r.json()["due_date"] is None

    # A PATCH that changes nothing writes nothing.
    version = r.json()["version"]
    before = await _count(db, "SELECT count(*) FROM outbox")
    r = await client.patch(f"/api/v1/invoices/{iid}", json={"description": "April", "lines": [
        {k: v for k, v in x.items() if k in ("description", "quantity", "unit_amount")} for x in out["lines"]]})
    assert r.status_code == 200 and r.json()["version"] == version
    assert await _count(db, "SELECT count(*) FROM outbox") == before

    r = await client.delete(f"/api/v1/invoices/{iid}")
    assert r.status_code == 204
    got = (await client.get(f"/api/v1/invoices/{iid}")).json()
    assert got["deleted_at"] is not None and got["version"] == version + 1
    assert (await client.patch(f"/api/v1/invoices/{iid}", json={"description": "x"})).status_code == 404
    assert (await client.delete(f"/api/v1/invoices/{iid}")).status_code == 204  # again: changes nothing
    assert (await client.get(f"/api/v1/invoices/{iid}")).json()["version"] == version + 1
    # Every write left one outbox message for the invoice kind.
    assert await _count(db, "SELECT count(*) FROM outbox WHERE key = :k", k=f"invoice:{iid}") == version + 1


async def test_commands_walk_the_ladder_and_frozen_fields_are_refused(
        client: httpx.AsyncClient, db, customer: int) -> None:  # type: ignore[no-untyped-def]
    iid = (await client.post("/api/v1/invoices", json=draft(customer))).json()["id"]
    for name in ("void", "mark_uncollectible"):  # not from a draft
        r = await client.post(f"/api/v1/invoices/{iid}/{name}")
        assert r.status_code == 409 and r.json()["error"]["type"] == "conflict", r.text
    r = await client.post(f"/api/v1/invoices/{iid}/finalize")
    assert r.status_code in (200, 202) and effective(r.json()) == "open", r.text
    again = await client.post(f"/api/v1/invoices/{iid}/finalize")
    assert again.status_code == 200 and again.json()["version"] == r.json()["version"]

    before = await _snapshot(db)
    for body, field in [({"lines": [{"description": "x", "quantity": 1, "unit_amount": 1}]}, "lines"),
                        ({"description": "changed"}, "description"),
                        ({"days_until_due": 5}, "days_until_due"),
                        ({"collection_method": "charge_automatically"}, "collection_method")]:
        r = await client.patch(f"/api/v1/invoices/{iid}", json=body)
        assert r.status_code == 409, r.text
        assert field in r.json()["error"]["message"] and "finaliz" in r.json()["error"]["message"]
    assert await _snapshot(db) == before
    # The same values are no change, so no refusal.
    assert (await client.patch(f"/api/v1/invoices/{iid}", json={"description": "March"})).status_code == 200

    r = await client.post(f"/api/v1/invoices/{iid}/mark_uncollectible")
    assert r.status_code in (200, 202) and effective(r.json()) == "uncollectible"
    r = await client.post(f"/api/v1/invoices/{iid}/pay")
    assert r.status_code in (200, 202) and effective(r.json()) == "paid"
    before = await _snapshot(db)
    for name in ("void", "finalize", "mark_uncollectible"):  # paid is terminal
        r = await client.post(f"/api/v1/invoices/{iid}/{name}")
        assert r.status_code == 409 and "paid" in r.json()["error"]["message"], r.text
    assert await _snapshot(db) == before
    assert (await client.post(f"/api/v1/invoices/{iid}/bogus")).status_code == 422

    r = await client.delete(f"/api/v1/invoices/{iid}")
    assert r.status_code == 409 and "paid" in r.json()["error"]["message"]
    assert await _snapshot(db) == before

    # Deleting a finalized invoice voids it (it cannot be deleted), recorded in the sync log.
    i1 = (await client.post("/api/v1/invoices", json=draft(customer))).json()["id"]
    await client.post(f"/api/v1/invoices/{i1}/finalize")
    r = await client.delete(f"/api/v1/invoices/{i1}")
    assert r.status_code == 202 and effective(r.json()) == "void" and r.json()["deleted_at"] is None, r.text
    assert await _count(db, "SELECT count(*) FROM sync_events WHERE internal_id = :i AND kind = 'invoice'"
                            " AND operation = 'delete' AND status = 'mapped'", i=i1) == 1
    assert (await client.delete(f"/api/v1/invoices/{i1}")).status_code == 409

    # Void from open; paying a draft is allowed (Stripe finalizes it first).
    i2 = (await client.post("/api/v1/invoices", json=draft(customer))).json()["id"]
    await client.post(f"/api/v1/invoices/{i2}/finalize")
    assert effective((await client.post(f"/api/v1/invoices/{i2}/void")).json()) == "void"
    assert (await client.post(f"/api/v1/invoices/{i2}/pay")).status_code == 409
    i3 = (await client.post("/api/v1/invoices", json=draft(customer))).json()["id"]
    assert effective((await client.post(f"/api/v1/invoices/{i3}/pay")).json()) == "paid"


async def test_list_pagination_and_filters(client: httpx.AsyncClient, customer: int) -> None:
    other = (await client.post("/api/v1/customers", json={"name": "B", "email": "b@example.com"})).json()["id"]
    mine = [(await client.post("/api/v1/invoices", json=draft(customer, lines=[]))).json()["id"] for _ in range(5)]
    theirs = (await client.post("/api/v1/invoices", json=draft(other))).json()["id"]
    await client.post(f"/api/v1/invoices/{mine[1]}/finalize")
    await client.delete(f"/api/v1/invoices/{mine[4]}")

    seen, cursor = [], None
    while True:
        params = {"limit": 2, "customer_id": customer, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/invoices", params=params)).json()
        seen += [i["id"] for i in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == mine[:4]
    everything = (await client.get("/api/v1/invoices", params={"include_deleted": True})).json()["data"]
    assert [i["id"] for i in everything] == [*mine, theirs]
    drafts = (await client.get("/api/v1/invoices", params={"status": "draft", "customer_id": customer})).json()
    finalized = await client.get("/api/v1/invoices", params={"status": "open"})
    opened = [i["id"] for i in finalized.json()["data"]]
    # Either confirmed at once (no system holds invoices) or still a draft until Stripe confirms.
    assert opened in ([mine[1]], [])
    assert {i["id"] for i in drafts["data"]} == set(mine[:4]) - set(opened)
    assert (await client.get("/api/v1/invoices", params={"status": "bogus"})).status_code == 422
    assert (await client.get("/api/v1/invoices", params={"cursor": "9" * 25})).json()["data"] == []


@pytest.mark.parametrize(("change", "status"), [
    ({"currency": "zzz"}, 422),
    ({"currency": "US"}, 422),
    ({"currency": 840}, 422),
    ({"lines": [{"description": "x", "quantity": -1, "unit_amount": 100}]}, 422),
    ({"lines": [{"description": "x", "quantity": 1, "unit_amount": 10.5}]}, 422),
    ({"lines": [{"description": "x", "quantity": 1, "unit_amount": 10.0}]}, 422),
    ({"lines": [{"description": "x", "quantity": 1, "unit_amount": "10"}]}, 422),
    ({"lines": [{"description": "x", "quantity": 1.5, "unit_amount": 10}]}, 422),
    ({"lines": [{"description": "x", "quantity": 1, "unit_amount": -10}]}, 422),
    ({"lines": [{"description": "x", "quantity": 1000, "unit_amount": 99_999_999}]}, 422),
    ({"lines": [{"description": f"l{i}", "quantity": 1, "unit_amount": 1} for i in range(251)]}, 422),
    ({"lines": [{"id": 1, "description": "x", "quantity": 1, "unit_amount": 1}]}, 422),
    ({"lines": [{"description": "x", "quantity": 1, "unit_amount": 1, "bogus": 1}]}, 422),
    ({"collection_method": "send_invoice", "days_until_due": None}, 422),
    ({"collection_method": "send_invoice", "due_date": "2030-01-01"}, 422),
    ({"collection_method": "charge_automatically"}, 422),
    ({"collection_method": "wire"}, 422),
    ({"days_until_due": -1}, 422),
    ({"due_date": "1970-01-01", "days_until_due": None}, 422),
    ({"description": "x" * 501}, 422),
    ({"description": "nul\x00"}, 422),
    ({"customer_id": 10**12}, 422),
    ({"customer_id": "1"}, 422),
    ({"status": "paid"}, 422),
    ({"number": "INV-1"}, 422),
])
async def test_bad_input_is_refused_and_changes_nothing(client: httpx.AsyncClient, db, customer: int,  # type: ignore[no-untyped-def]
                                                        change: dict, status: int) -> None:
    before = await _snapshot(db)
    r = await client.post("/api/v1/invoices", json=draft(customer, **change))
    assert r.status_code == status, r.text
    assert r.json()["error"]["type"] == "validation_error" and r.json()["error"]["message"]
    assert await _snapshot(db) == before


async def test_bad_patches_change_nothing(client: httpx.AsyncClient, db, customer: int) -> None:  # type: ignore[no-untyped-def]
    other = (await client.post("/api/v1/customers", json={"name": "B", "email": "b@example.com"})).json()["id"]
    inv = (await client.post("/api/v1/invoices", json=draft(customer))).json()
    iid = inv["id"]
    foreign_line = (await client.post("/api/v1/invoices", json=draft(customer))).json()["lines"][0]["id"]
    before = await _snapshot(db)
    for body, status in [
        ({"currency": "eur"}, 409), ({"customer_id": other}, 409), ({"currency": "zzz"}, 422),
        ({"currency": None}, 422), ({"lines": None}, 422), ({"description": None}, 422),
        ({"days_until_due": 3, "due_date": "2031-01-01"}, 422), ({"collection_method": "charge_automatically", "days_until_due": 3}, 422),
        ({"lines": [{"id": foreign_line, "description": "x", "quantity": 1, "unit_amount": 1}]}, 422),
        ({"lines": [{"id": inv["lines"][0]["id"], "description": "x", "quantity": 1, "unit_amount": 1},
                    {"id": inv["lines"][0]["id"], "description": "y", "quantity": 1, "unit_amount": 1}]}, 422),
        ({"lines": [{"description": "x", "quantity": -2, "unit_amount": 1}]}, 422),
        ({"lines": [{"description": "x", "quantity": 1, "unit_amount": 1}] * 251}, 422),
        ({"bogus": True}, 422),
    ]:
        r = await client.patch(f"/api/v1/invoices/{iid}", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["message"]
    for method, path in [("GET", "/api/v1/invoices/987654321"), ("PATCH", "/api/v1/invoices/987654321"),
                         ("DELETE", "/api/v1/invoices/987654321"), ("POST", "/api/v1/invoices/987654321/finalize"),
                         ("GET", "/api/v1/invoices/987654321/sync")]:
        r = await client.request(method, path, **({"json": {"description": "x"}} if method == "PATCH" else {}))
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    assert (await client.get("/api/v1/invoices/abc")).status_code == 422
    r = await client.post("/api/v1/invoices", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert await _snapshot(db) == before


async def test_customer_with_unsettled_invoices_cannot_be_deleted(client: httpx.AsyncClient, db,  # type: ignore[no-untyped-def]
                                                                  customer: int) -> None:
    iid = (await client.post("/api/v1/invoices", json=draft(customer))).json()["id"]
    await client.post(f"/api/v1/invoices/{iid}/finalize")
    before = await _snapshot(db)
    r = await client.delete(f"/api/v1/customers/{customer}")
    assert r.status_code == 409 and "invoices" in r.json()["error"]["message"], r.text
    assert await _snapshot(db) == before
    await client.post(f"/api/v1/invoices/{iid}/void")
    # Asked to void, not yet confirmed: not settled (it may not even exist over there yet).
    assert (await client.delete(f"/api/v1/customers/{customer}")).status_code == 409
    async with db() as s:  # the external system's confirmation, as the sync engine would write it
        await s.execute(text("UPDATE invoices SET status = 'void', requested_status = NULL WHERE id = :i"),
                        {"i": iid})
        await s.commit()
    assert (await client.delete(f"/api/v1/customers/{customer}")).status_code == 204
    # A deleted customer takes no new invoices.
    r = await client.post("/api/v1/invoices", json=draft(customer))
    assert r.status_code == 422 and "customer" in r.json()["error"]["message"]


async def test_sync_state_of_an_invoice(client: httpx.AsyncClient, customer: int) -> None:
    iid = (await client.post("/api/v1/invoices", json=draft(customer))).json()["id"]
    r = await client.get(f"/api/v1/invoices/{iid}/sync")
    assert r.status_code == 200 and r.json()["invoice_id"] == iid and "systems" in r.json()


async def test_auth_required(client: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/api/v1/invoices"), ("POST", "/api/v1/invoices"), ("GET", "/api/v1/invoices/1"),
                         ("POST", "/api/v1/invoices/1/finalize")]:
        r = await client.request(method, path, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
