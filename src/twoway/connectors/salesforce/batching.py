"""Filling composite calls: every call spends one from the daily allowance whatever it carries, so
records share calls of up to 200. A lone change goes at once (on the next turn of the loop, with
whatever was handed over in the same moment); during a burst (a call in flight, or one sent within
the last second) a partial call waits up to `linger` for more, so a backlog goes out in full calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from twoway.connectors.base import ConnectorError
from twoway.kit.batching import Batcher

Result = dict[str, Any] | ConnectorError
Send = Callable[[list[dict[str, Any]]], Awaitable[list[Result]]]


class Filler:
    def __init__(self, send: Send, *, size: int = 200, linger: float = 0.2, burst_window: float = 1.0) -> None:
        self.send = send
        self.linger = linger
        self.burst_window = burst_window
        self._last_flush = -1e9
        # `send` answers errors as values (returned to their own record); anything it raises reaches every caller.
        self._calls: Batcher[dict[str, Any], Result] = Batcher(self._send, size=size, linger=self._linger,
                                                               task_name="salesforce-composite")

    async def submit(self, records: list[dict[str, Any]]) -> list[Result]:
        """One result per record, in order. A full call goes at once; a partial one after `linger`."""
        return await self._calls.submit_all(records)

    def _linger(self) -> float:
        loop = asyncio.get_running_loop()
        bursting = self._calls.in_flight > 0 or loop.time() - self._last_flush < self.burst_window
        return self.linger if bursting else 0.0

    async def _send(self, records: list[dict[str, Any]]) -> list[Result]:
        self._last_flush = asyncio.get_running_loop().time()
        return await self.send(records)
