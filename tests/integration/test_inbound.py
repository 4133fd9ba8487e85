"""Issue 5: Stripe's changes reach our catalog through verified webhooks or polling; no echo."""

from __future__ import annotations

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

from tests.conftest import API_KEY, emulator_call, wait_until
from tests.helpers import register_webhook, running_worker, served_api, set_faults, settled, stripe_writes
from twoway.kit.embedded import free_port
from twoway.settings import Settings


@contextlib.asynccontextmanager
async def inbound_system(settings: Settings, stripe_client: stripe.StripeClient, *, worker: bool = True,
                         **overrides: object) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """Our API over HTTP with the emulator's webhooks pointed at it, and a worker."""
    port = free_port()
    secret = register_webhook(stripe_client, port)
    live = settings.model_copy(update={"stripe_webhook_secret": SecretStr(secret), **overrides})
    async with served_api(live, port) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}) as api:
        if worker:
            async with running_worker(live):
                yield api, live
        else:
            yield api, live


async def ours_by_email(api: httpx.AsyncClient, email: str, include_deleted: bool = False) -> list[dict]:
    r = await api.get("/api/v1/customers", params={"email": email, "include_deleted": include_deleted})
    return r.json()["data"]


async def _count(db, sql: str, **params) -> int:  # type: ignore[no-untyped-def]
    async with db() as s:
        return int((await s.execute(text(sql), params)).scalar() or 0)


async def test_stripe_create_update_delete_reach_us(settings, stripe_client, emulator, db) -> None:
    async with inbound_system(settings, stripe_client) as (api, live):
        sc = stripe_client.v1.customers.create({"name": "Katherine Johnson", "email": "kj@example.com"})
        ours = await wait_until(lambda: ours_by_email(api, "kj@example.com"))
        assert len(ours) == 1 and ours[0]["name"] == "Katherine Johnson"
        cid = ours[0]["id"]
        sync = (await api.get(f"/api/v1/customers/{cid}/sync")).json()
        assert sync["systems"]["stripe"]["external_id"] == sc.id
        # our id is written back to Stripe, so a lost link can be found again
        assert await wait_until(
            lambda: stripe_client.v1.customers.retrieve(sc.id).to_dict()["metadata"].get("internal_id") == str(cid))

        stripe_client.v1.customers.update(sc.id, {"name": "K. Johnson"})
        assert await wait_until(lambda: _name_is(api, cid, "K. Johnson"))

        stripe_client.v1.customers.delete(sc.id)
        assert await wait_until(lambda: _deleted(api, cid))
        assert await wait_until(lambda: settled(live, db, emulator), timeout=30, step=0.3)
        assert await _count(db, "SELECT count(*) FROM customers") == 1


async def _name_is(api: httpx.AsyncClient, cid: int, name: str) -> bool:
    return (await api.get(f"/api/v1/customers/{cid}")).json()["name"] == name


async def _deleted(api: httpx.AsyncClient, cid: int) -> bool:
    return bool((await api.get(f"/api/v1/customers/{cid}")).json()["deleted_at"])


async def test_our_create_does_not_echo(settings, stripe_client, emulator, db) -> None:
    async with inbound_system(settings, stripe_client) as (api, live):
        r = await api.post("/api/v1/customers", json={"name": "Dorothy Vaughan", "email": "dv@example.com"})
        cid = r.json()["id"]
        assert await wait_until(lambda: _processed_all_inbox(db), timeout=20)
        assert await wait_until(lambda: len(_stripe_with(emulator, "dv@example.com")) == 1)
        # Settled is a fixed point: an echo loop would keep a webhook, an event or a message in flight.
        assert await wait_until(lambda: settled(live, db, emulator), timeout=30, step=0.3)
        snapshot = await _quiet_snapshot(api, db, emulator, cid)
        assert await wait_until(lambda: settled(live, db, emulator), timeout=30, step=0.3)
        assert await _quiet_snapshot(api, db, emulator, cid) == snapshot
    assert snapshot[0] == 1  # one Stripe write: the create
    assert snapshot[1] == 1  # our version never moved
    reads = emulator_call(emulator, "/_emulator/stats")["requests"].get("GET /v1/customers/{id}", 0)
    assert reads == 0  # the echo equals base: not worth a read
    assert len(_stripe_with(emulator, "dv@example.com")) == 1


