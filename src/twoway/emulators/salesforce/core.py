"""The emulator instance: its orgs (state), faults, counters, query cursors, persistence.

Faults, counters and the clock belong to the instance, shared by its orgs as one host's outage is."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from twoway.emulators.kit.persist import Persister
from twoway.emulators.kit.stats import RouteStats
from twoway.emulators.salesforce.config import SalesforceConfig
from twoway.emulators.salesforce.orgs import Org, Orgs
from twoway.emulators.salesforce.store import Obj

MAX_CURSORS = 1000


@dataclass
class Cursor:
    rows: list[Obj]
    fields: list[str]
    page: int
    org_id: str  # a locator opens only in the org that made it


@dataclass
class Stats(RouteStats):
    # Calls per `Sforce-Call-Options: client=` value ("(none)" without the header).
    clients: dict[str, int] = field(default_factory=dict)
    # Records per composite call, the latest 1000: how well writes were batched.
    composite_sizes: list[int] = field(default_factory=list)

    def reset(self) -> None:
        super().reset()
        self.clients.clear()
        self.composite_sizes.clear()


class Emulator:
    def __init__(self, config: SalesforceConfig) -> None:
        self.config = config
        if not config.client_secret:
            config.client_secret = secrets.token_urlsafe(24)
        self.orgs = Orgs(config)
        self.faults = config.faults()
        self.stats = Stats()
        self.cursors: OrderedDict[str, Cursor] = OrderedDict()
        self.persister = Persister(self.orgs, config.state_file, config.save_interval) if config.state_file else None
        self._saver: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.persister is not None:
            self.persister.load()
            # The command line wins over the file (for the first org; the others' allowances are their own).
            self.orgs.default.store.daily_limit = self.config.daily_api_requests
            self._saver = asyncio.create_task(self.persister.run())

    async def stop(self) -> None:
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
        if self.persister is not None:
            self.persister.save_now()

    def add_cursor(self, cursor: Cursor) -> str:
        ident = "01g" + secrets.token_hex(8)
        self.cursors[ident] = cursor
        while len(self.cursors) > MAX_CURSORS:
            self.cursors.popitem(last=False)
        return ident

    def reset(self) -> None:
        """Back to a clean slate: one org (created orgs are gone), records, users, tokens, clock, counters,
        faults, daily limit."""
        self.orgs.reset()
        self.cursors.clear()
        self.stats.reset()
        self.faults.merge(self.config.faults().as_dict())

    def stats_body(self, org: Org) -> dict[str, Any]:
        """The instance's counters, with `org`'s usage and record counts."""
        store = org.store
        used, limit = store.usage_now()
        live = sum(1 for r in store.records.values() if not r["IsDeleted"])
        return {**self.stats.render_routes(), "clients": dict(self.stats.clients),
                "composite_sizes": list(self.stats.composite_sizes), "api_usage": used,
                "daily_limit": limit, "accounts": live, "recycle_bin": len(store.records) - live}
