"""Issue 13, must show: invoices both ways through the real broker, PostgreSQL and the emulator (SDK).

Drafts with lines reach Stripe as invoices with items; edits are one write each; commands move Stripe
and Stripe's confirmation moves us; the ladder never goes down; both-sides terminals are a recorded
conflict; parents go first; deletes cross; faults and bad webhooks converge with no duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import stripe
from pydantic import SecretStr
from sqlalchemy import text

from tests.conftest import API_KEY, wait_until
from tests.helpers import register_webhook, running_worker, served_api, set_faults, stripe_writes
from twoway.kit.embedded import free_port
from twoway.settings import Settings

LINES = [{"description": "Seats", "quantity": 3, "unit_amount": 1500},
         {"description": "Support", "quantity": 1, "unit_amount": 5000},
         {"description": "Setup", "quantity": 2, "unit_amount": 250}]


@contextlib.asynccontextmanager
async def system(settings: Settings, stripe_client: stripe.StripeClient, *, worker: bool = True,
                 **overrides: object) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """Our API over HTTP with the emulator's webhooks pointed at it, and (unless told) a worker."""
    port = free_port()
    secret = register_webhook(stripe_client, port)
    live = settings.model_copy(update={"stripe_webhook_secret": SecretStr(secret), **overrides})
    async with served_api(live, port) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as api:
        if worker:
            async with running_worker(live):
                yield api, live
        else:
            yield api, live


async def _count(db, sql: str, **params) -> int:  # type: ignore[no-untyped-def]
    async with db() as s:
        return int((await s.execute(text(sql), params)).scalar() or 0)


