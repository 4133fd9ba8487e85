"""The dashboard in a real browser (headless chromium): it keeps itself current without a reload.

Condition waits only (Playwright's expect): the page polls its own live part, so every check below
is "this shows up within a few seconds", never "after a pause".
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright, expect
from pydantic import SecretStr

from tests.conftest import API_KEY, wait_until
from tests.helpers import register_webhook, running_worker, set_faults
from tests.integration.test_dashboard import outbound_settled
from twoway.api import create_app
from twoway.kit.embedded import free_port, wait_for_port
from twoway.settings import Settings

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SOON = 15_000  # ms: "within a few seconds", with room for a loaded machine


@pytest.fixture
def live_settings(settings: Settings, stripe_client) -> tuple[Settings, int]:  # type: ignore[no-untyped-def]
    """Settings whose webhook secret is the emulator's endpoint pointing at the port we will serve on."""
    port = free_port()
    secret = register_webhook(stripe_client, port)
    return settings.model_copy(update={"stripe_webhook_secret": SecretStr(secret)}), port


@pytest.fixture
def served(live_settings: tuple[Settings, int], db: object) -> Iterator[str]:
    """The real app on a real port, in its own thread and event loop, as a browser needs."""
    settings, port = live_settings
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port, 20)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def _signed_in(browser: Browser, served: str) -> Page:
    page = await browser.new_page()
    await page.goto(f"{served}/?key={API_KEY}")
    assert page.url == f"{served}/"  # the key left the address bar for an httponly cookie
    [cookie] = await page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    return page


async def test_a_new_customer_appears_with_its_timeline_and_a_chart_point(
        served: str, live_settings: tuple[Settings, int], browser: Browser) -> None:
    settings, _ = live_settings
    page = await _signed_in(browser, served)
    await page.evaluate("window.sameDocument = true")  # gone if the page ever reloads
    async with running_worker(settings), httpx.AsyncClient(
            base_url=served, headers={"Authorization": f"Bearer {API_KEY}"}) as api:
        r = await api.post("/api/v1/customers", json={"name": "Lena Live", "email": "lena@example.com"})
        assert r.status_code == 201
        cid = r.json()["id"]

        row = page.locator(f'tr[data-customer="{cid}"]')
        await expect(row).to_contain_text("lena@example.com", timeout=SOON)
        await expect(row.locator('td[data-system="stripe"]')).to_have_text("synced", timeout=SOON)
        point = page.locator('#chart-synced g[data-series="stripe outbound"] circle[data-value]')
        await expect(point.first).to_be_attached(timeout=SOON)
        assert int(await point.last.get_attribute("data-value") or 0) >= 1
        assert await page.evaluate("window.sameDocument === true")  # all of it without a reload

        await row.locator("a.record-link").click()
        await expect(page).to_have_url(f"{served}/records/customer/{cid}")
        timeline = page.locator("#timeline")
        await expect(timeline.locator('tr[data-source="sync"][data-what="create"][data-outcome="ok"]')).to_have_count(1)
        # Stripe's customer.created webhook for our own create comes back and changes nothing.
        echo = timeline.locator('tr[data-source="event"][data-what="customer.created"]')
        await expect(echo).to_have_attribute("data-outcome", "echo", timeout=SOON)


async def test_search_and_pages_without_a_reload(served: str, browser: Browser) -> None:
    async with httpx.AsyncClient(base_url=served, headers={"Authorization": f"Bearer {API_KEY}"}) as api:
        for i in range(30):
            assert (await api.post("/api/v1/customers", json={"name": f"Pat {i:02}",
                                                               "email": f"pat{i:02}@example.com"})).status_code == 201
        assert (await api.post("/api/v1/customers", json={"name": "Quinn", "email": "quinn@example.org"})
                ).status_code == 201
    page = await _signed_in(browser, served)
    await page.evaluate("window.sameDocument = true")
    rows = page.locator("#records tr[data-customer]")
    await expect(rows).to_have_count(25)
    await page.locator('#records ~ .pager a[rel="next"]').click()
    await expect(rows).to_have_count(6)
    await expect(page).to_have_url(f"{served}/?page=2")
    await page.get_by_label("search").fill("EXAMPLE.ORG")  # by email, any case
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("Quinn")
    await page.get_by_label("search").fill("pat 1")  # by name
    await expect(rows).to_have_count(10)
    assert await page.evaluate("window.sameDocument === true")


async def _dead(api: httpx.AsyncClient) -> bool:
    return bool((await api.get("/api/v1/sync/failures")).json())


async def test_replay_a_dead_letter_from_the_dashboard(served: str, live_settings: tuple[Settings, int], db,  # type: ignore[no-untyped-def]
                                                      emulator: str, browser: Browser) -> None:
    settings, _ = live_settings
    set_faults(emulator, reject_pattern="blocked@")
    async with httpx.AsyncClient(base_url=served, headers={"Authorization": f"Bearer {API_KEY}"}) as api:
        r = await api.post("/api/v1/customers", json={"name": "Bo Blocked", "email": "blocked@example.com"})
        assert r.status_code == 201
        cid = r.json()["id"]
        # First park it as dead and let that worker leave (committing its offsets), so the dead letter the
        # page shows is not superseded by a redelivery while the browser looks at it.
        async with running_worker(settings):
            assert await wait_until(lambda: _dead(api), timeout=30)
            assert await wait_until(lambda: outbound_settled(settings, db), timeout=20, step=0.3)

    async with running_worker(settings):
        page = await _signed_in(browser, served)
        dead_row = page.locator("#dead-letters tr[data-failure]")
        await expect(dead_row).to_contain_text(f"customer {cid}", timeout=SOON)
        state = page.locator(f'tr[data-customer="{cid}"] td[data-system="stripe"]')
        await expect(state).to_have_text("dead")

        set_faults(emulator, reject_pattern=None)
        await dead_row.get_by_role("button", name="Replay").click()
        await expect(page.locator(".notice")).to_contain_text("sent back through the sync path")
        await expect(page.locator("#no-dead-letters")).to_be_attached(timeout=30_000)
        await expect(state).to_have_text("synced", timeout=30_000)
        external_id = await page.locator(f'tr[data-customer="{cid}"] td.mono').first.inner_text()
        assert external_id.startswith("cus_")
