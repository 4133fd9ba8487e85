from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.sync.models import InboxEvent


class InboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _unprocessed(self, system: str, kind: str, external_id: str) -> list[object]:
        return [InboxEvent.system == system, InboxEvent.kind == kind, InboxEvent.external_id == external_id,
                InboxEvent.processed_at.is_(None)]

    async def pending(self, system: str, kind: str, external_id: str) -> list[InboxEvent]:
        """Unprocessed events of one external object, oldest first."""
        stmt = (select(InboxEvent).where(*self._unprocessed(system, kind, external_id))  # type: ignore[arg-type]
                .order_by(InboxEvent.event_created, InboxEvent.id))
        return list((await self.session.execute(stmt)).scalars().all())

    async def has_pending(self, system: str, kind: str, external_id: str) -> bool:
        stmt = select(InboxEvent.id).where(*self._unprocessed(system, kind, external_id)).limit(1)  # type: ignore[arg-type]
        return (await self.session.execute(stmt)).first() is not None

    async def mark_processed(self, events: list[InboxEvent]) -> None:
        if events:
            await self.session.execute(update(InboxEvent).where(InboxEvent.id.in_([e.id for e in events]))
                                       .values(processed_at=func.now()))
