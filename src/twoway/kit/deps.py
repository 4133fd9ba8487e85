"""Request-scoped dependencies. Routes commit explicitly, so data is durable before the 2xx is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.kit import idempotency


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        try:
            yield session
        finally:
            if session.in_transaction():
                await session.rollback()


Session = Annotated[AsyncSession, Depends(db_session)]
# Ids are positive BIGINTs; anything else is a 422 before it reaches the database.
RecordId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def idempotency_key(noun: str) -> Any:
    """The `Idempotency-Key` header of a route that creates a `noun`."""
    return Header(alias="Idempotency-Key", min_length=1, max_length=idempotency.KEY_MAX,
                  description="Makes a retry safe: a POST repeated with the same key (within 24 h) gets the first "
                              f"answer again instead of creating a second {noun}. Same key, other body: 400.")
