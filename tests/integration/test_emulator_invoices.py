"""The Stripe emulator's invoices and invoice items, driven by the official stripe SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from tests.integration.test_emulator import KEY, Emulator, Receiver, admin, faults, sdk_for, subscribe, wait_for


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    emulator = Emulator()
    yield emulator
    emulator.stop()


@pytest.fixture(autouse=True)
def _clean(emu: Emulator) -> None:
    httpx.post(emu.base + "/_emulator/reset", json={"endpoints": True}).raise_for_status()


@pytest.fixture
def sdk(emu: Emulator) -> Any:
    return sdk_for(emu)


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def customer(sdk: Any, name: str = "Ada") -> Any:
    return sdk.v1.customers.create({"name": name, "email": f"{name.lower()}@example.com"})


def draft(sdk: Any, cus: Any, lines: list[tuple[str, int, int]] | None = None, **fields: Any) -> Any:
    params = {"customer": cus.id, "collection_method": "send_invoice", "days_until_due": 30, **fields}
    inv = sdk.v1.invoices.create(params)
    for description, quantity, unit in lines or []:
        sdk.v1.invoice_items.create(
            {
                "customer": cus.id,
                "invoice": inv.id,
                "description": description,
                "quantity": quantity,
                "unit_amount_decimal": str(unit),
                "currency": "usd",
                "metadata": {"internal_id": description},
            }
        )
    return sdk.v1.invoices.retrieve(inv.id)


def events(sdk: Any, type_: str = "*") -> list[Any]:
    return list(sdk.v1.events.list({"type": type_, "limit": 100}).data)


def previous(event: Any) -> dict[str, Any]:
    return dict(event.data.to_dict().get("previous_attributes") or {})


THREE = [("Consulting", 2, 1500), ("Support", 1, 999), ("Travel", 3, 250)]


# -- lifecycle ----------------------------------------------------------------------


def test_draft_with_items_has_lines_and_totals(sdk: Any) -> None:
    cus = customer(sdk)
    inv = draft(sdk, cus, THREE, description="March work", metadata={"internal_id": "7"})
    assert inv.id.startswith("in_") and inv.object == "invoice"
    assert inv.status == "draft" and inv.number is None and inv.customer == cus.id and inv.currency == "usd"
    assert inv.collection_method == "send_invoice" and inv.due_date > time.time() + 29 * 86400
    assert inv.auto_advance is False and inv.metadata.to_dict() == {"internal_id": "7"}
    assert inv.subtotal == inv.total == inv.amount_due == inv.amount_remaining == 3000 + 999 + 750
    assert inv.amount_paid == 0
    assert [line.description for line in inv.lines.data] == ["Consulting", "Support", "Travel"]
    assert inv.lines.total_count == 3 and inv.lines.has_more is False
    assert inv.lines.url == f"/v1/invoices/{inv.id}/lines"
    line = inv.lines.data[0]
    assert line.object == "line_item" and line.id.startswith("il_") and line.quantity == 2
    assert line.amount == 3000 and line.pricing.unit_amount_decimal == Decimal(1500)
    assert line.metadata.to_dict() == {"internal_id": "Consulting"}
    item = sdk.v1.invoice_items.retrieve(line.parent.invoice_item_details.invoice_item)
    assert item.object == "invoiceitem" and item.invoice == inv.id and item.amount == 3000
    assert item.quantity == 2 and item.quantity_decimal == Decimal(2) and item.customer == cus.id


def test_draft_edits_then_finalize_assigns_number(sdk: Any) -> None:
    cus = customer(sdk)
    inv = draft(sdk, cus, THREE)
    item_id = inv.lines.data[1].parent.invoice_item_details.invoice_item
    sdk.v1.invoice_items.update(item_id, {"quantity": 2, "description": "Support x2"})
    inv = sdk.v1.invoices.update(inv.id, {"description": "Edited", "metadata": {"k": "v"}})
    assert inv.description == "Edited" and inv.total == 3000 + 1998 + 750
    first = sdk.v1.invoices.finalize_invoice(inv.id)
    assert first.status == "open" and first.number == f"{cus.invoice_prefix}-0001"
    assert first.status_transitions.finalized_at is not None and first.hosted_invoice_url.startswith("https://")
    assert first.amount_due == first.amount_remaining == 5748 and first.amount_paid == 0
    second = sdk.v1.invoices.finalize_invoice(draft(sdk, cus, THREE[:1]).id)
    assert second.number == f"{cus.invoice_prefix}-0002"
    assert sdk.v1.customers.retrieve(cus.id).next_invoice_sequence == 3


def test_pay_out_of_band_then_terminal(sdk: Any) -> None:
    inv = sdk.v1.invoices.finalize_invoice(draft(sdk, customer(sdk), THREE).id)
    paid = sdk.v1.invoices.pay(inv.id, {"paid_out_of_band": True})
    assert paid.status == "paid" and paid.amount_paid == paid.amount_due == 4749 and paid.amount_remaining == 0
    assert paid.amount_paid_off_stripe == 4749 and paid.status_transitions.paid_at is not None
    with pytest.raises(stripe.InvalidRequestError, match="already paid") as exc:
        sdk.v1.invoices.pay(inv.id, {"paid_out_of_band": True})
    assert exc.value.http_status == 400
    with pytest.raises(stripe.InvalidRequestError, match="void a paid invoice"):
        sdk.v1.invoices.void_invoice(inv.id)
    with pytest.raises(stripe.InvalidRequestError, match="uncollectible"):
        sdk.v1.invoices.mark_uncollectible(inv.id)
    # Metadata stays editable on a finalized invoice; the frozen fields do not.
    assert sdk.v1.invoices.update(inv.id, {"metadata": {"note": "kept"}}).metadata.note == "kept"
    with pytest.raises(stripe.InvalidRequestError, match="Finalized invoices can't be updated in this way") as frozen:
        sdk.v1.invoices.update(inv.id, {"description": "too late"})
    assert frozen.value.param == "description"


def test_void_and_mark_uncollectible(sdk: Any) -> None:
    cus = customer(sdk)
    voided = sdk.v1.invoices.void_invoice(sdk.v1.invoices.finalize_invoice(draft(sdk, cus, THREE).id).id)
    assert voided.status == "void" and voided.status_transitions.voided_at is not None
    with pytest.raises(stripe.InvalidRequestError, match="already void"):
        sdk.v1.invoices.pay(voided.id, {"paid_out_of_band": True})
    inv = sdk.v1.invoices.finalize_invoice(draft(sdk, cus, THREE).id)
    marked = sdk.v1.invoices.mark_uncollectible(inv.id)
    assert marked.status == "uncollectible" and marked.status_transitions.marked_uncollectible_at is not None
    assert sdk.v1.invoices.pay(inv.id, {"paid_out_of_band": True}).status == "paid"
    other = sdk.v1.invoices.mark_uncollectible(sdk.v1.invoices.finalize_invoice(draft(sdk, cus, THREE).id).id)
    assert sdk.v1.invoices.void_invoice(other.id).status == "void"
    kinds = [e.type for e in events(sdk, "invoice.*")]
    assert kinds.count("invoice.voided") == 2 and kinds.count("invoice.marked_uncollectible") == 2
    marked_event = next(e for e in events(sdk, "invoice.marked_uncollectible") if e.data.object.id == inv.id)
    assert marked_event.data.object.status == "uncollectible"


def test_illegal_transitions_give_the_documented_errors(sdk: Any, emu: Emulator) -> None:
    cus = customer(sdk)
    inv = draft(sdk, cus, THREE)
    with pytest.raises(stripe.InvalidRequestError, match="open or uncollectible"):
        sdk.v1.invoices.void_invoice(inv.id)
    with pytest.raises(stripe.InvalidRequestError, match="only mark an open invoice"):
        sdk.v1.invoices.mark_uncollectible(inv.id)
    sdk.v1.invoices.finalize_invoice(inv.id)
    with pytest.raises(stripe.InvalidRequestError, match="can't re-finalize a non-draft invoice") as exc:
        sdk.v1.invoices.finalize_invoice(inv.id)
    assert exc.value.http_status == 400 and exc.value.error is not None and exc.value.error.type == "invalid_request_error"
    with pytest.raises(stripe.InvalidRequestError) as locked:
        sdk.v1.invoice_items.create({"customer": cus.id, "invoice": inv.id, "amount": 100, "currency": "usd"})
    assert locked.value.code == "invoice_not_editable"
    line_item = sdk.v1.invoices.retrieve(inv.id).lines.data[0].parent.invoice_item_details.invoice_item
    with pytest.raises(stripe.InvalidRequestError) as edit:
        sdk.v1.invoice_items.update(line_item, {"quantity": 9})
    assert edit.value.code == "invoice_not_editable"
    with pytest.raises(stripe.InvalidRequestError) as gone:
        sdk.v1.invoice_items.delete(line_item)
    assert gone.value.code == "invoice_not_editable"
    assert sdk.v1.invoices.retrieve(inv.id).total == 4749  # nothing changed
    [dumped] = admin(emu, "GET", "/_emulator/invoices")
    assert dumped["id"] == inv.id and len(dumped["lines"]["data"]) == 3 and dumped["status"] == "open"


def test_delete_draft_only(sdk: Any) -> None:
    cus = customer(sdk)
    inv = draft(sdk, cus, THREE)
    item_ids = [line.parent.invoice_item_details.invoice_item for line in inv.lines.data]
    gone = sdk.v1.invoices.delete(inv.id)
    assert gone.deleted is True and gone.id == inv.id
    with pytest.raises(stripe.InvalidRequestError) as exc:
        sdk.v1.invoices.retrieve(inv.id)
    assert exc.value.http_status == 404 and exc.value.code == "resource_missing"
    for item_id in item_ids:
        with pytest.raises(stripe.InvalidRequestError):
            sdk.v1.invoice_items.retrieve(item_id)
    final = sdk.v1.invoices.finalize_invoice(draft(sdk, cus, THREE).id)
    with pytest.raises(stripe.InvalidRequestError, match=r"You can only delete draft invoices\."):
        sdk.v1.invoices.delete(final.id)
    assert sdk.v1.invoices.retrieve(final.id).status == "open"


def test_zero_invoice_is_paid_at_finalization(sdk: Any) -> None:
    cus = customer(sdk)
    empty = sdk.v1.invoices.finalize_invoice(draft(sdk, cus).id)
    assert empty.status == "paid" and empty.total == 0 and empty.number is not None
    assert empty.status_transitions.finalized_at == empty.status_transitions.paid_at
    credit = draft(sdk, cus, [("Credit", 1, -500)])
    assert credit.total == -500 and credit.amount_due == 0
    assert sdk.v1.invoices.finalize_invoice(credit.id).status == "paid"
    types = [e.type for e in events(sdk, "invoice.*")][:3]
    assert types == ["invoice.updated", "invoice.paid", "invoice.finalized"]


def test_pay_a_draft_finalizes_it_first(sdk: Any) -> None:
    cus = customer(sdk)
    inv = draft(sdk, cus, THREE)
    with pytest.raises(stripe.InvalidRequestError, match="paid_out_of_band"):
        sdk.v1.invoices.pay(inv.id)  # no payment method in the emu: nothing changes
    assert sdk.v1.invoices.retrieve(inv.id).status == "draft"
    paid = sdk.v1.invoices.pay(inv.id, {"paid_out_of_band": True})
    assert paid.status == "paid" and paid.number == f"{cus.invoice_prefix}-0001"
    updated, paid_event, finalized = events(sdk, "invoice.*")[:3]
    assert (updated.type, paid_event.type, finalized.type) == ("invoice.updated", "invoice.paid", "invoice.finalized")
    assert finalized.data.object.status == "open" and paid_event.data.object.status == "paid"
    # One invoice.updated for the whole call goes straight from draft to paid.
    assert previous(updated)["status"] == "draft" and previous(updated)["number"] is None


def test_send_finalizes_a_draft(sdk: Any) -> None:
    cus = customer(sdk)
    inv = draft(sdk, cus, THREE)
    sent = sdk.v1.invoices.send_invoice(inv.id)
    assert sent.status == "open" and sent.number is not None
    assert [e.type for e in events(sdk, "invoice.*")][:3] == ["invoice.updated", "invoice.sent", "invoice.finalized"]
    assert sdk.v1.invoices.send_invoice(inv.id).status == "open"
    auto = sdk.v1.invoices.create({"customer": cus.id})
    with pytest.raises(stripe.InvalidRequestError, match="send_invoice"):
        sdk.v1.invoices.send_invoice(auto.id)


def test_validation_errors(sdk: Any) -> None:
    cus = customer(sdk)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        sdk.v1.invoices.create({})
    assert exc.value.param == "customer" and exc.value.code == "parameter_missing"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        sdk.v1.invoices.create({"customer": "cus_nope"})
    assert exc.value.http_status == 404 and exc.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError, match="due_date or days_until_due"):
        sdk.v1.invoices.create({"customer": cus.id, "collection_method": "send_invoice"})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        sdk.v1.invoices.create({"customer": cus.id, "currency": "xyz"})
    assert exc.value.param == "currency"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        sdk.v1.invoices.retrieve("in_missing")
    assert exc.value.http_status == 404
    inv = sdk.v1.invoices.create({"customer": cus.id})
    with pytest.raises(stripe.InvalidRequestError, match="must match the currency"):
        sdk.v1.invoice_items.create({"customer": cus.id, "invoice": inv.id, "amount": 1, "currency": "eur"})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        sdk.v1.invoice_items.create({"customer": cus.id, "invoice": inv.id, "quantity": -1,
                                        "unit_amount_decimal": "5"})
    assert exc.value.param == "quantity"
    with pytest.raises(stripe.InvalidRequestError, match="must match the invoice's customer"):
        sdk.v1.invoice_items.create({"customer": customer(sdk, "Bo").id, "invoice": inv.id, "amount": 1})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        sdk.v1.invoices.list({"status": "bogus"})
    assert exc.value.param == "status"
    assert sdk.v1.invoices.retrieve(inv.id).lines.total_count == 0
    assert [e.type for e in events(sdk, "invoice*")] == ["invoice.created"]


def test_item_limit_per_invoice(sdk: Any, emu: Emulator) -> None:
    cus = customer(sdk)
    inv = sdk.v1.invoices.create({"customer": cus.id})
    with httpx.Client(base_url=emu.base, headers={"Authorization": f"Bearer {KEY}"}) as http:
        for n in range(250):
            body = {"customer": cus.id, "invoice": inv.id, "amount": "1", "currency": "usd"}
            assert http.post("/v1/invoiceitems", data=body).status_code == 200, n
    with pytest.raises(stripe.InvalidRequestError, match="at most 250"):
        sdk.v1.invoice_items.create({"customer": cus.id, "invoice": inv.id, "amount": 1, "currency": "usd"})
    assert sdk.v1.invoices.retrieve(inv.id).total == 250


# -- items, lines, lists ------------------------------------------------------------


def test_pending_items_and_item_crud(sdk: Any) -> None:
    cus = customer(sdk)
    pending = sdk.v1.invoice_items.create(
        {"customer": cus.id, "amount": 700, "currency": "usd", "description": "Later", "metadata": {"a": "1"}}
    )
    assert pending.invoice is None and pending.quantity == 1 and pending.amount == 700
    assert [i.id for i in sdk.v1.invoice_items.list({"pending": True}).data] == [pending.id]
    changed = sdk.v1.invoice_items.update(pending.id, {"unit_amount_decimal": "350", "quantity": 3})
    assert changed.amount == 1050 and changed.quantity == 3
    excluded = sdk.v1.invoices.create({"customer": cus.id})
    assert excluded.lines.total_count == 0
    included = sdk.v1.invoices.create({"customer": cus.id, "pending_invoice_items_behavior": "include"})
    assert included.total == 1050 and [li.description for li in included.lines.data] == ["Later"]
    assert sdk.v1.invoice_items.retrieve(pending.id).invoice == included.id
    assert [i.id for i in sdk.v1.invoice_items.list({"invoice": included.id}).data] == [pending.id]
    assert sdk.v1.invoice_items.delete(pending.id).deleted is True
    assert sdk.v1.invoices.retrieve(included.id).total == 0
    [deleted] = events(sdk, "invoiceitem.deleted")
    assert deleted.data.object.id == pending.id and deleted.data.object.amount == 1050
    with pytest.raises(stripe.InvalidRequestError) as gone:
        sdk.v1.invoice_items.retrieve(pending.id)
    assert gone.value.http_status == 404


def test_lines_page_in_order(sdk: Any) -> None:
    cus = customer(sdk)
    inv = draft(sdk, cus, [(f"L{n:02d}", 1, n + 1) for n in range(25)])
    assert len(inv.lines.data) == 10 and inv.lines.has_more is True and inv.lines.total_count == 25
    seen: list[str] = []
    after = None
    while True:
        page = sdk.v1.invoices.line_items.list(inv.id, {"limit": 7, **({"starting_after": after} if after else {})})
        seen += [line.description for line in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert seen == [f"L{n:02d}" for n in range(25)]
    all_lines = sdk.v1.invoices.line_items.list(inv.id, {"limit": 100}).data
    before = sdk.v1.invoices.line_items.list(inv.id, {"ending_before": all_lines[5].id, "limit": 3}).data
    assert [line.description for line in before] == ["L02", "L03", "L04"]
    lines = [line.description for line in sdk.v1.invoices.line_items.list(inv.id).auto_paging_iter()]
    assert lines == seen
    with pytest.raises(stripe.InvalidRequestError):
        sdk.v1.invoices.line_items.list("in_missing")


def test_batch_line_calls(sdk: Any) -> None:
    cus = customer(sdk)
    inv = sdk.v1.invoices.create({"customer": cus.id})
    pending = sdk.v1.invoice_items.create({"customer": cus.id, "amount": 100, "currency": "usd"})
    added = sdk.v1.invoices.add_lines(
        inv.id,
        {
            "lines": [
                {"description": "A", "amount": 1000, "metadata": {"internal_id": "a"}},
                {"description": "B", "amount": 250},
                {"invoice_item": pending.id, "description": "C"},
            ],
            "invoice_metadata": {"internal_id": "inv"},
        },
    )
    assert [li.description for li in added.lines.data] == ["A", "B", "C"] and added.total == 1350
    assert added.metadata.internal_id == "inv" and added.lines.data[0].metadata.internal_id == "a"
    assert sdk.v1.invoice_items.retrieve(pending.id).invoice == inv.id
    a, b, c = (li.id for li in added.lines.data)
    changed = sdk.v1.invoices.update_lines(inv.id, {"lines": [{"id": a, "quantity": 3}, {"id": b, "amount": 50}]})
    assert changed.total == 3000 + 50 + 100
    one = sdk.v1.invoices.line_items.update(inv.id, c, {"description": "C2", "metadata": {"internal_id": "c"}})
    assert one.object == "line_item" and one.id == c and one.description == "C2"
    removed = sdk.v1.invoices.remove_lines(
        inv.id, {"lines": [{"id": b, "behavior": "delete"}, {"id": c, "behavior": "unassign"}]}
    )
    assert [li.id for li in removed.lines.data] == [a] and removed.total == 3000
    assert sdk.v1.invoice_items.retrieve(pending.id).invoice is None
    with pytest.raises(stripe.InvalidRequestError) as bad:
        sdk.v1.invoices.add_lines(inv.id, {"lines": [{"amount": 5}, {"amount": "x"}]})
    assert bad.value.param == "amount"
    assert sdk.v1.invoices.retrieve(inv.id).lines.total_count == 1  # the valid first line was not added either
    kinds = [e.type for e in events(sdk)]
    # One invoice.updated per call that moved the invoice (not the description-only line edit).
    assert kinds.count("invoice.updated") == 3 and kinds.count("invoiceitem.created") == 3
    sdk.v1.invoices.finalize_invoice(inv.id)
    with pytest.raises(stripe.InvalidRequestError) as locked:
        sdk.v1.invoices.add_lines(inv.id, {"lines": [{"amount": 5}]})
    assert locked.value.code == "invoice_not_editable"
    with pytest.raises(stripe.InvalidRequestError) as locked_line:
        sdk.v1.invoices.line_items.update(inv.id, a, {"description": "late"})
    assert locked_line.value.code == "invoice_not_editable"


def test_list_filters_and_cursor_paging(sdk: Any) -> None:
    ada, bo = customer(sdk, "Ada"), customer(sdk, "Bo")
    made = [draft(sdk, ada if n % 2 else bo, [("x", 1, 100)]) for n in range(7)]
    sdk.v1.invoices.finalize_invoice(made[0].id)
    sdk.v1.invoices.finalize_invoice(made[1].id)
    assert {i.id for i in sdk.v1.invoices.list({"status": "open"}).data} == {made[0].id, made[1].id}
    ada_ids = [i.id for i in sdk.v1.invoices.list({"customer": ada.id}).data]
    assert ada_ids == [i.id for i in reversed(made) if i.customer == ada.id]
    paged = [i.id for i in sdk.v1.invoices.list({"limit": 3}).auto_paging_iter()]
    assert paged == [i.id for i in reversed(made)]
    drafts = sdk.v1.invoices.list({"status": "draft", "customer": bo.id, "limit": 2})
    assert len(drafts.data) == 2 and drafts.has_more is True


def test_search_by_metadata(sdk: Any) -> None:
    cus = customer(sdk)
    wanted = sdk.v1.invoices.create({"customer": cus.id, "metadata": {"internal_id": "42"}})
    sdk.v1.invoices.create({"customer": cus.id, "metadata": {"internal_id": "43"}})
    found = sdk.v1.invoices.search({"query": "metadata['internal_id']:'42'"})
    assert [i.id for i in found.data] == [wanted.id]
    both = sdk.v1.invoices.search({"query": f"customer:'{cus.id}' AND status:'draft'"})
    assert len(both.data) == 2


# -- events and webhooks ------------------------------------------------------------


def test_events_carry_previous_attributes(sdk: Any) -> None:
    cus = customer(sdk)
    inv = draft(sdk, cus, THREE[:1], description="before")
    item_id = inv.lines.data[0].parent.invoice_item_details.invoice_item
    sdk.v1.invoices.update(inv.id, {"description": "after", "metadata": {"k": "v"}})
    sdk.v1.invoice_items.update(item_id, {"quantity": 4, "metadata": {"internal_id": "changed"}})
    sdk.v1.invoices.finalize_invoice(inv.id)
    sdk.v1.invoices.void_invoice(inv.id)
    seen = list(reversed(events(sdk, "invoice*")))
    assert [e.type for e in seen] == [
        "invoice.created",
        "invoiceitem.created",
        "invoice.updated",  # totals moved with the item
        "invoice.updated",  # description and metadata
        "invoiceitem.updated",
        "invoice.updated",  # totals again
        "invoice.finalized",
        "invoice.updated",
        "invoice.voided",
        "invoice.updated",
    ]
    assert previous(seen[2])["total"] == 0
    assert previous(seen[3]) == {"description": "before", "metadata": {"k": None}}
    assert previous(seen[4]) == {
        "metadata": {"internal_id": "Consulting"},
        "amount": 3000,
        "quantity": 2,
        "quantity_decimal": "2",
    }
    assert previous(seen[5])["total"] == 3000 and seen[5].data.object.total == 6000
    assert previous(seen[7])["status"] == "draft" and previous(seen[7])["number"] is None
    assert previous(seen[7])["status_transitions"] == {"finalized_at": None}
    assert previous(seen[9]) == {"status": "open", "status_transitions": {"voided_at": None}}
    sdk.v1.invoices.delete(sdk.v1.invoices.create({"customer": cus.id}).id)
    assert events(sdk)[0].type == "invoice.deleted"


def test_webhooks_signed_and_delivered(sdk: Any, hooks: Receiver) -> None:
    types = ["invoice.created", "invoice.updated", "invoice.finalized", "invoice.paid", "invoiceitem.created"]
    secret = subscribe(sdk, hooks.url, types)
    cus = customer(sdk)
    inv = draft(sdk, cus, THREE[:1])
    sdk.v1.invoices.pay(inv.id, {"paid_out_of_band": True})
    expected = ["invoice.created", "invoiceitem.created", "invoice.updated", "invoice.finalized", "invoice.paid",
                "invoice.updated"]
    assert wait_for(lambda: len(hooks.got) >= len(expected))
    for headers, body in hooks.got:
        event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], secret)
        assert event.data.object.object in ("invoice", "invoiceitem")
    assert sorted(e["type"] for e in hooks.events()) == sorted(expected)
    paid = next(e for e in hooks.events() if e["type"] == "invoice.paid")
    assert paid["data"]["object"]["id"] == inv.id and paid["data"]["object"]["status"] == "paid"


# -- idempotency and faults ---------------------------------------------------------


def test_idempotent_replay(sdk: Any, emu: Emulator) -> None:
    cus = customer(sdk)
    opts = {"idempotency_key": "inv-create-1"}
    first = sdk.v1.invoices.create({"customer": cus.id, "metadata": {"internal_id": "9"}}, opts)
    again = sdk.v1.invoices.create({"customer": cus.id, "metadata": {"internal_id": "9"}}, opts)
    assert again.id == first.id and again.last_response.headers.get("Idempotent-Replayed") == "true"
    item_opts = {"idempotency_key": "item-1"}
    params = {"customer": cus.id, "invoice": first.id, "amount": 500, "currency": "usd"}
    assert sdk.v1.invoice_items.create(params, item_opts).id == sdk.v1.invoice_items.create(params, item_opts).id
    fin = sdk.v1.invoices.finalize_invoice(first.id, options={"idempotency_key": "fin-1"})
    replayed = sdk.v1.invoices.finalize_invoice(first.id, options={"idempotency_key": "fin-1"})
    assert replayed.number == fin.number and replayed.status == "open"
    with pytest.raises(stripe.IdempotencyError):
        sdk.v1.invoices.create({"customer": cus.id, "description": "other"}, opts)
    assert len(sdk.v1.invoices.list().data) == 1
    assert admin(emu, "GET", "/_emulator/stats")["invoiceitems"] == 1


def test_fault_knobs_apply_to_invoices(sdk: Any, emu: Emulator) -> None:
    cus = customer(sdk)
    faults(emu, error_rate=1.0)
    with pytest.raises(stripe.APIError) as exc:
        sdk.v1.invoices.create({"customer": cus.id}, {"idempotency_key": "k-fault"})
    assert exc.value.http_status in (500, 503)
    faults(emu, error_rate=0)
    assert sdk.v1.invoices.create({"customer": cus.id}, {"idempotency_key": "k-fault"}).status == "draft"
    faults(emu, rate_limit_per_second=2)
    limited = 0
    for _ in range(10):
        try:
            sdk.v1.invoices.list({"limit": 1})
        except stripe.RateLimitError:
            limited += 1
    assert limited >= 5
    faults(emu, rate_limit_per_second=0, latency_ms=150)
    start = time.monotonic()
    sdk.v1.invoice_items.list()
    assert time.monotonic() - start >= 0.1
    faults(emu, latency_ms=0, reject_pattern="^REJECT")
    with pytest.raises(stripe.InvalidRequestError) as rejected:
        sdk.v1.invoices.create({"customer": cus.id, "description": "REJECT this"})
    assert rejected.value.param == "description"
    faults(emu, reject_pattern=None, response_delay_ms=300)
    start = time.monotonic()
    inv = sdk.v1.invoices.create({"customer": cus.id})
    assert time.monotonic() - start >= 0.25 and inv.status == "draft"
    stats = admin(emu, "GET", "/_emulator/stats")
    assert stats["requests"]["POST /v1/invoices"] == 4 and stats["responses"]["POST /v1/invoices"]["400"] == 1
    assert stats["requests"]["GET /v1/invoices"] == 10 and stats["invoices"] == 2


def test_overlapping_writes_to_one_invoice_can_hit_lock_timeout(sdk: Any, emu: Emulator) -> None:
    cus = customer(sdk)
    inv = sdk.v1.invoices.create({"customer": cus.id})
    other = sdk.v1.invoices.create({"customer": cus.id})
    faults(emu, invoice_lock_timeout=True, latency_ms=300)

    def add(invoice_id: str) -> str:
        try:
            sdk.v1.invoice_items.create({"customer": cus.id, "invoice": invoice_id, "amount": 100, "currency": "usd"})
            return "ok"
        except stripe.RateLimitError as exc:
            assert exc.error is not None and exc.error.code == "lock_timeout" and exc.http_status == 429
            return "locked"

    with ThreadPoolExecutor(4) as pool:
        same = list(pool.map(add, [inv.id] * 3))
    assert same.count("ok") >= 1 and same.count("locked") >= 1
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(add, [inv.id, other.id])) == ["ok", "ok"]  # different invoices do not collide
    assert add(inv.id) == "ok"  # one at a time always goes through
    faults(emu, invoice_lock_timeout=False, latency_ms=0)
    assert sdk.v1.invoices.retrieve(inv.id).lines.total_count == same.count("ok") + 2


def test_webhook_faults_apply_to_invoice_events(sdk: Any, emu: Emulator, hooks: Receiver) -> None:
    subscribe(sdk, hooks.url, ["invoice.created"])
    cus = customer(sdk)
    faults(emu, webhook_duplicate_rate=1.0, webhook_reorder=3)
    made = [sdk.v1.invoices.create({"customer": cus.id, "metadata": {"n": str(n)}}).id for n in range(3)]
    assert wait_for(lambda: len(hooks.got) >= 6)
    got = [e["data"]["object"]["id"] for e in hooks.events()]
    assert sorted(set(got)) == sorted(made) and all(got.count(i) == 2 for i in made)
    counts = admin(emu, "GET", "/_emulator/stats")["webhooks"]
    assert counts["duplicated"] == 3 and counts["reordered"] >= 1
    faults(emu, webhook_duplicate_rate=0, webhook_reorder=0, webhook_drop_rate=1.0)
    sdk.v1.invoices.create({"customer": cus.id})
    assert admin(emu, "GET", "/_emulator/stats")["webhooks"]["dropped"] == 1


# -- page, persistence, auto_advance -------------------------------------------------


def test_html_page_shows_invoices(sdk: Any, emu: Emulator) -> None:
    cus = customer(sdk)
    inv = sdk.v1.invoices.finalize_invoice(draft(sdk, cus, THREE).id)
    page = httpx.get(emu.base + "/")
    assert page.status_code == 200 and inv.id in page.text and inv.number in page.text and "47.49" in page.text
    other = draft(sdk, cus, THREE)
    with httpx.Client(base_url=emu.base) as ui:
        assert ui.post(f"/_emulator/ui/invoices/{other.id}/finalize").status_code == 303
        assert ui.post(f"/_emulator/ui/invoices/{other.id}/pay").status_code == 303
        assert ui.post(f"/_emulator/ui/invoices/{other.id}/void").status_code == 303  # refused: paid
    assert sdk.v1.invoices.retrieve(other.id).status == "paid"
    assert events(sdk)[0].type == "invoice.updated"


def test_state_file_keeps_invoices(tmp_path: Path) -> None:
    state = tmp_path / "stripe.json"
    first = Emulator("--state-file", str(state))
    try:
        sdk = sdk_for(first)
        cus = customer(sdk)
        inv = sdk.v1.invoices.finalize_invoice(draft(sdk, cus, THREE).id)
        kept = draft(sdk, cus, THREE[:1])
        pending = sdk.v1.invoice_items.create({"customer": cus.id, "amount": 5, "currency": "usd"})
    finally:
        first.stop()
    second = Emulator("--state-file", str(state))
    try:
        sdk = sdk_for(second)
        again = sdk.v1.invoices.retrieve(inv.id)
        assert again.status == "open" and again.number == inv.number and again.total == 4749
        assert [line.id for line in again.lines.data] == [line.id for line in inv.lines.data]
        assert sdk.v1.invoices.retrieve(kept.id).lines.total_count == 1
        assert sdk.v1.invoice_items.retrieve(pending.id).invoice is None
        assert [i.id for i in sdk.v1.invoices.list().data] == [kept.id, inv.id]
        assert sdk.v1.invoices.finalize_invoice(kept.id).number == f"{cus.invoice_prefix}-0002"
    finally:
        second.stop()


def test_auto_advance_finalizes_a_draft() -> None:
    emu = Emulator("--auto-finalize-seconds", "1")
    try:
        sdk = sdk_for(emu)
        cus = customer(sdk)
        auto = sdk.v1.invoices.create({"customer": cus.id, "auto_advance": True})
        manual = sdk.v1.invoices.create({"customer": cus.id})
        assert auto.automatically_finalizes_at is not None and manual.automatically_finalizes_at is None
        assert wait_for(lambda: sdk.v1.invoices.retrieve(auto.id).status != "draft", timeout=10)
        assert sdk.v1.invoices.retrieve(auto.id).number is not None
        assert sdk.v1.invoices.retrieve(manual.id).status == "draft"
    finally:
        emu.stop()
