"""Group commit: concurrent writers share one transaction, one COMMIT and one fsync.

Each caller submits an item and waits; a flusher takes what has queued (up to `max_batch`, or
whatever arrived within `max_wait` of the first) and writes it all in one transaction. Every
caller learns the outcome of the commit that held its item, and only then answers its client:
- the commit succeeded: its own result;
- it failed before COMMIT was sent: `Unavailable` (nothing of the group was applied);
- it failed while COMMIT was in flight: `OutcomeUnknown` (applied or not; a retry must be safe).
A data error in one item must not fail its neighbours: the group is then retried one item at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import asyncpg

from twoway.kit.outage import is_connection_error
from twoway.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")

Write = Callable[[asyncpg.Connection, Sequence[T]], Awaitable[Sequence[R]]]


class Unavailable(Exception):
    """The database could not be reached or dropped the connection before COMMIT: nothing was applied."""


class OutcomeUnknown(Exception):
    """The connection failed while COMMIT was in flight: the write may or may not have been applied."""


class GroupCommit(Generic[T, R]):
    """Batches `submit`ted items into shared transactions. `write` returns one result per item, in order."""

    def __init__(self, pool: asyncpg.Pool, write: Write[T, R], *, name: str, max_batch: int = 256,
                 max_wait: float = 0.002, max_inflight: int = 2, one_statement: bool = False) -> None:
        self.pool = pool
        self.write = write
        # `write` runs exactly one statement: then it runs without an explicit transaction.
        self.one_statement = one_statement
        self.name = name
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._slots = asyncio.Semaphore(max_inflight)
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._wakeup: asyncio.Future[None] | None = None
        self._full: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        # A seam for fault tests: called with the group's connection and size before COMMIT is sent.
        self.before_commit: Callable[[asyncpg.Connection, int], Awaitable[None]] | None = None
        self.groups = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name=f"group-commit:{self.name}")
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        if len(self._queue) >= self.max_batch and self._full is not None and not self._full.done():
            self._full.set_result(None)
        return await future

    async def close(self) -> None:
        """Finish what is queued and in flight, then stop."""
        while self._queue or self._flushes:
            await asyncio.sleep(0.005)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
            if len(self._queue) < self.max_batch and self.max_wait > 0:
                # Linger so concurrent requests can join; a full batch goes at once.
                self._full = loop.create_future()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full, self.max_wait)
                self._full = None
            await self._slots.acquire()
            batch = self._queue[:self.max_batch]
            del self._queue[:self.max_batch]
            task = asyncio.create_task(self._flush(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            live = [(item, future) for item, future in batch if not future.cancelled()]
            if not live:
                return
            try:
                results = await self._commit([item for item, _ in live])
            except (Unavailable, OutcomeUnknown) as exc:
                _fail(live, exc)
                return
            except Exception as exc:
                if len(live) == 1:
                    _fail(live, exc)
                    return
                # One bad item (a data error) must not fail the others: each gets its own transaction.
                log.warning("group failed; retrying its items one by one", group=self.name, size=len(live),
                            error=repr(exc)[:300])
                await asyncio.gather(*(self._single(item, future) for item, future in live))
                return
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._slots.release()

    async def _single(self, item: T, future: asyncio.Future[R]) -> None:
        try:
            result = (await self._commit([item]))[0]
        except Exception as exc:
            _fail([(item, future)], exc)
        else:
            if not future.done():
                future.set_result(result)

    async def _commit(self, items: list[T]) -> Sequence[R]:
        try:
            conn = await self.pool.acquire()
        except Exception as exc:
            if is_connection_error(exc):
                raise Unavailable(f"database unreachable: {type(exc).__name__}") from exc
            raise
        try:
            if self.one_statement and self.before_commit is None:
                return await self._autocommit(conn, items)
            return await self._in_transaction(conn, items)
        finally:
            with contextlib.suppress(Exception):
                await self.pool.release(conn)

    async def _autocommit(self, conn: asyncpg.Connection, items: list[T]) -> Sequence[R]:
        """A `write` that is one statement is its own transaction: no BEGIN and COMMIT round trips."""
        try:
            results = await self.write(conn, items)
        except Exception as exc:
            if is_connection_error(exc):  # the statement may have committed before the connection went
                raise OutcomeUnknown(f"database connection failed during the write: {type(exc).__name__}") from exc
            raise
        self.groups += 1
        self.items += len(items)
        return results

    async def _in_transaction(self, conn: asyncpg.Connection, items: list[T]) -> Sequence[R]:
        transaction = conn.transaction()
        try:
            await transaction.start()
            results = await self.write(conn, items)
            if self.before_commit is not None:
                await self.before_commit(conn, len(items))
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await transaction.rollback()
            if isinstance(exc, Exception) and is_connection_error(exc):
                raise Unavailable(f"database connection failed before commit: {type(exc).__name__}") from exc
            raise
        try:
            await transaction.commit()
        except Exception as exc:
            # The server may have made it durable before the connection died: nobody can tell from here.
            raise OutcomeUnknown(f"database connection failed during commit: {type(exc).__name__}") from exc
        self.groups += 1
        self.items += len(items)
        return results


def _fail(batch: list[tuple[Any, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
