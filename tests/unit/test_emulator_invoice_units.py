"""Unit tests of the emulator's invoice pieces: the lifecycle table, totals, change diffs, storage."""

from __future__ import annotations

from decimal import Decimal

import pytest

from twoway.emulators.stripe import lifecycle, locks, totals
from twoway.emulators.stripe.billing import previous_attributes
from twoway.emulators.stripe.book import InvoiceBook
from twoway.emulators.stripe.errors import StripeError
from twoway.emulators.stripe.lifecycle import DRAFT, OPEN, PAID, UNCOLLECTIBLE, VOID
from twoway.emulators.stripe.state import Store


@pytest.mark.parametrize(
    ("status", "action", "target"),
    [
        (DRAFT, "finalize", OPEN),
        (DRAFT, "pay", PAID),
        (OPEN, "pay", PAID),
        (OPEN, "void", VOID),
        (OPEN, "mark_uncollectible", UNCOLLECTIBLE),
        (UNCOLLECTIBLE, "pay", PAID),
        (UNCOLLECTIBLE, "void", VOID),
    ],
)
def test_allowed_transitions(status: str, action: str, target: str) -> None:
    assert lifecycle.next_status(status, action) == target


@pytest.mark.parametrize(
    ("status", "action", "message"),
    [
        (OPEN, "finalize", "can't re-finalize a non-draft invoice"),
        (PAID, "finalize", "can't re-finalize"),
        (PAID, "pay", "Invoice is already paid"),
        (VOID, "pay", "Invoice is already void"),
        (DRAFT, "void", "open or uncollectible"),
        (PAID, "void", "cannot void a paid invoice"),
        (VOID, "void", "already void"),
        (DRAFT, "mark_uncollectible", "only mark an open invoice"),
        (UNCOLLECTIBLE, "mark_uncollectible", "only mark an open invoice"),
        (PAID, "mark_uncollectible", "only mark an open invoice"),
    ],
)
def test_refused_transitions_are_400s(status: str, action: str, message: str) -> None:
    with pytest.raises(StripeError) as exc:
        lifecycle.next_status(status, action)
    assert exc.value.status == 400 and exc.value.type == "invalid_request_error" and message in exc.value.message


def test_terminal_states_have_no_way_out() -> None:
    for status in lifecycle.TERMINAL:
        assert not [a for (s, a) in lifecycle.TRANSITIONS if s == status]


def test_delete_and_editability_rules() -> None:
    lifecycle.check_delete(DRAFT)
    for status in (OPEN, PAID, VOID, UNCOLLECTIBLE):
        with pytest.raises(StripeError, match="You can only delete draft invoices"):
            lifecycle.check_delete(status)
    assert lifecycle.frozen_params(DRAFT, {"description": "x", "collection_method": "y"}) == []
    assert lifecycle.frozen_params(OPEN, {"metadata": {}, "auto_advance": "true"}) == []
    assert lifecycle.frozen_params(PAID, {"footer": "f", "description": "d", "metadata": {}}) == ["description", "footer"]
    assert not lifecycle.items_locked(None) and not lifecycle.items_locked(DRAFT)
    assert lifecycle.items_locked(OPEN) and lifecycle.items_locked(VOID)
    assert lifecycle.locked_items_error("add").code == "invoice_not_editable"


def test_totals_from_items() -> None:
    got = totals.compute([3000, 999, 750])
    assert got["subtotal"] == got["total"] == got["amount_due"] == got["amount_remaining"] == 4749
    assert got["amount_paid"] == 0
    paid = totals.compute([3000, 999, 750], amount_paid=4749, amount_paid_off_stripe=4749)
    assert paid["amount_remaining"] == 0 and paid["amount_paid_off_stripe"] == 4749
    credit = totals.compute([100, -500])
    assert credit["total"] == -400 and credit["amount_due"] == 0 and credit["amount_remaining"] == 0
    assert totals.compute([])["total"] == 0