async def _customer(api: httpx.AsyncClient, tag: str) -> int:
    r = await api.post("/api/v1/customers", json={"name": f"Inv {tag}", "email": f"{tag}@example.com"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _invoice(api: httpx.AsyncClient, customer: int, lines: list[dict] = LINES, **over: object) -> dict:
    body = {"customer_id": customer, "currency": "usd", "description": "March",
            "collection_method": "send_invoice", "days_until_due": 30, "lines": lines, **over}
    r = await api.post("/api/v1/invoices", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def stripe_invoice(stripe_client: stripe.StripeClient, internal_id: int) -> dict | None:
    every = [i.to_dict() for i in stripe_client.v1.invoices.list({"limit": 100}).auto_paging_iter()]
    found = [i for i in every if (i.get("metadata") or {}).get("internal_id") == str(internal_id)]
    assert len(found) <= 1, f"duplicate Stripe invoices for {internal_id}: {[f['id'] for f in found]}"
    return found[0] if found else None


def stripe_items(stripe_client: stripe.StripeClient, invoice_id: str) -> list[dict]:
    return [i.to_dict() for i in stripe_client.v1.invoice_items.list({"invoice": invoice_id, "limit": 100}).data]


async def ours(api: httpx.AsyncClient, iid: int) -> dict:
    return dict((await api.get(f"/api/v1/invoices/{iid}")).json())


async def test_draft_lines_edits_and_finalize(settings, stripe_client, emulator, db) -> None:  # type: ignore[no-untyped-def]
    async with system(settings, stripe_client) as (api, _):
        inv = await _invoice(api, await _customer(api, "a"))
        iid, line_ids = inv["id"], [x["id"] for x in inv["lines"]]

        def items_there() -> list[dict] | None:
            si = stripe_invoice(stripe_client, iid)
            items = stripe_items(stripe_client, si["id"]) if si else []
            return items if len(items) == 3 else None
        items = await wait_until(items_there, 30)
        assert items, "the draft and its 3 items did not reach Stripe"
        si = stripe_invoice(stripe_client, iid)
        assert si is not None and si["status"] == "draft" and si["auto_advance"] is False
        assert sorted((i["description"], i["amount"], i["metadata"]["internal_id"]) for i in items) == sorted(
            (x["description"], x["amount"], str(x["id"])) for x in inv["lines"])
        assert si["total"] == 4500 + 5000 + 500

        # One line and the description edited: one invoice update and one item update, nothing else.
        await wait_until(lambda: _quiet(db), 20)
        writes = stripe_writes(emulator)
        edited = [{**LINES[0], "quantity": 4}, LINES[1], LINES[2]]
        r = await api.patch(f"/api/v1/invoices/{iid}", json={"description": "April", "lines": edited})
        assert r.status_code == 200 and [x["id"] for x in r.json()["lines"]] == line_ids
        assert await wait_until(lambda: stripe_client.v1.invoices.retrieve(si["id"]).to_dict()["total"] == 11500, 20)
        assert stripe_client.v1.invoices.retrieve(si["id"]).description == "April"
        await wait_until(lambda: _quiet(db), 20)
        assert stripe_writes(emulator) - writes == 2

        # Finalize through our API: Stripe opens it; its number and totals come back to our row.
        r = await api.post(f"/api/v1/invoices/{iid}/finalize")
        assert r.status_code == 202 and r.json()["status"] == "draft" and r.json()["requested_status"] == "open"
        assert await wait_until(lambda: stripe_client.v1.invoices.retrieve(si["id"]).status == "open", 20)
        row = await wait_until(lambda: _where(api, iid, lambda x: x["status"] == "open" and x["number"]), 20)
        assert row, await ours(api, iid)
        theirs = stripe_client.v1.invoices.retrieve(si["id"])
        assert row["number"] == theirs.number and row["total"] == theirs.total == 11500
        assert row["requested_status"] is None and row["hosted_invoice_url"] == theirs.hosted_invoice_url
        # Frozen now: refused here, nothing sent.
        assert (await api.patch(f"/api/v1/invoices/{iid}", json={"description": "May"})).status_code == 409


async def _where(api: httpx.AsyncClient, iid: int, test) -> dict | None:  # type: ignore[no-untyped-def]
    row = await ours(api, iid)
    return row if test(row) else None


async def _quiet(db) -> bool:  # type: ignore[no-untyped-def]
    """Nothing queued, nothing unprocessed, nothing owed."""
    return await _count(db, """SELECT (SELECT count(*) FROM outbox WHERE sent_at IS NULL)
        + (SELECT count(*) FROM inbox WHERE processed_at IS NULL)
        + (SELECT count(*) FROM sync_events WHERE status IN ('retry', 'requeued'))""") == 0


def _signed(payload: dict, secret: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload, default=str).encode()
    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={t},v1={mac}", "Content-Type": "application/json"}


async def test_paid_in_stripe_and_a_stale_open_changes_nothing(settings, stripe_client, emulator, db) -> None:  # type: ignore[no-untyped-def]
    async with system(settings, stripe_client) as (api, live):
        iid = (await _invoice(api, await _customer(api, "b")))["id"]
        await api.post(f"/api/v1/invoices/{iid}/finalize")
        assert await wait_until(lambda: _where(api, iid, lambda x: x["status"] == "open"), 30)
        si = stripe_invoice(stripe_client, iid)
        assert si is not None
        events = [e.to_dict() for e in stripe_client.v1.events.list({"limit": 100}).auto_paging_iter()]
        stale = next(e for e in events if e["type"] == "invoice.updated"
                     and e["data"]["object"]["id"] == si["id"] and e["data"]["object"]["status"] == "open")

        stripe_client.v1.invoices.pay(si["id"], {"paid_out_of_band": True})
        row = await wait_until(lambda: _where(api, iid, lambda x: x["status"] == "paid"), 20)
        assert row and row["amount_paid"] == 10000

        # The stale `open` arrives again (a new delivery id, as a retried event would): nothing moves down.
        body, headers = _signed({**stale, "id": "evt_stale_replay"}, live.webhook_secrets()[0])
        r = await api.post("/api/v1/webhooks/stripe", content=body, headers=headers)
        assert r.status_code == 200
        assert await wait_until(lambda: _count(db, "SELECT count(*) = 0 FROM inbox WHERE processed_at IS NULL"), 20)
        assert (await ours(api, iid))["status"] == "paid"
        assert stripe_client.v1.invoices.retrieve(si["id"]).status == "paid"
        assert (await api.post(f"/api/v1/invoices/{iid}/void")).status_code == 409


async def test_void_here_while_paid_there_is_a_recorded_conflict(settings, stripe_client, emulator, db) -> None:  # type: ignore[no-untyped-def]
    async with system(settings, stripe_client) as (api, live):
        iid = (await _invoice(api, await _customer(api, "c")))["id"]
        await api.post(f"/api/v1/invoices/{iid}/finalize")
        assert await wait_until(lambda: _where(api, iid, lambda x: x["status"] == "open"), 30)
        si = stripe_invoice(stripe_client, iid)
        assert si is not None
    # The same moment on both sides: no worker runs while both changes are made.
    async with system(settings, stripe_client, worker=False) as (api, live):
        stripe_client.v1.invoices.pay(si["id"], {"paid_out_of_band": True})
        r = await api.post(f"/api/v1/invoices/{iid}/void")
        assert r.status_code == 202 and r.json()["requested_status"] == "void"
        async with running_worker(live):
            row = await wait_until(lambda: _where(api, iid, lambda x: x["status"] in ("paid", "void")
                                                  and x["requested_status"] is None), 30)
            assert row, await ours(api, iid)
            # Money moved over there: Stripe's terminal state wins, and both sides say so.
            assert row["status"] == "paid" == stripe_client.v1.invoices.retrieve(si["id"]).status
            assert await wait_until(lambda: _count(
                db, "SELECT count(*) FROM sync_events WHERE kind = 'invoice' AND internal_id = :i"
                    " AND status = 'conflict'", i=iid), 20)
            assert await wait_until(lambda: _quiet(db), 20)
            assert await _count(db, "SELECT count(*) FROM sync_events WHERE status = 'dead'") == 0


async def test_invoice_of_a_fresh_customer_waits_for_its_parent(settings, stripe_client, emulator, db) -> None:  # type: ignore[no-untyped-def]
    async with system(settings, stripe_client, worker=False) as (api, live):
        cid = await _customer(api, "d")
        iid = (await _invoice(api, cid))["id"]
        async with running_worker(live):
            si = await wait_until(lambda: stripe_invoice(stripe_client, iid), 30)
            assert si, "the invoice did not follow its customer to Stripe"
            assert si["customer"] == (await api.get(f"/api/v1/customers/{cid}/sync")).json()[
                "systems"]["stripe"]["external_id"]
            assert await wait_until(lambda: len(stripe_items(stripe_client, si["id"])) == 3, 20)
            # Waiting was no failure: nothing dead, no attempt used up, nothing left owed.
            assert await wait_until(lambda: _quiet(db), 20)
            assert await _count(db, "SELECT count(*) FROM sync_events WHERE status = 'dead'"
                                    " OR (kind = 'invoice' AND attempts > 1)") == 0
            assert (await api.get("/api/v1/sync/failures")).json() == []


async def test_invoice_made_in_stripe_imports_its_customer_first(settings, stripe_client, emulator, db) -> None:  # type: ignore[no-untyped-def]
    async with system(settings, stripe_client) as (api, _):
        sc = stripe_client.v1.customers.create({"name": "Stripe only", "email": "so@example.com"})
        si = stripe_client.v1.invoices.create({"customer": sc.id, "collection_method": "send_invoice",
                                               "days_until_due": 10, "description": "from stripe"})
        stripe_client.v1.invoice_items.create({"customer": sc.id, "invoice": si.id, "amount": 1234,
                                               "currency": "usd", "description": "imported line"})

        def imported() -> str | None:
            return (stripe_client.v1.invoices.retrieve(si.id).to_dict().get("metadata") or {}).get("internal_id")
        mine = await wait_until(imported, 30)
        assert mine, "the Stripe invoice was not imported (no internal_id written back)"
        row = await wait_until(lambda: _where(api, int(mine), lambda x: any(
            line["amount"] == 1234 for line in x.get("lines") or [])), 20)
        assert row and row["description"] == "from stripe" and row["status"] == "draft"
        customer = (await api.get(f"/api/v1/customers/{row['customer_id']}")).json()
        assert customer["email"] == "so@example.com"
        # The line made in Stripe stays that item: an edit of it here is an update there, not a new item.
        line = row["lines"][0]
        r = await api.patch(f"/api/v1/invoices/{mine}", json={"lines": [
            {"id": line["id"], "description": "edited here", "quantity": 2, "unit_amount": 617}]})
        assert r.status_code == 200, r.text
        assert await wait_until(lambda: [(i["description"], i["amount"]) for i in stripe_items(
            stripe_client, si.id)] == [("edited here", 1234)], 20)


async def test_deletes_cross_and_a_finalized_delete_voids(settings, stripe_client, emulator, db) -> None:  # type: ignore[no-untyped-def]
    async with system(settings, stripe_client) as (api, _):
        cid = await _customer(api, "e")
        ids = [(await _invoice(api, cid))["id"] for _ in range(3)]
        found = [await wait_until(lambda i=i: stripe_invoice(stripe_client, i), 30) for i in ids]
        assert all(found)
        # Ours deleted: theirs goes.
        assert (await api.delete(f"/api/v1/invoices/{ids[0]}")).status_code == 204
        assert await wait_until(lambda: stripe_invoice(stripe_client, ids[0]) is None, 20)
        # Theirs deleted: ours goes.
        stripe_client.v1.invoices.delete(found[1]["id"])
        assert await wait_until(lambda: _where(api, ids[1], lambda x: x["deleted_at"]), 20)
        # Finalized, then deleted here: voided there (a finalized invoice cannot be deleted).
        await api.post(f"/api/v1/invoices/{ids[2]}/finalize")
        assert await wait_until(lambda: _where(api, ids[2], lambda x: x["status"] == "open"), 20)
        r = await api.delete(f"/api/v1/invoices/{ids[2]}")
        assert r.status_code == 202
        assert await wait_until(lambda: stripe_client.v1.invoices.retrieve(found[2]["id"]).status == "void", 20)
        assert await wait_until(lambda: _where(api, ids[2], lambda x: x["status"] == "void"), 20)


@pytest.mark.heavy
async def test_many_invoices_converge_under_faults(settings, stripe_client, emulator, db) -> None:  # type: ignore[no-untyped-def]
    lines = [{"description": f"line {n}", "quantity": n + 1, "unit_amount": 100 * (n + 1)} for n in range(5)]
    async with system(settings, stripe_client, worker=False) as (api, live):
        customers = [await _customer(api, f"f{n}") for n in range(10)]
        ids = [(await _invoice(api, customers[n % 10], lines))["id"] for n in range(120)]
        set_faults(emulator, error_rate=0.3, webhook_duplicate_rate=0.3, webhook_reorder=5)
        async with running_worker(live):
            async def converged() -> bool:
                by_id = {}
                for si in stripe_client.v1.invoices.list({"limit": 100}).auto_paging_iter():
                    key = (si.to_dict().get("metadata") or {}).get("internal_id")
                    assert key not in by_id, f"duplicate Stripe invoice for {key}"
                    by_id[key] = si
                if not all(str(i) in by_id for i in ids):
                    return False
                return all(by_id[str(i)].total == sum(x["quantity"] * x["unit_amount"] for x in lines)
                           for i in ids)
            try:
                assert await wait_until(_stable(converged), 240, step=2)
            finally:
                set_faults(emulator, error_rate=0, webhook_duplicate_rate=0, webhook_reorder=0)
        items = [i for i in stripe_client.v1.invoice_items.list({"limit": 100}).auto_paging_iter()]
        keys = [(i.invoice, (i.to_dict().get("metadata") or {}).get("internal_id")) for i in items]
        assert len(keys) == len(set(keys)) == len(ids) * len(lines), "duplicate or missing invoice items"
        assert await _count(db, "SELECT count(*) FROM sync_events WHERE status = 'dead'") == 0


def _stable(check):  # type: ignore[no-untyped-def]
    """A check that also tolerates the emulator's injected 5xx on our own reads."""
    async def run() -> bool:
        try:
            return bool(await check())
        except stripe.StripeError:
            await asyncio.sleep(0.2)
            return False
    return run


async def test_the_poller_carries_invoice_events_too(client, settings, stripe_client, emulator, db) -> None:  # type: ignore[no-untyped-def]
    """No webhook endpoint: the Events API poller alone (invoice events carry decimals, stored as JSON)."""
    async with running_worker(settings.model_copy(update={"inbound_mode": "poll"})):
        assert await wait_until(lambda: _count(db, "SELECT count(*) FROM cursors"), 20)
        sc = stripe_client.v1.customers.create({"name": "Polled", "email": "polled@example.com"})
        si = stripe_client.v1.invoices.create({"customer": sc.id, "collection_method": "send_invoice",
                                               "days_until_due": 5, "description": "polled"})
        stripe_client.v1.invoice_items.create({"customer": sc.id, "invoice": si.id, "amount": 4321,
                                               "currency": "usd", "description": "polled line"})
        mine = await wait_until(lambda: (stripe_client.v1.invoices.retrieve(si.id).to_dict().get("metadata")
                                         or {}).get("internal_id"), 30)
        assert mine, "the invoice made in Stripe was not imported through the poller"
        row = await wait_until(lambda: _where(client, int(mine), lambda x: [
            line["amount"] for line in x.get("lines") or []] == [4321]), 20)
        assert row and row["description"] == "polled"