async def _processed_all_inbox(db) -> bool:  # type: ignore[no-untyped-def]
    return await _count(db, "SELECT count(*) FROM inbox") > 0 and \
        await _count(db, "SELECT count(*) FROM inbox WHERE processed_at IS NULL") == 0


async def _quiet_snapshot(api, db, emulator, cid):  # type: ignore[no-untyped-def]
    me = (await api.get(f"/api/v1/customers/{cid}")).json()
    return (stripe_writes(emulator), me["version"], await _count(db, "SELECT count(*) FROM sync_events"),
            await _count(db, "SELECT count(*) FROM outbox"))


def _stripe_with(base: str, email: str) -> list[dict]:
    data = emulator_call(base, "/_emulator/customers")
    rows = data["data"] if isinstance(data, dict) else data
    return [c for c in rows if c.get("email") == email]


async def test_duplicated_and_shuffled_webhooks_end_at_stripes_latest(settings, stripe_client, emulator, db) -> None:
    set_faults(emulator, webhook_duplicate_rate=1.0, webhook_reorder=10)
    async with inbound_system(settings, stripe_client) as (api, _):
        customers = [stripe_client.v1.customers.create({"name": f"S{i}", "email": f"s{i}@example.com"})
                     for i in range(10)]
        for round_ in range(9):
            for c in customers:
                stripe_client.v1.customers.update(c.id, {"name": f"{c.id} r{round_}"})
        stats = await wait_until(lambda: _deliveries_done(emulator), timeout=60)
        assert stats["duplicated"] > 0 and stats["reordered"] > 0
        for c in customers:
            assert await wait_until(lambda c=c: _our_name_for(api, c.email, f"{c.id} r8"), timeout=30)
        assert await _count(db, "SELECT count(*) FROM customers") == 10
        assert await _count(db, "SELECT count(*) FROM links") == 10
        # 100 events of theirs and 10 of our metadata write-backs, each stored once despite duplicates
        assert await _count(db, "SELECT count(*) FROM inbox") == 110


def _deliveries_done(base: str) -> dict | None:
    hooks = emulator_call(base, "/_emulator/stats")["webhooks"]
    return hooks if hooks["pending"] == 0 and hooks["delivered"] >= 100 else None


async def _our_name_for(api: httpx.AsyncClient, email: str, name: str) -> bool:
    rows = await ours_by_email(api, email)
    return len(rows) == 1 and rows[0]["name"] == name


async def _link_for(db, cid: int) -> str | None:  # type: ignore[no-untyped-def]
    async with db() as s:
        return (await s.execute(text("SELECT external_id FROM links WHERE internal_id = :i"), {"i": cid})).scalar()


async def test_concurrent_edits_of_different_fields_both_survive(settings, stripe_client, emulator, db) -> None:
    async with inbound_system(settings, stripe_client, worker=False) as (api, live):
        cid = (await api.post("/api/v1/customers", json={"name": "Mary", "email": "mary@example.com"})).json()["id"]
        async with running_worker(live):
            ext = await wait_until(lambda: _link_for(db, cid))
            assert await wait_until(lambda: _processed_all_inbox(db))
        # Both sides edit while no worker runs; the webhook is stored, the outbox row waits.
        await api.patch(f"/api/v1/customers/{cid}", json={"name": "Mary Jackson"})
        stripe_client.v1.customers.update(ext, {"email": "mjackson@example.com"})
        assert await wait_until(lambda: _count(db, "SELECT count(*) FROM inbox WHERE processed_at IS NULL"))
        async with running_worker(live):
            assert await wait_until(lambda: _both_sides(api, stripe_client, cid, ext,
                                                        ("Mary Jackson", "mjackson@example.com")), timeout=20)
        assert await _count(db, "SELECT count(*) FROM sync_events WHERE status = 'conflict'") == 0