def test_line_amounts_and_decimals() -> None:
    assert totals.line_amount(Decimal(1500), Decimal(2)) == 3000
    assert totals.line_amount(Decimal("0.5"), Decimal(3)) == 2  # 1.5 rounds half up
    assert totals.line_amount(Decimal("12.25"), Decimal("1.5")) == 18
    assert totals.parse_decimal("1500") == Decimal(1500)
    assert totals.parse_decimal("nan") is None and totals.parse_decimal("abc") is None
    assert totals.parse_decimal("") is None and totals.parse_decimal(None) is None
    assert totals.decimal_text(Decimal("2.500")) == "2.5" and totals.decimal_text(Decimal("1E+3")) == "1000"
    assert "usd" in totals.CURRENCIES and "eur" in totals.CURRENCIES and "xyz" not in totals.CURRENCIES


def test_previous_attributes_nested_and_skips_lines() -> None:
    old = {"status": "draft", "number": None, "metadata": {"a": "1", "b": "2"}, "lines": [1],
           "status_transitions": {"finalized_at": None, "paid_at": None}}
    new = {"status": "open", "number": "X-0001", "metadata": {"a": "1", "c": "3"}, "lines": [2],
           "status_transitions": {"finalized_at": 5, "paid_at": None}}
    assert previous_attributes(old, new) == {
        "status": "draft",
        "number": None,
        "metadata": {"b": "2", "c": None},
        "status_transitions": {"finalized_at": None},
    }
    assert previous_attributes(new, new) == {}


def _item(ident: str, invoice: str | None) -> dict[str, object]:
    return {"id": ident, "invoice": invoice}


def test_book_attaches_detaches_and_restores() -> None:
    changes: list[int] = []
    book = InvoiceBook(lambda: changes.append(1))
    book.put_invoice({"id": "in_1"})
    book.put_item(_item("ii_a", "in_1"))
    book.put_item(_item("ii_b", None))
    book.put_item(_item("ii_b", "in_1"))  # a pending item joins the invoice
    assert book.attached["in_1"] == ["ii_a", "ii_b"] and book.line_ids["ii_b"].startswith("il_")
    book.remove_item("ii_a")
    assert book.attached["in_1"] == ["ii_b"] and "ii_a" not in book.line_ids and "ii_a" in book.deleted_items
    copy = InvoiceBook(lambda: None)
    copy.restore(book.snapshot())
    assert copy.attached == book.attached and copy.line_ids == book.line_ids
    assert copy.item_log.ids == ["ii_a", "ii_b"] and "ii_a" in copy.deleted_items
    book.remove_invoice("in_1")
    assert "in_1" in book.deleted_invoices and "in_1" not in book.attached
    assert len(changes) == 6


def test_which_invoice_a_write_locks() -> None:
    store = Store()
    store.book.put_invoice({"id": "in_1"})
    store.book.put_item(_item("ii_a", "in_1"))
    store.book.put_item(_item("ii_p", None))
    assert locks.invoice_of(store, "POST /v1/invoices/{id}/finalize", "in_1", b"") == "in_1"
    assert locks.invoice_of(store, "POST /v1/invoices/{id}/lines/{id}", "in_1/il_9", b"") == "in_1"
    assert locks.invoice_of(store, "DELETE /v1/invoices/{id}", "in_1", b"") == "in_1"
    assert locks.invoice_of(store, "POST /v1/invoiceitems", "", b"customer=cus_1&invoice=in_1&amount=5") == "in_1"
    assert locks.invoice_of(store, "POST /v1/invoiceitems", "", b"customer=cus_1&amount=5") is None
    assert locks.invoice_of(store, "DELETE /v1/invoiceitems/{id}", "ii_a", b"") == "in_1"
    assert locks.invoice_of(store, "POST /v1/invoiceitems/{id}", "ii_p", b"") is None
    assert locks.invoice_of(store, "POST /v1/invoices", "", b"customer=cus_1") is None
    assert locks.invoice_of(store, "POST /v1/customers/{id}", "cus_1", b"") is None
    assert locks.lock_timeout().status == 429 and locks.lock_timeout().code == "lock_timeout"
