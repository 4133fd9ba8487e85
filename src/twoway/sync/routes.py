"""Sync operations over HTTP: status, dead letters and their replay, and one customer's sync state."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.customers.repository import CustomerRepository
from twoway.kit.deps import db_session
from twoway.ops.status import full_status
from twoway.sync import replay as replays
from twoway.sync.models import Link, SyncEvent

router = APIRouter(prefix="/api/v1", tags=["sync"])
Session = Annotated[AsyncSession, Depends(db_session)]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


class FailureOut(BaseModel):
    id: int
    kind: str
    internal_id: int | None
    external_id: str | None
    system: str
    direction: str
    operation: str
    status: str
    attempts: int
    error: str | None
    created_at: datetime

    model_config = {"from_attributes": True}


@router.get("/sync/status")
async def sync_status(request: Request) -> dict[str, Any]:
    return await full_status(request.app.state.sessions, request.app.state.settings,
                             getattr(request.app.state, "lag_reader", None))


@router.get("/sync/failures", response_model=list[FailureOut])
async def list_failures(session: Session, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[FailureOut]:
    return [FailureOut.model_validate(f) for f in await replays.dead_letters(session, limit)]


@router.post("/sync/failures/{failure_id}/replay")
async def replay_failure(failure_id: Id, session: Session) -> dict[str, Any]:
    if not await replays.replay(session, failure_id):
        raise HTTPException(404, f"no dead letter {failure_id}")
    await session.commit()
    return {"replayed": failure_id}


@router.get("/customers/{customer_id}/sync")
async def customer_sync(customer_id: Id, session: Session) -> dict[str, Any]:
    if await CustomerRepository(session).get(customer_id) is None:
        raise HTTPException(404, f"customer {customer_id} not found")
    links = (await session.execute(select(Link).where(Link.kind == "customer",
                                                      Link.internal_id == customer_id))).scalars().all()
    events = (await session.execute(
        select(SyncEvent).where(SyncEvent.kind == "customer", SyncEvent.internal_id == customer_id)
        .order_by(SyncEvent.id.desc()).limit(50))).scalars().all()
    systems: dict[str, Any] = {}
    for link in links:
        systems[link.system] = {"external_id": link.external_id, "last_pushed_version": link.last_pushed_version,
                                "last_synced_at": link.last_synced_at, "state": "synced", "last_error": None,
                                "last_attempt_at": None}
    for event in reversed(events):
        entry = systems.setdefault(event.system, {"external_id": None, "state": "pending", "last_error": None})
        entry["last_attempt_at"] = event.created_at
        if event.status in ("retry", "dead"):
            entry["state"] = "retrying" if event.status == "retry" else "dead"
            entry["last_error"] = event.error
        elif event.status == "ok":
            entry["state"] = "synced"
    return {"customer_id": customer_id, "systems": systems,
            "events": [FailureOut.model_validate(e).model_dump() for e in events[:20]]}
