"""Coalescing: calls made in the same moment by many records become one bulk call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """`submit(x)` waits for `bulk([x, ...])`, run once for everything submitted before it starts.

    With `raise_errors`, a result that is an exception is raised to its own submitter only.
    """

    def __init__(self, bulk: Callable[[list[T]], Awaitable[list[R]]], *, raise_errors: bool = False,
                 limit: int = 200) -> None:
        self.bulk = bulk
        self.raise_errors = raise_errors
        self.limit = limit
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._scheduled = False

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)
        result = await future
        if self.raise_errors and isinstance(result, BaseException):
            raise result
        return result

    def _start(self) -> None:
        self._scheduled = False
        while self._queue:
            batch, self._queue = self._queue[: self.limit], self._queue[self.limit:]
            asyncio.ensure_future(self._run(batch))

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self.bulk([item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


__all__ = ["Any", "Coalescer"]