async def _both_sides(api, stripe_client, cid, ext, expected) -> bool:  # type: ignore[no-untyped-def]
    ours = (await api.get(f"/api/v1/customers/{cid}")).json()
    theirs = stripe_client.v1.customers.retrieve(ext)
    return (ours["name"], ours["email"]) == expected and (theirs.name, theirs.email) == expected


@pytest.mark.parametrize("ours_last", [True, False])
async def test_both_edit_the_same_field_newer_wins_and_conflict_is_recorded(
        settings, stripe_client, emulator, db, ours_last) -> None:
    async with inbound_system(settings, stripe_client, worker=False) as (api, live):
        cid = (await api.post("/api/v1/customers", json={"name": "Annie", "email": "annie@example.com"})).json()["id"]
        async with running_worker(live):
            ext = await wait_until(lambda: _link_for(db, cid))
            # Settled, not merely "inbox empty once": the write-back of our id to Stripe sends a later event.
            assert await wait_until(lambda: settled(live, db, emulator), timeout=30, step=0.3)
        first, second = ("theirs", "ours") if ours_last else ("ours", "theirs")
        for side in (first, second):
            if side == "ours":
                await api.patch(f"/api/v1/customers/{cid}", json={"name": "Annie Easley (ours)"})
            else:
                stripe_client.v1.customers.update(ext, {"name": "Annie Easley (theirs)"})
            time.sleep(1.1)  # Stripe's event times have one-second resolution
        # Their edit itself (not any event) must be stored before the worker runs, or ours would simply
        # overwrite it unseen: Stripe takes an update without asking what it replaces.
        assert await wait_until(lambda: _count(db, """
            SELECT count(*) FROM inbox WHERE processed_at IS NULL
              AND payload -> 'data' -> 'object' ->> 'name' = 'Annie Easley (theirs)'"""))
        winner = "Annie Easley (ours)" if ours_last else "Annie Easley (theirs)"
        async with running_worker(live):
            assert await wait_until(lambda: _both_sides(api, stripe_client, cid, ext,
                                                        (winner, "annie@example.com")), timeout=20)
            # Both sides show the winner as soon as Stripe answers; the log row commits a moment later.
            detail = await wait_until(lambda: _conflict(db, cid), timeout=20)
        assert detail and detail["field"] == "name" and detail["winner"] == ("ours" if ours_last else "theirs")


async def _conflict(db, cid: int) -> dict | None:  # type: ignore[no-untyped-def]
    async with db() as s:
        return (await s.execute(text(
            "SELECT detail FROM sync_events WHERE status = 'conflict' AND internal_id = :i"), {"i": cid})).scalar()


async def test_poll_mode_without_webhooks(settings, stripe_client, emulator, db) -> None:
    live = settings.model_copy(update={"inbound_mode": "poll"})
    async with running_worker(live):
        assert await wait_until(lambda: _count(db, "SELECT count(*) FROM cursors"))
        sc = stripe_client.v1.customers.create({"name": "Polly", "email": "polly@example.com"})
        assert await wait_until(lambda: _link_for_external(db, sc.id))
        stripe_client.v1.customers.update(sc.id, {"name": "Polly Updated"})
        assert await wait_until(lambda: _name_of(db, sc.id, "Polly Updated"))
        stripe_client.v1.customers.delete(sc.id)
        assert await wait_until(lambda: _count(db, "SELECT count(*) FROM customers WHERE deleted_at IS NOT NULL"))
    hooks = emulator_call(emulator, "/_emulator/stats")["webhooks"]
    assert hooks["delivered"] == 0
    assert await _count(db, "SELECT count(*) FROM inbox WHERE source = 'poll'") >= 3


