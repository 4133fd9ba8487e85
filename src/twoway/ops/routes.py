"""Sync operations over HTTP: status, dead letters and their replay. (A record's own sync state is served by
its kind's routes, through `twoway.syncstate.view`.)"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel

from twoway.kit.deps import RecordId, Session
from twoway.ops.status import full_status
from twoway.sync import replay as replays

router = APIRouter(prefix="/api/v1", tags=["sync"])


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
async def replay_failure(failure_id: RecordId, session: Session) -> dict[str, Any]:
    if not await replays.replay(session, failure_id):
        raise HTTPException(404, f"no dead letter {failure_id}")
    await session.commit()
    return {"replayed": failure_id}
