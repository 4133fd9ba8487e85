"""Issue 13: the Stripe connector's invoice mapping against the emulator, through the official SDK.

The engine decides what to push; these check that each push is the right Stripe calls (one per change),
that commands move Stripe's status and explain a refusal, and that lines round-trip.
"""

from __future__ import annotations

import stripe

from tests.conftest import emulator_call
from twoway.connectors.base import Refused
from twoway.connectors.stripe import invoices as inv
from twoway.connectors.stripe.connector import StripeConnector
from twoway.invoices import wire
from twoway.settings import Settings

LINES = [{"id": 11, "description": "Seats", "quantity": 3, "unit_amount": 1500},
         {"id": 12, "description": "Support", "quantity": 1, "unit_amount": 5000},
         {"id": 13, "description": "Setup", "quantity": 2, "unit_amount": 250}]


def _writes(emulator: str) -> dict[str, int]:
    stats = emulator_call(emulator, "/_emulator/stats")
    return {k: v for k, v in stats["requests"].items() if not k.startswith("GET")}


def _fields(customer: str, lines: list[dict] = LINES, **over: str) -> dict[str, str]:
    return {"customer_id": customer, "currency": "usd", "collection_method": "send_invoice",
            "due_date": "2031-03-01", "description": "March", "lines": wire.encode_lines(lines), "status": "draft",
            **over}


async def test_draft_edits_and_commands(settings: Settings, stripe_client: stripe.StripeClient, emulator: str) -> None:
    conn = StripeConnector.from_settings(settings)
    cus = stripe_client.v1.customers.create({"name": "Inv", "email": "inv@example.com"}).id
    created = await conn.create(inv.KIND, 7, _fields(cus), "twoway:stripe:invoice:7:create:v1")
    si = stripe_client.v1.invoices.retrieve(created.external_id)
    assert si.metadata["internal_id"] == "7" and si.auto_advance is False and si.status == "draft"
    assert si.total == 4500 + 5000 + 500
    items = stripe_client.v1.invoices.line_items.list(si.id).data
    assert sorted((i.description, i.amount, i.metadata["internal_id"]) for i in items) == [
        ("Seats", 4500, "11"), ("Setup", 500, "13"), ("Support", 5000, "12")]
    assert created.fields == inv.from_stripe(si.to_dict(), [i.to_dict() for i in items]) | {
        k: created.fields[k] for k in wire.AMOUNTS}  # totals of the create answer may predate the items
    assert created.internal_id == 7 and wire.decode_lines(created.fields["lines"]) == LINES

    # A replayed create (same key) makes nothing new.
    again = await conn.create(inv.KIND, 7, _fields(cus), "twoway:stripe:invoice:7:create:v1")
    assert again.external_id == si.id and len(stripe_client.v1.invoices.line_items.list(si.id).data) == 3

    # One edit of a line, one of the description: one Stripe write each.
    before = _writes(emulator)
    edited = [dict(LINES[0], quantity=4), LINES[1], LINES[2]]
    await conn.update(inv.KIND, si.id, {"description": "April", "lines": wire.encode_lines(edited)}, "k:v2:abc")
    after = _writes(emulator)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    assert sum(delta.values()) == 2, delta
    fetched = await conn.fetch(inv.KIND, si.id)
    assert fetched.fields["description"] == "April" and wire.decode_lines(fetched.fields["lines"]) == edited
    assert fetched.fields["total"] == str(6000 + 5000 + 500)

    # Lines removed and added.
    await conn.update(inv.KIND, si.id, {"lines": wire.encode_lines([LINES[1], {**LINES[0], "id": 14}])}, "k:v3:def")
    got = wire.decode_lines((await conn.fetch(inv.KIND, si.id)).fields["lines"])
    assert [(g["id"], g["description"]) for g in got] == [(12, "Support"), (14, "Seats")]

    # Finalize: Stripe opens it and numbers it.
    moved = await conn.update(inv.KIND, si.id, {"status": "open"}, "k:v4:fin")
    assert moved.fields["status"] == "open" and moved.fields["number"]
    # Asking again is no error (a replay, or it got there another way).
    assert (await conn.update(inv.KIND, si.id, {"status": "open"}, "k:v5:fin")).fields["status"] == "open"
    # Paid in Stripe while we ask for void: refused, with the invoice as it stands.
    stripe_client.v1.invoices.pay(si.id, {"paid_out_of_band": True})
    try:
        await conn.update(inv.KIND, si.id, {"status": "void"}, "k:v6:void")
        raise AssertionError("void of a paid invoice went through")
    except Refused as exc:
        assert exc.transient and "paid" in str(exc) and exc.fields == ("status",)
        assert exc.current.fields["status"] == "paid"
    paid = await conn.fetch(inv.KIND, si.id)
    assert paid.fields["status"] == paid.fields["confirmed_status"] == "paid"
    assert paid.fields["amount_paid"] == str(5000 + 4500)
    await conn.close()


