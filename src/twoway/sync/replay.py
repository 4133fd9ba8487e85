"""Dead letters: list them and send them back through the normal path."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.kit.outbox import enqueue_inbound, enqueue_outbound
from twoway.syncstate.models import SyncEvent
from twoway.syncstate.words import Direction


async def dead_letters(session: AsyncSession, limit: int = 100) -> Sequence[SyncEvent]:
    stmt = select(SyncEvent).where(SyncEvent.status == "dead").order_by(SyncEvent.id.desc()).limit(limit)
    return (await session.execute(stmt)).scalars().all()


async def replay(session: AsyncSession, failure_id: int) -> bool:
    row = await session.get(SyncEvent, failure_id, with_for_update=True)
    if row is None or row.status != "dead":
        return False
    row.status = "replayed"
    row.updated_at = func.now()  # type: ignore[assignment]
    if row.direction == Direction.OUTBOUND and row.internal_id is not None:
        await enqueue_outbound(session, row.kind, row.internal_id, reason="replay")
    elif row.external_id is not None:
        await enqueue_inbound(session, row.system, row.kind, row.external_id)
    return True


async def replay_all(session: AsyncSession) -> int:
    count = 0
    for row in await dead_letters(session, limit=10_000):
        count += await replay(session, row.id)
    return count