async def _link_for_external(db, ext: str) -> int | None:  # type: ignore[no-untyped-def]
    async with db() as s:
        return (await s.execute(text("SELECT internal_id FROM links WHERE external_id = :e"), {"e": ext})).scalar()


async def _name_of(db, ext: str, name: str) -> bool:  # type: ignore[no-untyped-def]
    async with db() as s:
        got = (await s.execute(text("SELECT c.name FROM customers c JOIN links l ON l.internal_id = c.id "
                                    "WHERE l.external_id = :e"), {"e": ext})).scalar()
    return got == name


def _reads(emulator: str) -> int:
    return int(emulator_call(emulator, "/_emulator/stats")["requests"].get("GET /v1/customers/{id}", 0))


async def _settled_customer(api, stripe_client, live, db, emulator, email: str):  # type: ignore[no-untyped-def]
    sc = stripe_client.v1.customers.create({"name": "Start", "email": email})
    assert await wait_until(lambda: _link_for_external(db, sc.id))
    assert await wait_until(lambda: settled(live, db, emulator), timeout=30, step=0.3)
    time.sleep(2.2)  # their next events are seconds later than our last write of the link (clock skew allowed)
    return sc


async def test_stripe_side_edits_seconds_apart_cost_almost_no_reads(settings, stripe_client, emulator, db) -> None:
    """Issue 23: the newest event's own object stands for a read; <= 0.2 reads per change."""
    async with inbound_system(settings, stripe_client) as (api, live):
        sc = await _settled_customer(api, stripe_client, live, db, emulator, "reads@example.com")
        before, edits = _reads(emulator), 5
        for n in range(edits):
            stripe_client.v1.customers.update(sc.id, {"name": f"Edit {n}"})
            assert await wait_until(lambda n=n: _name_of(db, sc.id, f"Edit {n}"), timeout=20)
            time.sleep(3.2)  # the next edit's second is later than this one's handling
        reads = _reads(emulator) - before
        assert reads / edits <= 0.2, reads


async def test_same_second_events_delivered_backwards_end_at_stripes_latest(
        settings, stripe_client, emulator, db) -> None:
    """The newer of two same-second events arrives first and is taken; the older one, delivered after it,
    must not win: taken blindly, its object would put the older name back."""
    async with inbound_system(settings, stripe_client) as (api, live):
        sc = await _settled_customer(api, stripe_client, live, db, emulator, "backwards@example.com")
        set_faults(emulator, webhook_drop_rate=1.0)  # we deliver these two ourselves, in the wrong order
        for _ in range(5):
            time.sleep(1 - time.time() % 1 + 0.05)  # early in a second: both edits fall in it
            stripe_client.v1.customers.update(sc.id, {"name": "Older"})
            stripe_client.v1.customers.update(sc.id, {"name": "Newer"})
            events = [e.to_dict() for e in stripe_client.v1.events.list({"limit": 2})]
            if events[0]["created"] == events[1]["created"]:
                break
        else:
            pytest.fail("no two edits in one second")
        set_faults(emulator, webhook_drop_rate=0.0)
        newer, older = events  # newest first
        assert (newer["data"]["object"]["name"], older["data"]["object"]["name"]) == ("Newer", "Older")
        async with httpx.AsyncClient(base_url=str(api.base_url)) as hooks:
            for event in (newer, older):
                body = json.dumps(event).encode()
                t = int(time.time())
                mac = hmac.new(live.webhook_secrets()[0].encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
                r = await hooks.post("/api/v1/webhooks/stripe", content=body, headers={
                    "Stripe-Signature": f"t={t},v1={mac}", "Content-Type": "application/json"})
                assert r.status_code == 200, r.text
                assert await wait_until(lambda: _processed_all_inbox(db), timeout=20)
                assert await wait_until(lambda: settled(live, db, emulator), timeout=30, step=0.3)
                assert await _name_of(db, sc.id, "Newer")
