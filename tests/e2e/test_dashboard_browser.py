"""Issue 6: a person opens the dashboard in a real browser, sees a dead letter, replays it and sees it converge."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from playwright.async_api import Page, async_playwright

from tests.conftest import API_KEY, wait_until
from tests.helpers import running_worker, set_faults
from tests.integration.test_dashboard import outbound_settled
from twoway.api import create_app
from twoway.kit.embedded import free_port, wait_for_port
from twoway.settings import Settings

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def served(settings: Settings, db: object) -> Iterator[str]:
    """The real app on a real port, in its own thread and event loop, as a browser needs."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port, 20)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


async def _reload_until(page: Page, condition: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await page.evaluate(condition):
            return True
        await page.wait_for_timeout(500)
        await page.reload()
    return False


async def _dead(api: httpx.AsyncClient) -> bool:
    return bool((await api.get("/api/v1/sync/failures")).json())


async def test_replay_a_dead_letter_from_the_dashboard(served: str, settings: Settings, db,  # type: ignore[no-untyped-def]
                                                      emulator: str) -> None:
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

    async with running_worker(settings), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{served}/?key={API_KEY}")
            assert page.url == f"{served}/"  # the key left the address bar for an httponly cookie
            dead_row = page.locator("#dead-letters tr[data-failure]")
            assert await _reload_until(page, "document.querySelector('#dead-letters tr[data-failure]') !== null")
            assert f"customer {cid}" in await dead_row.inner_text()
            [cookie] = await page.context.cookies()
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            state = page.locator(f'tr[data-customer="{cid}"] td[data-system="stripe"]')
            assert (await state.inner_text()).strip() == "dead"

            set_faults(emulator, reject_pattern=None)
            await dead_row.get_by_role("button", name="Replay").click()
            await page.wait_for_load_state()
            assert "sent back through the sync path" in await page.locator(".notice").inner_text()

            converged = (f"document.querySelector('#no-dead-letters') !== null && "
                         f"document.querySelector('tr[data-customer=\"{cid}\"] td[data-system=\"stripe\"]')"
                         f".textContent.trim() === 'synced'")
            assert await _reload_until(page, converged)
            external_id = await page.locator(f'tr[data-customer="{cid}"] td.mono').first.inner_text()
            assert external_id.startswith("cus_")
        finally:
            await browser.close()
