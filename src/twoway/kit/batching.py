"""Batching: what many callers submit at about the same moment goes out in one batch, and each caller is
answered with its own result.

A runner collects the queue. A batch goes when `size` items have queued, or `linger` seconds after the runner
found the first (with 0, on the next turn of the loop: whatever was submitted in the same moment). With
`max_in_flight`, a batch waits for a free slot, and meanwhile the queue grows toward `size`: a busy batcher
sends full batches. The engine's coalesced calls (`sync/coalesce.py`), Salesforce's composite calls
(`connectors/salesforce/batching.py`) and group commit (`kit/groupcommit.py`) are this core with their own
`flush`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")

# One result per item, in order. With `raise_errors`, a result that is an exception is its item's failure.
Flush = Callable[[list[T]], Awaitable[Sequence[Any]]]


class Batcher(Generic[T, R]):
    """`submit(item)` waits for the `flush` of the batch that holds it.

    If `flush` raises, every caller of that batch gets the exception. With `raise_errors`, a result that is
    an exception is raised to its own caller only. With `drop_cancelled`, items whose caller gave up before
    their batch went are left out of it.
    """

    def __init__(self, flush: Flush[T], *, size: int, linger: float | Callable[[], float] = 0.0,
                 max_in_flight: int | None = None, raise_errors: bool = False, drop_cancelled: bool = False,
                 task_name: str = "batcher") -> None:
        self.flush = flush
        # When a batch goes:
        self.size = size
        self.linger = linger
        self._slots = asyncio.Semaphore(max_in_flight) if max_in_flight is not None else None
        # How its callers are answered:
        self.raise_errors = raise_errors
        self.drop_cancelled = drop_cancelled
        self._task_name = task_name
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._full: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Batches handed to `flush` and not yet answered."""
        return len(self._flushes)

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wake()
        return await future

    async def submit_all(self, items: Iterable[T]) -> list[R]:
        """One result per item, in order; the items queue together, so they share batches."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for item in items:
            futures.append(loop.create_future())
            self._queue.append((item, futures[-1]))
        self._wake()
        return list(await asyncio.gather(*futures))

    async def close(self) -> None:
        """Wait until everything queued has been flushed and answered."""
        while self._queue or self._flushes:
            await asyncio.sleep(0.005)

    def _wake(self) -> None:
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name=self._task_name)
        elif len(self._queue) >= self.size and self._full is not None and not self._full.done():
            self._full.set_result(None)

    async def _run(self) -> None:
        """Hand the queue to `flush` a batch at a time; stops when it is empty (the next submit starts it)."""
        loop = asyncio.get_running_loop()
        while self._queue:
            linger = self.linger() if callable(self.linger) else self.linger
            if len(self._queue) < self.size and linger > 0:
                # Linger so concurrent callers can join; a full batch goes at once.
                self._full = loop.create_future()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full, linger)
                self._full = None
            if self._slots is not None:
                await self._slots.acquire()
            batch = self._queue[:self.size]
            del self._queue[:self.size]
            task = asyncio.create_task(self._flush(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            if self.drop_cancelled:
                batch = [(item, future) for item, future in batch if not future.cancelled()]
            if batch:
                await self._answer(batch)
        finally:
            if self._slots is not None:
                self._slots.release()

    async def _answer(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self.flush([item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if self.raise_errors and isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(cast(R, result))
