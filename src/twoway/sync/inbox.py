from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.sync.models import InboxEvent

# Hot-path statements, built once (building and cache-keying ORM statements per call costs more CPU).
_HAS_PENDING = text("""
    SELECT 1 FROM inbox WHERE system = :system AND kind = :kind AND external_id = :xid AND processed_at IS NULL
    LIMIT 1""")
_MARK = text("UPDATE inbox SET processed_at = now() WHERE id = ANY(:ids)")


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
        found = await self.session.execute(_HAS_PENDING, {"system": system, "kind": kind, "xid": external_id})
        return found.first() is not None

    async def mark_processed(self, events: list[InboxEvent]) -> None:
        if events:
            await self.session.execute(_MARK, {"ids": [e.id for e in events]})
