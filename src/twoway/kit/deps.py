"""Request-scoped dependencies. Routes commit explicitly, so data is durable before the 2xx is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        try:
            yield session
        finally:
            if session.in_transaction():
                await session.rollback()
