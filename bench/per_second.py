"""What the emulator's limiters let through, per route and per wall-clock second, for a whole run.

`GET /_emulator/stats` keeps `per_second` for the last 300 s only; a drain may last longer, so `Seconds`
polls it every few seconds and keeps every second it has seen. Rates over a window leave out its first
and last seconds, which the window covers only in part.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from bench.cluster import Cluster

ALL = "*"  # the emulator's key for every route together


@dataclass(frozen=True)
class Span:
    """A route's calls over whole seconds `first`..`last` (wall clock), partial end seconds left out."""

    route: str
    first: int
    last: int
    calls: int  # in the whole seconds between first and last

    @property
    def seconds(self) -> int:
        return max(0, self.last - self.first - 1)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


class Seconds:
    def __init__(self, cluster: Cluster, every: float = 5.0) -> None:
        self.cluster = cluster
        self.every = every
        self.counts: dict[str, dict[int, int]] = {}
        self._task: asyncio.Task[None] | None = None

    async def poll(self) -> None:
        stats = await asyncio.to_thread(self.cluster.emulator_stats)
        for route, by_second in stats.get("per_second", {}).items():
            kept = self.counts.setdefault(route, {})
            for second, n in by_second.items():
                kept[int(second)] = max(n, kept.get(int(second), 0))  # a second's count only grows

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self.poll()

    async def __aenter__(self) -> Seconds:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.poll()

    def span(self, route: str, since: float, until: float | None = None) -> Span | None:
        """The route's active window between wall-clock times `since` and `until`: its first to its last
        second with a call. None when it saw fewer than three seconds of calls."""
        end = time.time() if until is None else until
        seconds = sorted(s for s, n in self.counts.get(route, {}).items() if n and since <= s + 1 and s <= end)
        if len(seconds) < 3:
            return None
        first, last = seconds[0], seconds[-1]
        calls = sum(n for s, n in self.counts[route].items() if first < s < last)
        return Span(route, first, last, calls)

    def spans(self, since: float, until: float | None = None) -> list[Span]:
        """Every route's span (the ALL one first), busiest first."""
        out = [s for route in self.counts if (s := self.span(route, since, until)) is not None]
        return sorted(out, key=lambda s: (s.route != ALL, -s.calls))

    def peak(self, route: str, since: float, until: float | None = None) -> int:
        end = time.time() if until is None else until
        return max((n for s, n in self.counts.get(route, {}).items() if since <= s + 1 and s <= end), default=0)


def describe(spans: list[Span], limits: dict[str, float]) -> str:
    """`POST /v1/customers 24.1/s over 41 s (96 % of 25/s)`, one per route."""
    parts = []
    for s in spans:
        limit = limits.get(s.route, limits.get("", 0.0))
        share = f" ({s.rate / limit * 100:.0f} % of {limit:g}/s)" if limit else ""
        parts.append(f"{s.route} {s.rate:.1f}/s over {s.seconds} s{share}")
    return "; ".join(parts)


def ceiling(calls: dict[str, int], global_limit: float, endpoint_limit: float) -> float:
    """The most of `global_limit` a backlog of these calls per route can use when each route may take
    `endpoint_limit`: the busiest route takes calls / endpoint_limit seconds at best, the rest fit inside."""
    busiest = max((n for route, n in calls.items() if route != ALL), default=0)
    if not busiest:
        return 0.0
    total = sum(n for route, n in calls.items() if route != ALL)
    return min(1.0, total / (busiest / endpoint_limit) / global_limit)
