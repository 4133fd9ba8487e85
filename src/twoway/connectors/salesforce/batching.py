"""Filling composite calls: every call spends one from the daily allowance whatever it carries, so
records share calls of up to 200. A lone change goes at once (on the next turn of the loop, with
whatever was handed over in the same moment); during a burst (a call in flight, or one sent within
the last second) a partial call waits up to `linger` for more, so a backlog goes out in full calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from twoway.connectors.base import ConnectorError

Result = dict[str, Any] | ConnectorError
Send = Callable[[list[dict[str, Any]]], Awaitable[list[Result]]]


class Filler:
    def __init__(self, send: Send, *, size: int = 200, linger: float = 0.2, burst_window: float = 1.0) -> None:
        self.send = send
        self.size = size
        self.linger = linger
        self.burst_window = burst_window
        self.calls = 0
        self._pending: list[tuple[dict[str, Any], asyncio.Future[Result]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = 0
        self._last_flush = -1e9

    async def submit(self, records: list[dict[str, Any]]) -> list[Result]:
        """One result per record, in order. A full call goes at once; a partial one after `linger`."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Result]] = [loop.create_future() for _ in records]
        self._pending.extend(zip(records, futures, strict=True))
        while len(self._pending) >= self.size:
            self._flush()
        if self._pending and self._timer is None:
            bursting = self._in_flight > 0 or loop.time() - self._last_flush < self.burst_window
            self._timer = loop.call_later(self.linger if bursting else 0.0, self._flush_all)
        return list(await asyncio.gather(*futures))

    def _flush_all(self) -> None:
        self._timer = None
        while self._pending:
            self._flush()

    def _flush(self) -> None:
        batch, self._pending = self._pending[: self.size], self._pending[self.size:]
        self._last_flush = asyncio.get_running_loop().time()
        self.calls += 1
        self._in_flight += 1
        asyncio.ensure_future(self._run(batch))

    async def _run(self, batch: list[tuple[dict[str, Any], asyncio.Future[Result]]]) -> None:
        try:
            results = await self.send([record for record, _ in batch])
        except Exception as exc:  # send answers errors as values; anything else reaches every caller
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._in_flight -= 1
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
