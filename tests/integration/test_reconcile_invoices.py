"""Issue 13, operate: reconcile covers invoices. Drift made in Stripe through the SDK with webhooks off (a
description edited, an item deleted, a payment, an invoice with no row here, a lost link) is found, reported
and repaired through the normal sync path; a second run finds nothing."""

from __future__ import annotations

import json

import stripe
from sqlalchemy import text

from tests.conftest import wait_until
from tests.helpers import run_cli, set_faults
from tests.integration.test_invoices_sync import (
    _customer,
    _invoice,
    _quiet,
    _where,
    stripe_invoice,
    stripe_items,
    system,
)
from twoway.connectors import registry
from twoway.kit.db import make_engine
from twoway.ops.reconcile import INBOUND, reconcile


async def test_invoice_drift_made_in_stripe_is_found_reported_and_repaired(  # type: ignore[no-untyped-def]
        settings, stripe_client: stripe.StripeClient, emulator, db) -> None:
    # Four invoices, synced both ways; one finalized.
    async with system(settings, stripe_client) as (api, _):
        cid = await _customer(api, "rec")
        edited, trimmed, paid, unlinked = [(await _invoice(api, cid))["id"] for _ in range(4)]
        assert (await api.post(f"/api/v1/invoices/{paid}/finalize")).status_code == 202
        theirs = {}
        for iid in (edited, trimmed, paid, unlinked):
            theirs[iid] = await wait_until(lambda i=iid: stripe_invoice(stripe_client, i), 60)
            assert theirs[iid], f"invoice {iid} did not reach Stripe"
        assert await wait_until(lambda: _where(api, paid, lambda x: x["status"] == "open"), 60)
        assert await wait_until(lambda: _quiet(db), 60)

    # Behind twoway's back: no webhook arrives, no worker runs.
    set_faults(emulator, webhook_drop_rate=1.0)
    sx = {iid: str(si["id"]) for iid, si in theirs.items()}
    stripe_client.v1.invoices.update(sx[edited], {"description": "edited in Stripe"})
    stripe_client.v1.invoice_items.delete(str(stripe_items(stripe_client, sx[trimmed])[0]["id"]))
    stripe_client.v1.invoices.pay(sx[paid], {"paid_out_of_band": True})
    stranger = stripe_client.v1.invoices.create({"customer": theirs[edited]["customer"], "description": "no row",
                                                 "collection_method": "send_invoice", "days_until_due": 5})
    stripe_client.v1.invoice_items.create({"customer": theirs[edited]["customer"], "invoice": stranger.id,
                                           "amount": 700, "currency": "usd", "description": "stranger line"})
    async with db() as s:
        await s.execute(text("DELETE FROM links WHERE kind = 'invoice' AND internal_id = :i"), {"i": unlinked})
        await s.commit()

    dry = run_cli(settings, "reconcile", "stripe", "--kind", "invoices", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert list(report["kinds"]) == ["invoice"] and report["enqueued"] == {"outbound": 0, "inbound": 0}
    assert report["counts"] == {"drifted": 3, "missing_internal": 1, "lost_link": 1}, report["drifts"]
    assert {d["kind"] for d in report["drifts"]} == {"invoice"}
    by_id = {d["internal_id"]: d for d in report["drifts"] if d["internal_id"] is not None}
    assert by_id[edited]["fields"]["description"] == {"base": "March", "ours": "March", "theirs": "edited in Stripe"}
    assert {"lines", "total"} <= set(by_id[trimmed]["fields"])
    assert by_id[paid]["fields"]["status"]["theirs"] == "paid" and by_id[paid]["fields"]["status"]["ours"] == "open"
    assert by_id[unlinked]["problem"] == "lost_link" and by_id[unlinked]["external_id"] == sx[unlinked]
    missing = next(d for d in report["drifts"] if d["problem"] == "missing_internal")
    assert missing["external_id"] == stranger.id
    assert all(d["repair"] == INBOUND for d in report["drifts"])
    table = run_cli(settings, "reconcile", "stripe", "--kind", "invoice", "--dry-run")
    assert table.returncode == 0 and "invoice" in table.stdout and "Missing here" in table.stdout
    bad = run_cli(settings, "reconcile", "stripe", "--kind", "nothing")
    assert bad.returncode == 2 and "nothing" in bad.stderr

    engine = make_engine(settings.require_database_url(), pool_size=2)
    connector = registry.build("stripe", settings)
    try:
        repair = await reconcile(engine, connector, dry_run=False, batch_size=2)
        assert repair.counts() == {"drifted": 3, "missing_internal": 1, "lost_link": 1}
        assert repair.enqueued == {"outbound": 0, "inbound": 5}
        assert set(repair.kinds) == {"customer", "invoice"} and repair.kinds["customer"].scanned_external == 1

        async with system(settings, stripe_client) as (api, _):
            assert await wait_until(lambda: _where(api, edited, lambda x: x["description"] == "edited in Stripe"), 60)
            assert await wait_until(lambda: _where(api, trimmed, lambda x: len(x["lines"]) == 2), 60)
            assert await wait_until(lambda: _where(api, paid, lambda x: x["status"] == "paid"), 60)

            def adopted() -> str | None:
                return (stripe_client.v1.invoices.retrieve(stranger.id).to_dict().get("metadata") or {}).get(
                    "internal_id")
            mine = await wait_until(adopted, 60)
            assert mine and await wait_until(lambda: _where(api, int(mine), lambda x: x.get("description") == "no row"), 40)

            async def relinked() -> bool:
                async with db() as s:
                    return (await s.execute(text("SELECT external_id FROM links WHERE kind = 'invoice' "
                                                 "AND internal_id = :i"), {"i": unlinked})).scalar() == sx[unlinked]
            assert await wait_until(relinked, 60)
            assert await wait_until(lambda: _quiet(db), 60)
        # Repaired through the normal path: no duplicate in Stripe, and nothing left to find.
        assert len(list(stripe_client.v1.invoices.list({"limit": 100}).auto_paging_iter())) == 5
        again = await reconcile(engine, connector, dry_run=True)
        assert again.drifts == [], again.drifts
        assert again.kinds["invoice"].scanned_external == 5 and again.kinds["invoice"].scanned_internal == 5
    finally:
        await connector.close()
        await engine.dispose()
