"""Group commit: concurrent writers share one transaction, one COMMIT and one fsync.

Each caller submits an item and waits; a flusher takes what has queued (up to `max_batch`, or
whatever arrived within `max_wait` of the first) and writes it all in one transaction. Every
caller learns the outcome of the commit that held its item, and only then answers its client:
- the commit succeeded: its own result;
- it failed before COMMIT was sent: `Unavailable` (nothing of the group was applied);
- it failed while COMMIT was in flight: `OutcomeUnknown` (applied or not; a retry must be safe).
A data error in one item must not fail its neighbours: the group is then retried one item at a time.
The queueing, lingering and answering are `kit/batching.py`'s; this module is the transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

from twoway.kit.batching import Batcher
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


class GroupCommit(Batcher[T, R]):
    """Batches `submit`ted items into shared transactions. `write` returns one result per item, in order."""

    def __init__(self, pool: asyncpg.Pool, write: Write[T, R], *, name: str, max_batch: int = 256,
                 max_wait: float = 0.002, max_inflight: int = 2, one_statement: bool = False) -> None:
        # A caller that gave up before its group went is left out of it; a result that is an exception is
        # one item's own failure (see `_write_group`).
        super().__init__(self._write_group, size=max_batch, linger=max_wait, max_in_flight=max_inflight,
                         raise_errors=True, drop_cancelled=True, task_name=f"group-commit:{name}")
        self.pool = pool
        self.write = write
        # `write` runs exactly one statement: then it runs without an explicit transaction.
        self.one_statement = one_statement
        self.name = name
        # A seam for fault tests: called with the group's connection and size before COMMIT is sent.
        self.before_commit: Callable[[asyncpg.Connection, int], Awaitable[None]] | None = None
        self.groups = 0
        self.items = 0

    async def _write_group(self, items: list[T]) -> Sequence[R | Exception]:
        try:
            return await self._commit(items)
        except Exception as exc:
            if len(items) == 1 or isinstance(exc, Unavailable | OutcomeUnknown):
                raise  # the group's own failure: every caller of it gets it
            # One bad item (a data error) must not fail the others: each gets its own transaction.
            log.warning("group failed; retrying its items one by one", group=self.name, size=len(items),
                        error=repr(exc)[:300])
            return await asyncio.gather(*(self._single(item) for item in items))

    async def _single(self, item: T) -> R | Exception:
        try:
            return (await self._commit([item]))[0]
        except Exception as exc:
            return exc

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

