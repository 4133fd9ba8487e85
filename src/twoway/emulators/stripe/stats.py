"""Counters behind `GET /_emulator/stats`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class WebhookCounts:
    delivered: int = 0
    failed_attempts: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0


@dataclass
class Stats:
    requests: dict[str, int] = field(default_factory=dict)
    responses: dict[str, dict[str, int]] = field(default_factory=dict)
    writes: int = 0
    webhooks: WebhookCounts = field(default_factory=WebhookCounts)

    def count(self, route: str, status: int) -> None:
        self.requests[route] = self.requests.get(route, 0) + 1
        by_status = self.responses.get(route)
        if by_status is None:
            by_status = self.responses[route] = {}
        key = str(status)
        by_status[key] = by_status.get(key, 0) + 1

    def reset(self) -> None:
        self.requests.clear()
        self.responses.clear()
        self.writes = 0
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
