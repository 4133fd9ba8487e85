# ruff: noqa: F811  (fixtures imported from tests.salesforce are used as parameters)
"""Issue 14: customers agree with Salesforce Accounts and, through us, with Stripe.

Real PostgreSQL, the real broker, both emulators; Salesforce is driven with simple-salesforce as a person
(another user than the connector's). Stripe's changes arrive by its Events API poller here, Salesforce's by
the SystemModstamp poller.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceResourceNotFound
from sqlalchemy import text

from tests.conftest import ROOT, emulator_call, wait_until
from tests.helpers import running_worker
from tests.salesforce import SF_CLIENT_ID, SF_CLIENT_SECRET, SfEmulator, sf_emulator, sf_emulator_session  # noqa: F401
from twoway.settings import Settings

UPSERT_BATCH = "PATCH composite/sobjects/Account/Twoway_Id__c"


@pytest.fixture
def sf_settings(settings: Settings, sf_emulator: SfEmulator) -> Settings:
    return settings.model_copy(update={
        "salesforce_login_url": sf_emulator.base, "salesforce_client_id": SF_CLIENT_ID,
        "salesforce_client_secret": Settings(salesforce_client_secret=SF_CLIENT_SECRET).salesforce_client_secret,
        "salesforce_ca_file": sf_emulator.ca_file, "salesforce_poll_settle_seconds": 0.3,
        "salesforce_poll_overlap_seconds": 5, "salesforce_poll_interval_seconds": 0, "salesforce_limit_pause_seconds": 1.0,
        "salesforce_rate_limit_per_second": 200, "inbound_mode": "poll", "poll_interval_seconds": 0.3,
    })


@pytest.fixture
def person(sf_emulator: SfEmulator) -> Salesforce:
    return sf_emulator.client("someone@twoway.test")


def accounts(sf: Salesforce, where: str = "") -> list[dict[str, Any]]:
    q = "SELECT Id, Name, Email__c, Twoway_Id__c, LastModifiedById FROM Account" + (f" WHERE {where}" if where else "")
    return list(sf.query_all(q)["records"])


def stripe_by_internal_id(base: str, cid: int) -> list[dict[str, Any]]:
    data = emulator_call(base, "/_emulator/customers")
    rows = data["data"] if isinstance(data, dict) else data
    return [c for c in rows if c.get("metadata", {}).get("internal_id") == str(cid)]


def stripe_with_email(base: str, email: str) -> list[dict[str, Any]]:
    data = emulator_call(base, "/_emulator/customers")
    rows = data["data"] if isinstance(data, dict) else data
    return [c for c in rows if c.get("email") == email]


async def create(client: httpx.AsyncClient, name: str, email: str) -> int:
    r = await client.post("/api/v1/customers", json={"name": name, "email": email})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def ours(client: httpx.AsyncClient, cid: int) -> dict[str, Any]:
    return dict((await client.get(f"/api/v1/customers/{cid}")).json())


async def scalar(db: Any, sql: str, **params: Any) -> Any:
    async with db() as s:
        return (await s.execute(text(sql), params)).scalar()


def both_hold(person: Salesforce, stripe_base: str, cid: int, name: str, email: str) -> bool:
    acct = accounts(person, f"Twoway_Id__c = '{cid}'")
    cus = stripe_by_internal_id(stripe_base, cid)
    return (len(acct) == 1 and (acct[0]["Name"], acct[0]["Email__c"]) == (name, email)
            and len(cus) == 1 and (cus[0]["name"], cus[0]["email"]) == (name, email))


async def test_our_customer_reaches_salesforce_and_stripe(client, sf_settings, emulator, person, db) -> None:
    async with running_worker(sf_settings):
        cid = await create(client, "Ada Lovelace", "ada@example.com")
        assert await wait_until(lambda: both_hold(person, emulator, cid, "Ada Lovelace", "ada@example.com"), 30)
        r = await client.patch(f"/api/v1/customers/{cid}", json={"name": "Ada King"})
        assert r.status_code == 200
        assert await wait_until(lambda: both_hold(person, emulator, cid, "Ada King", "ada@example.com"), 30)
        acct_id = accounts(person, f"Twoway_Id__c = '{cid}'")[0]["Id"]
        assert (await client.delete(f"/api/v1/customers/{cid}")).status_code == 204

        def gone() -> bool:
            try:
                person.Account.get(acct_id)
                return False
            except SalesforceResourceNotFound:
                return not stripe_by_internal_id(emulator, cid)
        assert await wait_until(gone, 30)
    assert await scalar(db, "SELECT count(*) FROM sync_events WHERE status = 'dead'") == 0


async def test_account_made_in_salesforce_reaches_us_and_stripe(client, sf_settings, emulator, person, db) -> None:
    async with running_worker(sf_settings):
        made = person.Account.create({"Name": "Grace Hopper", "Email__c": "grace@example.com"})["id"]

        async def imported() -> dict[str, Any] | None:
            page = (await client.get("/api/v1/customers", params={"email": "grace@example.com"})).json()
            return page["data"][0] if page["data"] else None
        row = await wait_until(imported, 30)
        assert row and row["name"] == "Grace Hopper"
        cid = int(row["id"])
        assert await wait_until(lambda: both_hold(person, emulator, cid, "Grace Hopper", "grace@example.com"), 30)
        assert accounts(person, f"Twoway_Id__c = '{cid}'")[0]["Id"] == made  # our id written back, no copy
        person.Account.update(made, {"Name": "Grace B. Hopper"})

        async def edited() -> bool:
            return (await ours(client, cid))["name"] == "Grace B. Hopper" and both_hold(
                person, emulator, cid, "Grace B. Hopper", "grace@example.com")
        assert await wait_until(edited, 30)
        person.Account.delete(made)

        async def deleted() -> bool:
            return bool((await ours(client, cid))["deleted_at"]) and not stripe_by_internal_id(emulator, cid)
        assert await wait_until(deleted, 30)
        assert len(accounts(person)) == 0
    assert await scalar(db, "SELECT count(*) FROM sync_events WHERE status = 'dead'") == 0


async def test_echoes_cost_no_write(client, sf_settings, emulator, person, sf_emulator, db) -> None:
    async with running_worker(sf_settings):
        cid = await create(client, "Echo", "echo@example.com")
        assert await wait_until(lambda: both_hold(person, emulator, cid, "Echo", "echo@example.com"), 30)
        acct_id = accounts(person, f"Twoway_Id__c = '{cid}'")[0]["Id"]
        # Our own write comes back through the poller: it is stored, then handled as an echo.
        q = ("SELECT count(*) FROM inbox WHERE system = 'salesforce' AND external_id = :x "
             "AND processed_at IS NOT NULL")
        assert await wait_until(lambda: scalar(db, q, x=acct_id), 30)
        assert sf_emulator.stats()["writes"] == 1  # the create (an upsert); the echo cost nothing
        fetched = sf_emulator.stats()["requests"].get("GET sobjects/Account/{id}", 0)
        assert fetched == 0


async def test_create_retried_after_a_crash_leaves_one_account(client, sf_settings, emulator, person,
                                                               sf_emulator) -> None:
    """The worker is killed after Salesforce made the Account and before our commit; the retry upserts."""
    sf_emulator.call("/_emulator/faults", {"response_delay_ms": 4000})
    cid = await create(client, "Crashy", "crashy@example.com")
    proc = _worker_process(sf_settings)
    try:
        assert await wait_until(lambda: accounts(person, f"Twoway_Id__c = '{cid}'"), 60)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # mid-answer: the Account exists, our link does not
        proc.wait(10)
    sf_emulator.call("/_emulator/faults", {"response_delay_ms": 0})
    async with running_worker(sf_settings):
        assert await wait_until(lambda: both_hold(person, emulator, cid, "Crashy", "crashy@example.com"), 60)
    assert len(accounts(person)) == 1


async def test_500_creates_go_out_in_at_most_5_composite_calls(client, sf_settings, emulator, person,
                                                               sf_emulator, db) -> None:
    ids = list(await asyncio.gather(*(create(client, f"Bulk {i}", f"bulk{i}@example.com") for i in range(500))))
    # A backlog of 500 (published before the consumers start), as after a burst or a pause. The linger is
    # long enough for this loaded test machine: the engine hands records over in waves.
    async with running_worker(sf_settings, ["relay"]):
        assert await wait_until(lambda: _equals(db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL", 0), 30)
    async with running_worker(sf_settings.model_copy(update={"salesforce_batch_linger_ms": 1000})):
        async def all_there() -> bool:
            return len(accounts(person)) == 500
        assert await wait_until(all_there, 120, 1.0)
    stats = sf_emulator.stats()
    calls = stats["requests"]
    assert calls.get(UPSERT_BATCH, 0) <= 5 and calls.get("PATCH sobjects/Account/{field}/{value}", 0) == 0, (
        calls, stats["composite_sizes"])
    assert len(ids) == 500


async def test_daily_limit_pauses_salesforce_while_stripe_goes_on(client, sf_settings, emulator, person,
                                                                   sf_emulator, db) -> None:
    async with running_worker(sf_settings):
        first = await create(client, "Before", "before@example.com")
        assert await wait_until(lambda: both_hold(person, emulator, first, "Before", "before@example.com"), 30)
        used = sf_emulator.stats()["api_usage"]
        sf_emulator.call("/_emulator/limits", {"daily_api_requests": used})
        cids = [await create(client, f"Limited {i}", f"limited{i}@example.com") for i in range(3)]
        assert await wait_until(lambda: all(stripe_by_internal_id(emulator, c) for c in cids), 30)

        def refused() -> bool:  # Salesforce's turn may come after Stripe's: wait for its refusal
            return any(v.get("403") for v in sf_emulator.stats()["responses"].values())
        assert await wait_until(refused, 30), sf_emulator.stats()["responses"]
        assert sf_emulator.stats()["api_usage"] == used  # nothing got through
        assert await scalar(db, "SELECT count(*) FROM sync_events WHERE status = 'dead'") == 0
        sf_emulator.call("/_emulator/limits", {"daily_api_requests": used + 1000})
        assert await wait_until(lambda: all(
            both_hold(person, emulator, c, f"Limited {i}", f"limited{i}@example.com") for i, c in enumerate(cids)), 60)
    assert await scalar(db, "SELECT count(*) FROM sync_events WHERE status = 'dead'") == 0


async def test_salesforce_outage_leaves_stripe_alone_and_catches_up(client, sf_settings, emulator, person,
                                                                    sf_emulator, db) -> None:
    """Three minutes in production; here the outage lasts long enough for several retry rounds."""
    async with running_worker(sf_settings):
        sf_emulator.call("/_emulator/faults", {"outage": True})
        cids = [await create(client, f"During {i}", f"during{i}@example.com") for i in range(3)]
        assert await wait_until(lambda: all(stripe_by_internal_id(emulator, c) for c in cids), 30)
        failed = "SELECT count(*) FROM sync_events WHERE system = 'salesforce' AND status IN ('retry', 'requeued')"
        assert await wait_until(lambda: scalar(db, failed), 30)
        sf_emulator.call("/_emulator/faults", {"outage": False})
        assert await wait_until(lambda: all(
            both_hold(person, emulator, c, f"During {i}", f"during{i}@example.com") for i, c in enumerate(cids)), 90)
    assert await scalar(db, "SELECT count(*) FROM sync_events WHERE status = 'dead'") == 0


def _worker_process(settings: Settings) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        env[name.upper()] = str(raw).lower() if isinstance(raw, bool) else str(raw)
    return subprocess.Popen([sys.executable, "-m", "twoway", "worker"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


async def test_both_sides_edited_at_once_one_value_wins_everywhere(client, sf_settings, emulator, person,
                                                                   stripe_client, db) -> None:
    async with running_worker(sf_settings):
        cid = await create(client, "Both", "both@example.com")
        assert await wait_until(lambda: both_hold(person, emulator, cid, "Both", "both@example.com"), 30)
    acct = accounts(person, f"Twoway_Id__c = '{cid}'")[0]["Id"]
    stripe_id = stripe_by_internal_id(emulator, cid)[0]["id"]
    # Both edits are made, and both noticed (the pollers store them), before either is merged.
    async with running_worker(sf_settings, ["poller"]):
        stripe_client.v1.customers.update(stripe_id, {"name": "From Stripe"})
        person.Account.update(acct, {"Name": "From Salesforce"})
        noticed = ("SELECT count(DISTINCT system) FROM inbox WHERE processed_at IS NULL "
                   "AND ((system = 'stripe' AND payload::text LIKE '%From Stripe%') "
                   "OR (system = 'salesforce' AND payload::text LIKE '%From Salesforce%'))")
        assert await wait_until(lambda: _equals(db, noticed, 2), 30)
    async with running_worker(sf_settings):
        async def agreed() -> str | None:
            name = (await ours(client, cid))["name"]
            if name in ("From Stripe", "From Salesforce") and both_hold(person, emulator, cid, name,
                                                                        "both@example.com"):
                return str(name)
            return None
        winner = await wait_until(agreed, 60)
        assert winner
        # Quiet: every event handled, and the three still agree on the same winner (no flip-flop).
        assert await wait_until(lambda: _equals(db, "SELECT count(*) FROM inbox WHERE processed_at IS NULL", 0), 30)
        assert await wait_until(agreed, 10) == winner
    assert await scalar(db, "SELECT count(*) FROM sync_events WHERE status = 'conflict' AND internal_id = :i",
                        i=cid) >= 1
    assert (await ours(client, cid))["name"] == winner


async def _equals(db: Any, sql: str, value: int) -> bool:
    return int(await scalar(db, sql)) == value


async def test_reconcile_sees_a_hard_deleted_account(client, sf_settings, emulator, person, sf_emulator,
                                                     db) -> None:
    """Emptied from the recycle bin: invisible to polling, found by the full id comparison."""
    from twoway.connectors.salesforce.connector import SalesforceConnector
    from twoway.kit.db import make_engine
    from twoway.ops.reconcile import reconcile

    async with running_worker(sf_settings):
        cid = await create(client, "Hard", "hard@example.com")
        assert await wait_until(lambda: both_hold(person, emulator, cid, "Hard", "hard@example.com"), 30)
        acct = accounts(person, f"Twoway_Id__c = '{cid}'")[0]["Id"]
        sf_emulator.call("/_emulator/hard_delete", {"ids": [acct]})
        connector = SalesforceConnector.from_settings(sf_settings)
        engine = make_engine(sf_settings.require_database_url())
        try:
            report = await reconcile(engine, connector, dry_run=False)
        finally:
            await connector.close()
            await engine.dispose()
        assert report.drifts, "reconcile found nothing"

        async def resolved() -> bool:
            # Delete wins: the Account is gone for good, so ours is deleted and so is the Stripe customer.
            return bool((await ours(client, cid))["deleted_at"]) and not stripe_by_internal_id(emulator, cid)
        assert await wait_until(resolved, 30)
