"""Counters behind `GET /_emulator/stats`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from twoway.emulators.kit.stats import RouteStats


@dataclass
class WebhookCounts:
    delivered: int = 0
    failed_attempts: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0


SECONDS_KEPT = 300
ALL_ROUTES = "*"


@dataclass
class Stats(RouteStats):
    webhooks: WebhookCounts = field(default_factory=WebhookCounts)
    # Requests the rate limiters let through, per route (and ALL_ROUTES) per wall-clock second, the last
    # SECONDS_KEPT seconds: what a client sent that Stripe would count, so tests can check "<= 25/s".
    per_second: dict[str, dict[int, int]] = field(default_factory=dict)

    def reset(self) -> None:
        super().reset()
        self.webhooks = WebhookCounts()
        self.per_second.clear()

    def admitted(self, route: str) -> None:
        second = int(time.time())
        for key in (route, ALL_ROUTES):
            seconds = self.per_second.get(key)
            if seconds is None:
                seconds = self.per_second[key] = {}
            if second not in seconds:
                for old in [s for s in seconds if s <= second - SECONDS_KEPT]:
                    del seconds[old]
                seconds[second] = 0
            seconds[second] += 1

    def render(self, pending: int, customers: int, invoices: int, invoiceitems: int, events: int) -> dict[str, Any]:
        w = self.webhooks
        return {
            "requests": dict(self.requests),
            "responses": {k: dict(v) for k, v in self.responses.items()},
            "writes": self.writes,
            "webhooks": {
                "delivered": w.delivered,
                "failed_attempts": w.failed_attempts,
                "dropped": w.dropped,
                "duplicated": w.duplicated,
                "reordered": w.reordered,
                "pending": pending,
            },
            "per_second": {route: {str(s): n for s, n in by_second.items()}
                           for route, by_second in self.per_second.items()},
            "peak_per_second": {route: max(by_second.values()) for route, by_second in self.per_second.items()},
            "customers": customers,
            "invoices": invoices,
            "invoiceitems": invoiceitems,
            "events": events,
        }