async def test_claims_stripe_items_and_pages_lines(settings: Settings, stripe_client: stripe.StripeClient) -> None:
    conn = StripeConnector.from_settings(settings)
    cus = stripe_client.v1.customers.create({"name": "Big", "email": "big@example.com"}).id
    si = stripe_client.v1.invoices.create({"customer": cus, "collection_method": "send_invoice",
                                           "days_until_due": 10, "description": "from stripe"})
    for n in range(12):
        stripe_client.v1.invoice_items.create({"customer": cus, "invoice": si.id, "amount": 100 + n,
                                               "currency": "usd", "description": f"made in stripe {n}"})
    theirs = await conn.fetch(inv.KIND, si.id)
    entries = wire.decode_lines(theirs.fields["lines"])
    assert len(entries) == 12 and all(e["id"] is None for e in entries)  # read past the embedded first 10
    assert theirs.internal_id is None and theirs.fields["customer_id"] == cus

    # Our import gave them ids: the push claims the very same items, creating and deleting none.
    ours = [{**e, "id": 100 + n} for n, e in enumerate(entries)]
    await conn.set_internal_id(inv.KIND, si.id, 55, "k:adopt")
    await conn.update(inv.KIND, si.id, {"lines": wire.encode_lines(ours)}, "k:v2:claim")
    after = await conn.fetch(inv.KIND, si.id)
    assert after.internal_id == 55 and wire.decode_lines(after.fields["lines"]) == ours
    assert len(stripe_client.v1.invoice_items.list({"invoice": si.id, "limit": 100}).data) == 12
    assert (await conn.find_by_internal_id(inv.KIND, 55)) is not None

    # A draft deleted; deleting again is no error; the fetch says deleted.
    await conn.delete(inv.KIND, si.id, "k:delete")
    await conn.delete(inv.KIND, si.id, "k:delete2")
    assert (await conn.fetch(inv.KIND, si.id)).deleted
    await conn.close()


def test_events_are_hints_for_the_invoice() -> None:
    invoice = {"id": "in_1", "object": "invoice", "customer": "cus_1", "status": "open", "currency": "usd",
               "metadata": {"internal_id": "3"}, "lines": {"data": [], "has_more": False}, "total": 0}
    event = inv.event_from_payload({"id": "evt_1", "type": "invoice.finalized", "created": 1,
                                    "data": {"object": invoice}})
    assert event is not None and event.kind == "invoice" and event.record is not None
    assert event.record.internal_id == 3 and event.record.fields["status"] == "open"
    paged = inv.event_from_payload({"id": "evt_2", "type": "invoice.updated", "created": 1, "data": {
        "object": {**invoice, "lines": {"data": [], "has_more": True}}}})
    assert paged is not None and paged.record is None  # only the first page of lines: read it whole
    item = inv.event_from_payload({"id": "evt_3", "type": "invoiceitem.created", "created": 1, "data": {
        "object": {"id": "ii_1", "invoice": "in_1"}}})
    assert item is not None and item.external_id == "in_1" and item.record is None
    pending = inv.event_from_payload({"id": "evt_4", "type": "invoiceitem.created", "created": 1, "data": {
        "object": {"id": "ii_2", "invoice": None}}})
    assert pending is None
    gone = inv.event_from_payload({"id": "evt_5", "type": "invoice.deleted", "created": 1, "data": {
        "object": invoice}})
    assert gone is not None and gone.record is not None and gone.record.deleted


async def test_frozen_fields_are_refused_with_the_invoice_as_it_stands(settings: Settings,
                                                                      stripe_client: stripe.StripeClient) -> None:
    conn = StripeConnector.from_settings(settings)
    cus = stripe_client.v1.customers.create({"name": "F", "email": "f@example.com"}).id
    created = await conn.create(inv.KIND, 9, _fields(cus), "twoway:stripe:invoice:9:create:v1")
    stripe_client.v1.invoices.finalize_invoice(created.external_id)
    for changes in ({"description": "late"}, {"lines": wire.encode_lines(LINES[:1])}):
        try:
            await conn.update(inv.KIND, created.external_id, changes, f"k:{sorted(changes)}")
            raise AssertionError(f"{changes} went through on a finalized invoice")
        except Refused as exc:
            assert set(exc.fields) == set(changes) and exc.current.fields["status"] == "open"
            assert wire.decode_lines(exc.current.fields["lines"]) == LINES
    await conn.close()
