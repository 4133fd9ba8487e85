"""Issue 6: the dashboard shows sync state and dead letters, and replays them, behind the API's keys."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import API_KEY, wait_until
from tests.helpers import running_worker, set_faults
from twoway.ops.status import consumer_lag
from twoway.settings import Settings
from twoway.sync.worker import outbound_group


@pytest.fixture
async def browser_like(app: object) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no Authorization header, like a browser; it keeps cookies."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://twoway.test") as c:
        yield c


async def _scalar(db, sql: str, **params):  # type: ignore[no-untyped-def]
    async with db() as s:
        return (await s.execute(text(sql), params)).scalar()


async def _dead_customer(client: httpx.AsyncClient, settings: Settings, db, emulator: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """A customer whose create Stripe refuses for good (a 400), so it is parked as a dead letter."""
    set_faults(emulator, reject_pattern="refused@")
    cid = (await client.post("/api/v1/customers", json={"name": "Rita Refused", "email": "refused@example.com"})
           ).json()["id"]

    async def dead_id() -> int | None:
        return await _scalar(db, "SELECT id FROM sync_events WHERE status = 'dead' AND internal_id = :i", i=cid)

    async with running_worker(settings):
        assert await wait_until(dead_id, timeout=30), "the rejected create should be parked as dead"
        # Let the consumer commit first: a redelivered message would try again and park a new dead letter.
        assert await wait_until(lambda: outbound_settled(settings, db), timeout=20, step=0.3)
    return cid, int(await dead_id() or 0)


async def outbound_settled(settings: Settings, db) -> bool:  # type: ignore[no-untyped-def]
    """Everything published and every outbound message handled and committed."""
    if await _scalar(db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL"):
        return False
    return (await consumer_lag(settings)).get(outbound_group(settings, "stripe"), {}).get("sync.outbound") == 0


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match, "the replay form carries a CSRF token"
    return match.group(1)


async def test_without_a_key_the_dashboard_is_closed(browser_like: httpx.AsyncClient) -> None:
    r = await browser_like.get("/")
    assert r.status_code == 401 and "/?key=" in r.text
    r = await browser_like.get("/?key=wrong")
    assert r.status_code == 401 and "twoway_key" not in r.headers.get("set-cookie", "")
    r = await browser_like.post("/dashboard/dead-letters/1/replay", data={"csrf": "x"})
    assert r.status_code == 401


async def test_key_once_then_cookie(browser_like: httpx.AsyncClient) -> None:
    r = await browser_like.get(f"/?key={API_KEY}")
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    r = await browser_like.get("/")
    assert r.status_code == 200 and "Dead letters" in r.text


async def test_page_lists_customers_dead_letters_and_replays_them(
        client: httpx.AsyncClient, browser_like: httpx.AsyncClient, settings: Settings, db,  # type: ignore[no-untyped-def]
        emulator: str) -> None:
    ok = (await client.post("/api/v1/customers", json={"name": "Sam Synced", "email": "sam@example.com"})).json()
    cid, failure = await _dead_customer(client, settings, db, emulator)
    ok_link = await _scalar(db, "SELECT external_id FROM links WHERE internal_id = :i", i=ok["id"])
    assert ok_link

    await browser_like.get(f"/?key={API_KEY}")
    page = (await browser_like.get("/")).text
    row = re.search(rf'<tr data-customer="{cid}">(.*?)</tr>', page, re.S)
    assert row and "refused@example.com" in row.group(1) and '"state dead"' in row.group(1)
    assert "is not allowed by this account" in row.group(1)  # the last error, next to the state
    synced = re.search(rf'<tr data-customer="{ok["id"]}">(.*?)</tr>', page, re.S)
    assert synced and ok_link in synced.group(1) and ">synced<" in synced.group(1)
    assert f'<tr data-failure="{failure}">' in page and "Replay" in page
    assert 'id="outbox-backlog">0<' in page and outbound_group(settings, "stripe") in page
    assert "Side by side" in page and ok_link in page.split("Side by side")[1]

    assert _csrf(page) == _csrf_for(browser_like)
    # A token from another credential, or a post from another site, is refused.
    r = await browser_like.post(f"/dashboard/dead-letters/{failure}/replay", data={"csrf": "0" * 64})
    assert r.status_code == 403
    r = await browser_like.post(f"/dashboard/dead-letters/{failure}/replay", data={"csrf": _csrf(page)},
                                headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert await _scalar(db, "SELECT status FROM sync_events WHERE id = :i", i=failure) == "dead"

    set_faults(emulator, reject_pattern=None)
    r = await browser_like.post(f"/dashboard/dead-letters/{failure}/replay", data={"csrf": _csrf(page)},
                                headers={"Origin": "http://twoway.test"})
    assert r.status_code == 303 and r.headers["location"] == f"/?replayed={failure}"
    assert await _scalar(db, "SELECT status FROM sync_events WHERE id = :i", i=failure) == "replayed"

    async def linked() -> bool:
        return bool(await _scalar(db, "SELECT external_id FROM links WHERE internal_id = :i", i=cid))

    async with running_worker(settings):
        assert await wait_until(linked, timeout=30)
    page = (await browser_like.get(f"/?replayed={failure}")).text
    assert "sent back through the sync path" in page and 'id="no-dead-letters"' in page
    row = re.search(rf'<tr data-customer="{cid}">(.*?)</tr>', page, re.S)
    assert row and ">synced<" in row.group(1)
    # Replaying it again does nothing: it is no longer dead.
    r = await browser_like.post(f"/dashboard/dead-letters/{failure}/replay", data={"csrf": _csrf_for(browser_like)})
    assert r.headers["location"] == f"/?not_replayed={failure}"


def _csrf_for(client: httpx.AsyncClient) -> str:
    import hashlib
    import hmac

    return hmac.new(client.cookies["twoway_key"].encode(), b"twoway-dashboard-replay", hashlib.sha256).hexdigest()


async def test_emulator_down_degrades_gracefully(app, browser_like: httpx.AsyncClient, db) -> None:  # type: ignore[no-untyped-def]
    app.state.settings = app.state.settings.model_copy(update={"stripe_api_base": "http://127.0.0.1:9"})
    await browser_like.get(f"/?key={API_KEY}")
    r = await browser_like.get("/")
    assert r.status_code == 200 and "did not answer" in r.text


async def test_live_part_record_pages_and_bad_input(client: httpx.AsyncClient, browser_like: httpx.AsyncClient,
                                                    settings: Settings, db) -> None:  # type: ignore[no-untyped-def]
    r = await browser_like.get("/dashboard/live")
    assert r.status_code == 401
    assert (await browser_like.get("/records/customer/1")).status_code == 401
    for i in range(3):
        await client.post("/api/v1/customers", json={"name": f"Vera {i}", "email": f"vera{i}@example.com"})
    cid = (await client.post("/api/v1/customers", json={"name": "Odd 100%_", "email": "odd@example.org"})).json()["id"]
    async with running_worker(settings):
        assert await wait_until(lambda: _all_linked(db, 4), timeout=30)
    await browser_like.get(f"/?key={API_KEY}")

    live = (await browser_like.get("/dashboard/live", params={"q": "vera"})).text
    assert live.count("<tr data-customer=") == 3 and "<html" not in live  # a fragment, not a page
    assert "Odd" not in live
    # % and _ are literal in a search, not wildcards; NUL is dropped, not a 500.
    literal = (await browser_like.get("/dashboard/live", params={"q": "100%_"})).text
    assert literal.count("<tr data-customer=") == 1
    assert (await browser_like.get("/dashboard/live", params={"q": "ve\x00ra"})).status_code == 200
    page2 = (await browser_like.get("/dashboard/live", params={"page": 2})).text
    assert "<tr data-customer=" not in page2 and 'rel="prev"' in page2
    assert (await browser_like.get("/dashboard/live", params={"page": 0})).status_code == 422
    assert (await browser_like.get("/", params={"kind": "nope"})).status_code == 404
    assert (await browser_like.get("/", params={"kind": "invoice"})).status_code == 200  # any registered kind

    record = (await browser_like.get(f"/records/customer/{cid}")).text
    assert 'id="timeline"' in record and 'data-what="create" data-outcome="ok"' in record
    assert (await browser_like.get("/records/customer/999999999")).status_code == 404
    assert (await browser_like.get("/records/nope/1")).status_code == 404
    assert (await browser_like.get(f"/records/customer/{2**63}")).status_code == 422

    chart = re.search(r'<svg id="chart-synced".*?</svg>', live, re.S)
    series = chart and re.search(r'<g data-series="stripe outbound".*?</g>', chart.group(0), re.S)
    assert series  # four creates, in whichever minutes they fell
    assert sum(int(v) for v in re.findall(r'data-value="(\d+)"', series.group(0))) == 4


async def _all_linked(db, n: int) -> bool:  # type: ignore[no-untyped-def]
    return await _scalar(db, "SELECT count(*) FROM links") == n and \
        await _scalar(db, "SELECT count(*) FROM sync_events WHERE status = 'ok'") == n


async def test_page_shows_table_sizes_oldest_rows_and_windows(client: httpx.AsyncClient,
                                                               browser_like: httpx.AsyncClient, db) -> None:  # type: ignore[no-untyped-def]
    await client.post("/api/v1/customers", json={"name": "Tess Tables", "email": "tess@example.com"})
    await browser_like.get(f"/?key={API_KEY}")
    page = (await browser_like.get("/")).text
    rows = dict(re.findall(r'<tr data-table="([a-z_-]+)">(.*?)</tr>', page, re.S))
    assert {"customers", "invoices", "invoice_lines", "links", "inbox", "inbox-payloads", "outbox", "sync_events",
            "idempotency_keys"} <= set(rows)
    assert int(re.search(r'data-bytes="(\d+)"', rows["customers"]).group(1)) > 0  # type: ignore[union-attr]
    assert "kept (the data)" in rows["customers"] and "s ago" in rows["customers"]  # its one row, just made
    assert "7d (SYNC_EVENTS_RETENTION_DAYS)" in rows["sync_events"]
    assert "none" in rows["inbox"] and "31d (INBOX_DEDUP_RETENTION_DAYS)" in rows["inbox"]
    assert "1h (INBOX_PAYLOAD_RETENTION_HOURS)" in rows["inbox-payloads"]
    assert "1d (IDEMPOTENCY_KEY_RETENTION_HOURS)" in rows["idempotency_keys"]
