"""Issue 13: the invoice's synced text form, Stripe's lines in our terms, and how a merged status lands."""

from __future__ import annotations

from datetime import date

from twoway.connectors.stripe import invoices as inv
from twoway.invoices import wire
from twoway.invoices.models import Invoice, InvoiceLine
from twoway.invoices.sync_store import apply, synced_fields


def _invoice(**over: object) -> Invoice:
    values = dict(id=1, customer_id=5, currency="usd", collection_method="send_invoice", days_until_due=30,
                  due_date=date(2031, 1, 31), description="d", status="draft", requested_status=None, number=None,
                  subtotal=0, total=0, amount_due=0, amount_paid=0, hosted_invoice_url=None, version=1,
                  lines=[InvoiceLine(id=10, position=0, description="a", quantity=2, unit_amount=5, amount=10, tagged=True),
                         InvoiceLine(id=11, position=1, description="b", quantity=1, unit_amount=7, amount=7, tagged=True)])
    values.update(over)
    return Invoice(**values)


def test_lines_encode_in_one_order_whatever_the_position() -> None:
    a = [{"id": 2, "description": "x", "quantity": 1, "unit_amount": 3}, {"id": 1, "description": "y",
                                                                           "quantity": 2, "unit_amount": 4}]
    assert wire.encode_lines(a) == wire.encode_lines(reversed(a))
    assert wire.decode_lines(wire.encode_lines(a)) == sorted(a, key=lambda e: e["id"])
    assert wire.decode_lines("") == []


def test_stripe_lines_in_our_terms() -> None:
    ours = {"id": 10, "description": "a", "quantity": 3, "unit_amount": 1500}
    sent = inv.line_params(ours)
    # What Stripe answers for a line sent as an amount (quantity 1) with our figures in its metadata.
    line = {"amount": sent["amount"], "description": "a", "quantity": 1, "metadata": sent["metadata"],
            "pricing": {"unit_amount_decimal": "4500"}}
    assert inv.line_entry(line) == ours
    # Edited in Stripe (the amount no longer matches our figures): Stripe's numbers win.
    assert inv.line_entry({**line, "amount": 999, "pricing": {"unit_amount_decimal": "999"}}) == {
        **ours, "quantity": 1, "unit_amount": 999}
    # Made in Stripe with a quantity and a whole unit price; and a fractional one, kept as its amount.
    made = {"amount": 600, "quantity": 3, "pricing": {"unit_amount_decimal": "200"}, "metadata": {}}
    assert inv.line_entry(made) == {"id": None, "description": "", "quantity": 3, "unit_amount": 200}
    odd = {"amount": 5, "quantity": 2, "pricing": {"unit_amount_decimal": "2.5"}, "metadata": {}}
    assert inv.line_entry(odd) == {"id": None, "description": "", "quantity": 1, "unit_amount": 5}


def test_due_dates_round_trip_through_timestamps() -> None:
    stamp = inv.due_timestamp("2031-01-31")
    assert inv.due_text(stamp) == "2031-01-31" and inv.due_text(None) == ""


def test_ours_and_theirs_agree_in_text() -> None:
    invoice = _invoice()
    ours = synced_fields(invoice)
    theirs = inv.from_stripe({"id": "in_1", "customer": "cus_1", "currency": "usd", "status": "draft",
                              "collection_method": "send_invoice", "due_date": inv.due_timestamp("2031-01-31"),
                              "description": "d", "subtotal": 17, "total": 17, "amount_due": 17, "amount_paid": 0},
                             [{"amount": 10, "description": "a", "metadata": {"internal_id": "10", "quantity": "2",
                                                                             "unit_amount": "5"}},
                              {"amount": 7, "description": "b", "metadata": {"internal_id": "11", "quantity": "1",
                                                                            "unit_amount": "7"}}])
    same = [k for k in wire.FIELDS if k not in ("customer_id", *wire.THEIRS)]
    assert {k: ours[k] for k in same} == {k: theirs[k] for k in same}
    assert set(ours) == set(theirs) == set(wire.FIELDS)


def test_a_confirmation_moves_status_and_ends_the_command() -> None:
    invoice = _invoice(requested_status="open")
    assert synced_fields(invoice)["status"] == "open" and synced_fields(invoice)["confirmed_status"] == "draft"
    apply(invoice, {"confirmed_status": "open", "number": "INV-1", "total": "17"})
    assert (invoice.status, invoice.requested_status, invoice.number, invoice.total) == ("open", None, "INV-1", 17)
    # Paid over there while we asked for void: their terminal state holds, our request ends.
    invoice = _invoice(status="open", requested_status="void")
    apply(invoice, {"status": "paid", "confirmed_status": "paid"})
    assert (invoice.status, invoice.requested_status) == ("paid", None)


def test_their_lines_land_in_ours_keeping_ids_and_order() -> None:
    invoice = _invoice()
    apply(invoice, {"lines": wire.encode_lines([
        {"id": 11, "description": "b2", "quantity": 1, "unit_amount": 7},
        {"id": None, "description": "new", "quantity": 2, "unit_amount": 3}])})
    assert [(line.id, line.description, line.position, line.amount, line.tagged) for line in invoice.lines] == [
        (11, "b2", 0, 7, True), (None, "new", 1, 6, False)]
    # A line made over there is matched by content (it has no id of ours): read again, nothing moves.
    untagged = invoice.lines[1]
    assert wire.decode_lines(synced_fields(invoice)["lines"])[1]["id"] is None
    apply(invoice, {"lines": synced_fields(invoice)["lines"]})
    assert invoice.lines[1] is untagged and len(invoice.lines) == 2
    # A due date changed over there: the term we were given no longer describes it.
    apply(invoice, {"due_date": "2031-02-01"})
    assert invoice.due_date == date(2031, 2, 1) and invoice.days_until_due is None
