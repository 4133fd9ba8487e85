"""The emulator instance: accounts (each with its state), faults, counters, webhook delivery, persistence."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from twoway.emulators.stripe import endpoints, invoices
from twoway.emulators.stripe.accounts import Accounts
from twoway.emulators.stripe.config import EmulatorConfig
from twoway.emulators.stripe.idempotency import IdempotencyCache
from twoway.emulators.stripe.limits import Limiters
from twoway.emulators.stripe.persist import Persister
from twoway.emulators.stripe.state import Obj, Origin
from twoway.emulators.stripe.stats import Stats
from twoway.emulators.stripe.webhooks import LOCAL_SCHEDULE, REAL_SCHEDULE, Dispatcher

log = logging.getLogger(__name__)
ADVANCE_CHECK_SECONDS = 1.0


class Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.faults = config.faults()
        self.stats = Stats()
        self.limiters = Limiters()
        self.idempotency = IdempotencyCache()
        self.dispatcher = Dispatcher(
            self.faults,
            self.stats,
            timeout=config.webhook_timeout,
            schedule=REAL_SCHEDULE if config.real_retry_schedule else LOCAL_SCHEDULE,
            concurrency=config.webhook_concurrency,
        )
        self.accounts = Accounts(config.max_events, config.auto_finalize_seconds, self.dispatcher.publish)
        # The platform's store: what the API acted on before accounts, and still does for any key nobody owns.
        self.store = self.accounts.platform.store
        state_file = config.state_file
        self.persister = Persister(self.accounts, state_file, config.save_interval) if state_file else None
        self.startup_endpoint: Obj | None = None
        self.invoice_locks: set[str] = set()  # invoices a write is in flight on (invoice_lock_timeout knob)
        self._saver: asyncio.Task[None] | None = None
        self._advancer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.persister is not None:
            self.persister.load()
            self._saver = asyncio.create_task(self.persister.run())
        await self.dispatcher.start()
        self._advancer = asyncio.create_task(self._advance())
        if self.config.webhook_url:
            self.startup_endpoint = self._register_startup_endpoint(self.config.webhook_url)

    async def stop(self) -> None:
        for task in (self._saver, self._advancer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.persister is not None:
            self.persister.save_now()
        await self.dispatcher.stop()

    async def _advance(self) -> None:
        """Finalize auto_advance drafts when their `automatically_finalizes_at` comes."""
        while True:
            await asyncio.sleep(ADVANCE_CHECK_SECONDS)
            for account in list(self.accounts):
                try:
                    invoices.advance_due(account.store, time.time())
                except Exception:  # one bad invoice must not stop the timer
                    log.exception("auto-advancing invoices of %s failed", account.id)

    def _register_startup_endpoint(self, url: str) -> Obj:
        secret = self.config.webhook_secret
        for ep in self.store.endpoints.values():
            if ep["url"] == url and ep["enabled_events"] == ["*"] and not ep.get("connect"):
                # Reused from the state file; a secret given on the command line wins.
                if secret and ep["secret"] != secret:
                    ep = {**ep, "secret": secret}
                    self.store.endpoints[ep["id"]] = ep
                return ep
        params = {"url": url, "enabled_events": ["*"], "description": "registered at emulator startup"}
        return endpoints.create(self.store, params, Origin(None), secret=secret)

    def reset(self, clear_endpoints: bool = False, drop_accounts: bool = False) -> None:
        """Back to a clean slate: customers, invoices, events, idempotency keys, counters, rate buckets, faults.

        Webhook endpoints stay unless asked; the --webhook-url endpoint always stays. Every account's data is
        cleared; the accounts themselves (keys, deauthorization) stay unless asked.
        """
        if drop_accounts:
            self.accounts.drop_created()
        for account in self.accounts:
            account.store.reset(endpoints=clear_endpoints)
        if clear_endpoints and self.startup_endpoint is not None:
            self.store.endpoints[self.startup_endpoint["id"]] = self.startup_endpoint
        self.idempotency.clear()
        self.stats.reset()
        self.limiters.reset()
        self.dispatcher.reset()
        self.faults.merge(self.config.faults().as_dict())

    def stats_body(self) -> dict[str, Any]:
        return self.stats.render(
            pending=self.dispatcher.pending,
            customers=len(self.store.customers),
            invoices=len(self.store.book.invoices),
            invoiceitems=len(self.store.book.items),
            events=len(self.store.events),
        )
