"""Counters behind `GET /_emulator/stats`."""

from __future__ import annotations

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


@dataclass
class Stats(RouteStats):
    webhooks: WebhookCounts = field(default_factory=WebhookCounts)

    def reset(self) -> None:
        super().reset()
        self.webhooks = WebhookCounts()

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
            "customers": customers,
            "invoices": invoices,
            "invoiceitems": invoiceitems,
            "events": events,
        }
