"""Issue 6: reconcile finds drift made behind twoway's back and repairs it through the normal sync path."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import stripe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import emulator_call, wait_until
from tests.helpers import run_cli, running_worker, set_faults
from twoway.connectors import registry
from twoway.connectors.base import Connector, ExternalRecord
from twoway.kit.db import make_engine
from twoway.ops.reconcile import INBOUND, MANUAL, OUTBOUND, Report, _Linked, compare_external, reconcile
from twoway.settings import Settings


@pytest.fixture
async def engine(settings: Settings, db: object) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(settings.require_database_url(), pool_size=3)
    yield eng
    await eng.dispose()


@pytest.fixture
async def connector(settings: Settings) -> AsyncIterator[Connector]:
    c = registry.build("stripe", settings)
    yield c
    await c.close()


async def _scalar(db, sql: str, **params):  # type: ignore[no-untyped-def]
    async with db() as s:
        return (await s.execute(text(sql), params)).scalar()


async def _run(engine: AsyncEngine, connector: Connector, *, dry_run: bool) -> Report:
    return await reconcile(engine, connector, dry_run=dry_run, batch_size=50)


def _by_problem(report: Report) -> dict[str, list[tuple[int | None, str | None, str]]]:
    out: dict[str, list[tuple[int | None, str | None, str]]] = {}
    for d in report.drifts:
        out.setdefault(d.problem, []).append((d.internal_id, d.external_id, d.repair))
    return out


async def _create_synced(client: httpx.AsyncClient, settings: Settings, db, n: int) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    ids = []
    for i in range(n):
        r = await client.post("/api/v1/customers", json={"name": f"Person {i}", "email": f"p{i}@example.com"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])

    async def all_linked() -> bool:
        return await _scalar(db, "SELECT count(*) FROM links") == n

    async with running_worker(settings):
        assert await wait_until(all_linked, timeout=40)
    async with db() as s:
        rows = (await s.execute(text("SELECT internal_id, external_id FROM links ORDER BY internal_id"))).all()
    return [(r.internal_id, r.external_id) for r in rows]


async def test_hand_made_drift_is_reported_repaired_and_gone(
        client: httpx.AsyncClient, settings: Settings, db, engine: AsyncEngine,  # type: ignore[no-untyped-def]
        connector: Connector, emulator: str, stripe_client: stripe.StripeClient) -> None:
    (gone, gone_x), (edited, edited_x), (unlinked, unlinked_x), (_, _) = await _create_synced(client, settings, db, 4)
    # The webhook of the delete is lost, as if our endpoint had been down for longer than Stripe retries.
    set_faults(emulator, webhook_drop_rate=1.0)
    stripe_client.v1.customers.delete(gone_x)
    async with db() as s:
        # Edited behind the outbox: no version bump, no message; only a full comparison can see it.
        await s.execute(text("UPDATE customers SET name = 'Edited Behind' WHERE id = :i"), {"i": edited})
        await s.execute(text("DELETE FROM links WHERE internal_id = :i"), {"i": unlinked})
        await s.commit()
    outbox_before = await _scalar(db, "SELECT count(*) FROM outbox")

    dry = run_cli(settings, "reconcile", "stripe", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True and report["enqueued"] == {"outbound": 0, "inbound": 0}
    assert report["counts"] == {"missed_delete": 1, "drifted": 1, "lost_link": 1}
    drifted = next(d for d in report["drifts"] if d["problem"] == "drifted")
    assert (drifted["internal_id"], drifted["external_id"], drifted["repair"]) == (edited, edited_x, OUTBOUND)
    assert drifted["fields"] == {"name": {"base": "Person 1", "ours": "Edited Behind", "theirs": "Person 1"}}
    table = run_cli(settings, "reconcile", "stripe", "--dry-run")
    assert "Drifted" in table.stdout and "Link lost" in table.stdout and edited_x in table.stdout
    assert "Deleted in Stripe, live here" in table.stdout and "peak RSS" in table.stdout
    # A dry run changes nothing.
    assert await _scalar(db, "SELECT count(*) FROM outbox") == outbox_before
    assert await _scalar(db, "SELECT count(*) FROM links") == 3
    assert await _scalar(db, "SELECT deleted_at IS NULL FROM customers WHERE id = :i", i=gone)

    repair = await _run(engine, connector, dry_run=False)
    assert _by_problem(repair) == {"missed_delete": [(gone, gone_x, INBOUND)],
                                   "drifted": [(edited, edited_x, OUTBOUND)],
                                   "lost_link": [(unlinked, unlinked_x, INBOUND)]}
    assert repair.enqueued == {"outbound": 1, "inbound": 2}

    async def converged() -> bool:
        deleted = await _scalar(db, "SELECT deleted_at IS NOT NULL FROM customers WHERE id = :i", i=gone)
        relinked = await _scalar(db, "SELECT external_id FROM links WHERE internal_id = :i", i=unlinked)
        name = stripe_client.v1.customers.retrieve(edited_x).name
        return bool(deleted) and relinked == unlinked_x and name == "Edited Behind"

    async with running_worker(settings):
        assert await wait_until(converged, timeout=40)

        async def outbox_drained() -> bool:
            return await _scalar(db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0

        assert await wait_until(outbox_drained, timeout=10)
    # Repaired through the normal path: the lost link was adopted, not re-created as a second customer.
    assert len(emulator_call(emulator, "/_emulator/customers")) == 3
    again = await _run(engine, connector, dry_run=True)
    assert again.drifts == [] and again.scanned_external == 3 and again.scanned_internal == 4


async def test_dangling_link_is_reported_for_a_person_to_decide(
        client: httpx.AsyncClient, settings: Settings, db, engine: AsyncEngine,  # type: ignore[no-untyped-def]
        connector: Connector) -> None:
    [(removed, removed_x)] = await _create_synced(client, settings, db, 1)
    async with db() as s:
        await s.execute(text("DELETE FROM customers WHERE id = :i"), {"i": removed})
        await s.commit()
    report = await _run(engine, connector, dry_run=False)
    assert _by_problem(report) == {"dangling_link": [(removed, removed_x, MANUAL)]}
    assert report.enqueued == {"outbound": 0, "inbound": 0}


def test_a_customer_claiming_a_linked_record_is_imported_not_merged() -> None:
    theirs = ExternalRecord("cus_dup", {"name": "Dup", "email": "d@example.com"}, internal_id=7)
    [drift] = compare_external(theirs, None, (7, "cus_first"))
    assert (drift.problem, drift.internal_id, drift.repair) == ("claims_other", 7, INBOUND)
    assert "cus_first" in drift.note


def test_both_sides_moved_goes_inbound_so_the_merge_decides() -> None:
    linked = _Linked(internal_id=1, base={"name": "A", "email": "a@x.io"}, row_id=1,
                     ours={"name": "Ours", "email": "a@x.io"}, deleted=False)
    theirs = ExternalRecord("cus_1", {"name": "Theirs", "email": "a@x.io"}, internal_id=1)
    [drift] = compare_external(theirs, linked, None)
    assert drift.repair == INBOUND and drift.fields == {"name": {"base": "A", "ours": "Ours", "theirs": "Theirs"}}


async def _backfill(n: int, settings: Settings, db, engine: AsyncEngine, connector: Connector,  # type: ignore[no-untyped-def]
                    emulator: str, stripe_client: stripe.StripeClient) -> None:
    for i in range(n):
        stripe_client.v1.customers.create({"name": f"Theirs {i}", "email": f"theirs{i}@example.com"})
    async with db() as s:
        # Rows that predate twoway: no outbox messages, no links.
        await s.execute(text("INSERT INTO customers (name, email) SELECT 'Ours ' || g, 'ours' || g || '@example.com'"
                             " FROM generate_series(1, :n) g"), {"n": n})
        await s.commit()

    started = time.monotonic()
    report = await reconcile(engine, connector, dry_run=False)
    assert report.counts() == {"missing_internal": n, "missing_external": n}
    assert report.enqueued == {"outbound": n, "inbound": n}

    async def drained() -> bool:
        links = await _scalar(db, "SELECT count(*) FROM links")
        unsent = await _scalar(db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        return links == 2 * n and unsent == 0

    print("reconciled", time.monotonic() - started)
    async with running_worker(settings):
        assert await wait_until(drained, timeout=max(60, n / 20), step=0.5)
    print(emulator_call(emulator, "/_emulator/stats"))
    print(f"backfill {n}+{n}: {time.monotonic() - started:.1f} s, peak RSS {report.peak_rss_mb:.0f} MB")

    theirs = emulator_call(emulator, "/_emulator/customers")
    assert len(theirs) == 2 * n and len({c["email"] for c in theirs}) == 2 * n
    assert len({c["metadata"].get("internal_id") for c in theirs} - {None}) == 2 * n
    assert await _scalar(db, "SELECT count(DISTINCT email) FROM customers WHERE deleted_at IS NULL") == 2 * n
    assert await _scalar(db, "SELECT count(*) FROM customers") == 2 * n
    assert (await reconcile(engine, connector, dry_run=True)).drifts == []


async def test_backfill_links_both_catalogs_without_duplicates(
        settings: Settings, db, engine: AsyncEngine, connector: Connector,  # type: ignore[no-untyped-def]
        emulator: str, stripe_client: stripe.StripeClient) -> None:
    await _backfill(300, settings, db, engine, connector, emulator, stripe_client)
