"""The /metrics endpoint: refreshes the database-backed gauges, then renders every series."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from twoway.ops.status import refresh_gauges

router = APIRouter(tags=["ops"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    try:
        await refresh_gauges(request.app.state.sessions, request.app.state.settings,
                             getattr(request.app.state, "lag_reader", None))
    except Exception:
        pass  # a scrape must not fail because one gauge could not be read
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
