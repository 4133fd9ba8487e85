"""Engine, sessions and the unit of work. Services flush; only the edges commit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
from sqlalchemy import BigInteger, DateTime, MetaData, func, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow_column(**kw: object) -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), **kw)  # type: ignore[arg-type]


BigId = BigInteger().with_variant(BigInteger(), "postgresql")


def make_engine(url: str, pool_size: int = 20, *, max_overflow: int = 10,
                application_name: str | None = None) -> AsyncEngine:
    # No pre-ping: it costs a round trip per transaction. A connection broken by a server restart is
    # invalidated on its first error, and every caller (request, worker batch) is retried whole.
    connect_args = {"server_settings": {"application_name": application_name}} if application_name else {}
    return create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_recycle=1800,
                               connect_args=connect_args)


async def make_pool(url: str, max_size: int = 10) -> asyncpg.Pool:
    """A plain asyncpg pool for the hot write paths (no ORM). Connects lazily, so it starts without a
    database; a connection broken by a restart is replaced on its next use."""
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=0, max_size=max_size, command_timeout=15,
                                     max_inactive_connection_lifetime=300)
    assert pool is not None
    return pool


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def unit_of_work(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """Commit when the block ends normally, roll back on any exception."""
    async with sessions() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))")


async def advisory_lock(session: AsyncSession, key: str) -> None:
    """Serialize work on one record across processes until the transaction ends.

    The same lock space as `RecordLocks`: a transaction that takes it waits for a worker holding the
    record, and a worker finds a record held this way busy (and defers it).
    """
    await session.execute(_LOCK, {"k": key})


_TRY_MANY = "SELECT k FROM unnest($1::text[]) AS k WHERE pg_try_advisory_lock(hashtextextended(k, 0))"
_UNLOCK_MANY = "SELECT pg_advisory_unlock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k"


class RecordLocks:
    """Per-record locks for a whole worker on ONE dedicated connection, taken and released in bulk.

    Session-level advisory locks: held across remote calls without holding a transaction or a pooled
    connection, and released by PostgreSQL if the worker dies (its connection closes). A key held
    elsewhere is simply not granted: the caller defers that record. Within the process a key is held
    once (session locks are re-entrant, so the in-process set does the excluding here).
    """

    def __init__(self, url: str, application_name: str = "twoway-locks") -> None:
        self.url = url
        self.application_name = application_name
        self.held: set[str] = set()
        self._conn: asyncpg.Connection | None = None
        self._mutex = asyncio.Lock()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(asyncpg_dsn(self.url),
                                               server_settings={"application_name": self.application_name})
        return self._conn

    async def try_lock(self, keys: Iterable[str]) -> set[str]:
        """The keys granted, of those asked (one round trip)."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self.held]
        if not wanted:
            return set()
        self.held.update(wanted)  # reserve in-process while we ask
        try:
            async with self._mutex:
                conn = await self._connection()
                rows = await conn.fetch(_TRY_MANY, wanted)
        except BaseException:
            self.held.difference_update(wanted)
            await self._drop()
            raise
        got = {r[0] for r in rows}
        self.held.difference_update(set(wanted) - got)
        return got

    async def unlock(self, keys: Iterable[str]) -> None:
        mine = [k for k in dict.fromkeys(keys) if k in self.held]
        if not mine:
            return
        self.held.difference_update(mine)
        try:
            async with self._mutex:
                conn = await self._connection()
                await conn.fetch(_UNLOCK_MANY, mine)
        except Exception:
            await self._drop()  # a new connection holds nothing: every lock of the old one is gone

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        await self._drop()
        self.held.clear()


def asyncpg_dsn(url: str) -> str:
    """The plain libpq-style URL asyncpg's own connect() understands."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)
