"""Request counters behind an emulator's `GET /_emulator/stats`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RouteStats:
    requests: dict[str, int] = field(default_factory=dict)
    responses: dict[str, dict[str, int]] = field(default_factory=dict)
    writes: int = 0

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

    def render_routes(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "responses": {k: dict(v) for k, v in self.responses.items()},
                "writes": self.writes}
