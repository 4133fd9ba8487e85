"""Engine, sessions and the unit of work. Services flush; only the edges commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
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


def make_engine(url: str, pool_size: int = 20) -> AsyncEngine:
    # No pre-ping: it costs a round trip per transaction. A connection broken by a server restart is
    # invalidated on its first error, and every caller (request, worker batch) is retried whole.
    return create_async_engine(url, pool_size=pool_size, max_overflow=10, pool_recycle=1800)


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
    """Serialize work on one record across processes until the transaction ends."""
    await session.execute(_LOCK, {"k": key})


def asyncpg_dsn(url: str) -> str:
    """The plain libpq-style URL asyncpg's own connect() understands."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)
