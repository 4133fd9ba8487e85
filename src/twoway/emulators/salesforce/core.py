"""The emulator instance: state, faults, counters, query cursors, persistence."""

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
from twoway.emulators.salesforce.store import Obj, Store

MAX_CURSORS = 1000


@dataclass
class Cursor:
    rows: list[Obj]
    fields: list[str]
    page: int


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
        self.store = Store(config.daily_api_requests)
        self.faults = config.faults()
        self.stats = Stats()
        self.cursors: OrderedDict[str, Cursor] = OrderedDict()
        self.persister = Persister(self.store, config.state_file, config.save_interval) if config.state_file else None
        self._saver: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.persister is not None:
            self.persister.load()
            self.store.daily_limit = self.config.daily_api_requests  # the command line wins over the file
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
        """Back to a clean slate: records, users, tokens, clock, counters, faults, daily limit."""
        self.store.reset()
        self.store.daily_limit = self.config.daily_api_requests
        self.cursors.clear()
        self.stats.reset()
        self.faults.merge(self.config.faults().as_dict())

    def stats_body(self) -> dict[str, Any]:
        used, limit = self.store.usage_now()
        live = sum(1 for r in self.store.records.values() if not r["IsDeleted"])
        return {**self.stats.render_routes(), "clients": dict(self.stats.clients),
                "composite_sizes": list(self.stats.composite_sizes), "api_usage": used,
                "daily_limit": limit, "accounts": live, "recycle_bin": len(self.store.records) - live}
