"""The three invoice races the chaos run found (issue 13), each made to happen on purpose: the worker is
held back (or a webhook lost) while both sides move, then started. Real API, broker, PostgreSQL, emulator.

1. Our draft's customer was deleted in Stripe before the draft got there: ours is deleted (recorded).
2. A draft deleted here while Stripe paid (or finalized) it: ours comes back with Stripe's state (recorded).
3. A Stripe invoice whose customer Stripe deleted before we saw either: imported on a deleted customer row.
4. A line removed here while Stripe finalized the draft: Stripe's lines win, and the line comes back
   under the id Stripe's item still carries.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import wait_until
from tests.helpers import running_worker, set_faults
from tests.integration.test_invoices_sync import (
    _count,
    _customer,
    _invoice,
    _quiet,
    _where,
    ours,
    stripe_invoice,
    stripe_items,
    system,
)


async def _customer_xid(api: httpx.AsyncClient, cid: int) -> str | None:
    systems = (await api.get(f"/api/v1/customers/{cid}/sync")).json().get("systems") or {}
    return (systems.get("stripe") or {}).get("external_id")


async def _conflicts(db, iid: int) -> int:  # type: ignore[no-untyped-def]
    return await _count(db, "SELECT count(*) FROM sync_events WHERE kind = 'invoice' AND internal_id = :i"
                            " AND status = 'conflict'", i=iid)


async def _nothing_failed(db, api: httpx.AsyncClient) -> None:  # type: ignore[no-untyped-def]
    assert await wait_until(lambda: _quiet(db), 30)
    assert await _count(db, "SELECT count(*) FROM sync_events WHERE status = 'dead'"
                            " OR (kind = 'invoice' AND attempts > 1)") == 0
    assert (await api.get("/api/v1/sync/failures")).json() == []


async def test_draft_whose_customer_stripe_deleted_first_is_deleted_here(settings, stripe_client, emulator,  # type: ignore[no-untyped-def]
                                                                         db) -> None:
    async with system(settings, stripe_client) as (api, _):
        cid = await _customer(api, "race1")
        xid = await wait_until(lambda: _customer_xid(api, cid), 30)
        assert xid
    async with system(settings, stripe_client, worker=False) as (api, live):
        # The customer's delete is lost on its way to us, so our customer is still live and linked when
        # the new draft goes out: Stripe answers "No such customer".
        set_faults(emulator, webhook_drop_rate=1.0)
        stripe_client.v1.customers.delete(xid)
        iid = (await _invoice(api, cid))["id"]
        async with running_worker(live):
            row = await wait_until(lambda: _where(api, iid, lambda x: x["deleted_at"] is not None), 30)
            assert row, await ours(api, iid)
            # The draft waited while it read its customer, whose delete then landed; the draft went with it.
            assert (await api.get(f"/api/v1/customers/{cid}")).json()["deleted_at"] is not None
            assert await wait_until(lambda: _conflicts(db, iid), 10)
            await _nothing_failed(db, api)
            assert stripe_invoice(stripe_client, iid) is None


@pytest.mark.parametrize(("move", "expected"), [("pay", "paid"), ("finalize", "void")])
async def test_draft_deleted_here_while_stripe_moved_it_comes_back(move: str, expected: str, settings,  # type: ignore[no-untyped-def]
                                                                   stripe_client, emulator, db) -> None:
    async with system(settings, stripe_client) as (api, _):
        iid = (await _invoice(api, await _customer(api, f"race2{move}")))["id"]
        si = await wait_until(lambda: stripe_invoice(stripe_client, iid), 30)
        assert si and await wait_until(lambda: len(stripe_items(stripe_client, si["id"])) == 3, 20)
        assert await wait_until(lambda: _quiet(db), 20)
    # The same moment on both sides: no worker runs while both changes are made.
    async with system(settings, stripe_client, worker=False) as (api, live):
        if move == "pay":
            stripe_client.v1.invoices.pay(si["id"], {"paid_out_of_band": True})
        else:
            stripe_client.v1.invoices.finalize_invoice(si["id"], {"auto_advance": False})
        assert (await api.delete(f"/api/v1/invoices/{iid}")).status_code == 204
        async with running_worker(live):
            row = await wait_until(lambda: _where(api, iid, lambda x: x["deleted_at"] is None
                                                  and x["status"] == expected), 30)
            assert row, await ours(api, iid)
            # Paid: money moved, Stripe's state wins. Finalized: it cannot be deleted, so our delete voided
            # it there. Either way our row is back with Stripe's state, and the conflict is recorded.
            theirs = stripe_client.v1.invoices.retrieve(si["id"])
            assert theirs.status == expected
            assert row["number"] == theirs.number and row["total"] == theirs.total == 10000
            assert len(row["lines"]) == 3 and row["requested_status"] is None
            assert await wait_until(lambda: _conflicts(db, iid), 10)
            await _nothing_failed(db, api)
            assert (await ours(api, iid))["status"] == expected


async def test_stripe_invoice_of_a_customer_deleted_before_we_saw_it_is_imported(settings, stripe_client,  # type: ignore[no-untyped-def]
                                                                                emulator, db) -> None:
    async with system(settings, stripe_client, worker=False) as (api, live):
        sc = stripe_client.v1.customers.create({"name": "Gone Soon", "email": "gone@example.com"})
        si = stripe_client.v1.invoices.create({"customer": sc.id, "collection_method": "send_invoice",
                                               "days_until_due": 10, "description": "orphaned"})
        stripe_client.v1.invoice_items.create({"customer": sc.id, "invoice": si.id, "amount": 1234,
                                               "currency": "usd", "description": "kept line"})
        stripe_client.v1.customers.delete(sc.id)
        async with running_worker(live):
            def imported() -> str | None:
                return (stripe_client.v1.invoices.retrieve(si.id).to_dict().get("metadata") or {}).get("internal_id")
            mine = await wait_until(imported, 30)
            assert mine, "the invoice of a deleted customer was not imported"
            row = await wait_until(lambda: _where(api, int(mine), lambda x: [
                line["amount"] for line in x.get("lines") or []] == [1234]), 20)
            assert row and row["deleted_at"] is None and row["description"] == "orphaned"
            # Hung on a deleted customer row made from what the invoice carries of it.
            customer = (await api.get(f"/api/v1/customers/{row['customer_id']}")).json()
            assert customer["deleted_at"] is not None
            assert (customer["name"], customer["email"]) == ("Gone Soon", "gone@example.com")
            assert await _customer_xid(api, row["customer_id"]) == sc.id
            await _nothing_failed(db, api)


async def test_lines_added_to_a_draft_whose_customer_stripe_deleted_stay_stripes(settings, stripe_client,  # type: ignore[no-untyped-def]
                                                                                emulator, db) -> None:
    """Found by the chaos run: Stripe takes no new item on a draft whose customer it deleted ("No such
    customer"). That is no delete of the invoice: its lines stay Stripe's (recorded), both sides keep it."""
    async with system(settings, stripe_client) as (api, _):
        cid = await _customer(api, "race4")
        iid = (await _invoice(api, cid))["id"]
        si = await wait_until(lambda: stripe_invoice(stripe_client, iid), 30)
        assert si and await wait_until(lambda: len(stripe_items(stripe_client, si["id"])) == 3, 20)
        stripe_client.v1.customers.delete(si["customer"])
        assert await wait_until(lambda: _quiet(db), 20)
        r = await api.patch(f"/api/v1/invoices/{iid}", json={"lines": [
            *[{"id": x["id"], "description": x["description"], "quantity": x["quantity"],
               "unit_amount": x["unit_amount"]} for x in (await ours(api, iid))["lines"]],
            {"description": "one more", "quantity": 1, "unit_amount": 700}]})
        assert r.status_code == 200, r.text
        assert await wait_until(lambda: _conflicts(db, iid), 30)
        row = await wait_until(lambda: _where(api, iid, lambda x: len(x["lines"]) == 3), 20)
        assert row and row["deleted_at"] is None, await ours(api, iid)
        assert len(stripe_items(stripe_client, si["id"])) == 3
        await _nothing_failed(db, api)
        assert (await ours(api, iid))["deleted_at"] is None


async def test_line_removed_here_while_stripe_finalized_comes_back_under_its_id(settings, stripe_client,  # type: ignore[no-untyped-def]
                                                                                emulator, db) -> None:
    """Found by the chaos run: the line came back here under a new id while Stripe's item kept the old
    one in its metadata. Same content, so no later pass saw a difference; the tags disagreed for good."""
    async with system(settings, stripe_client) as (api, _):
        iid = (await _invoice(api, await _customer(api, "race5")))["id"]
        si = await wait_until(lambda: stripe_invoice(stripe_client, iid), 30)
        assert si and await wait_until(lambda: len(stripe_items(stripe_client, si["id"])) == 3, 20)
        assert await wait_until(lambda: _quiet(db), 20)
        before = [x["id"] for x in (await ours(api, iid))["lines"]]
    async with system(settings, stripe_client, worker=False) as (api, live):
        stripe_client.v1.invoices.finalize_invoice(si["id"], {"auto_advance": False})
        kept = [{k: x[k] for k in ("id", "description", "quantity", "unit_amount")}
                for x in (await ours(api, iid))["lines"]][:2]
        assert (await api.patch(f"/api/v1/invoices/{iid}", json={"lines": kept})).status_code == 200
        async with running_worker(live):
            row = await wait_until(lambda: _where(api, iid, lambda x: x["status"] == "open"
                                                  and len(x["lines"]) == 3), 30)
            assert row, await ours(api, iid)
            assert await wait_until(lambda: _conflicts(db, iid), 10)
            await _nothing_failed(db, api)
            tags = sorted(int(i["metadata"]["internal_id"]) for i in stripe_items(stripe_client, si["id"]))
            assert sorted(x["id"] for x in (await ours(api, iid))["lines"]) == tags == sorted(before)
