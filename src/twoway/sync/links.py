from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.syncstate.models import Link


class LinkRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def for_record(self, kind: str, internal_id: int, system: str) -> Link | None:
        stmt = select(Link).where(Link.kind == kind, Link.internal_id == internal_id, Link.system == system)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def for_external(self, system: str, kind: str, external_id: str) -> Link | None:
        stmt = select(Link).where(Link.system == system, Link.kind == kind, Link.external_id == external_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def add(self, link: Link) -> Link:
        self.session.add(link)
        await self.session.flush()
        return link
