"""The HTTP application: customers, webhooks, sync operations, dashboard, health and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

import twoway.models  # noqa: F401  (registers every kind of record: the kit never reaches up for them)
from twoway.connectors import registry
from twoway.customers.routes import fast_create
from twoway.customers.routes import router as customers_router
from twoway.customers.writes import customer_writer
from twoway.invoices.routes import router as invoices_router
from twoway.kit import errors
from twoway.kit.auth import require_api_key
from twoway.kit.db import make_engine, make_pool, make_sessionmaker
from twoway.kit.hotpath import HotPaths
from twoway.kit.kafka import broker_reachable
from twoway.kit.limits import BodyLimitMiddleware
from twoway.kit.metrics import sample_tasks
from twoway.ops.lag import LagReader
from twoway.settings import Settings
from twoway.webhooks.ingest import inbox_writer
from twoway.webhooks.rejections import RejectionLog
from twoway.webhooks.routes import PREFIX as WEBHOOKS
from twoway.webhooks.routes import fast_receive


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.require_database_url())
        app.state.engine = engine
        app.state.sessions = make_sessionmaker(engine)
        pool = await make_pool(settings.require_database_url())
        app.state.pool = pool
        batch, wait = settings.group_commit_max_batch, settings.group_commit_max_wait_ms / 1000
        inflight = settings.group_commit_max_inflight
        app.state.inbox_writer = inbox_writer(pool, max_batch=batch, max_wait=wait, max_inflight=inflight)
        app.state.customer_writer = customer_writer(pool, max_batch=batch, max_wait=wait, max_inflight=inflight)
        app.state.webhook_rejections = RejectionLog(
            pool, sample_max=settings.webhook_rejection_sample_max,
            samples_per_second=settings.webhook_rejection_samples_per_second,
            delay=settings.webhook_rejection_delay_ms / 1000)
        # One broker connection for lag, kept across /metrics scrapes and status reads.
        app.state.lag_reader = LagReader()
        stop = asyncio.Event()
        chores = [asyncio.create_task(app.state.webhook_rejections.run(stop)),
                  asyncio.create_task(sample_tasks(stop))]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*chores, return_exceptions=True)
            await app.state.inbox_writer.close()
            await app.state.customer_writer.close()
            await app.state.lag_reader.close()
            await pool.close()
            await engine.dispose()

    # No OpenTelemetry here (metrics are Prometheus): FastAPI's check for it cost ~5 % of a request.
    app = FastAPI(title="twoway", version="0.1.0", lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.settings = settings
    app.state.api_keys = settings.api_keys()
    app.state.webhook_connectors = {name: registry.build(name, settings) for name in registry.enabled_systems(settings)}
    app.add_middleware(HotPaths, routes={("POST", "/api/v1/customers"): fast_create,
                                         ("POST", WEBHOOKS): fast_receive})
    errors.install(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)

    protected = [Depends(require_api_key)]
    app.include_router(customers_router, dependencies=protected,
                       responses=errors.documented(400, 401, 404, 409, 413, 422, 503))
    app.include_router(invoices_router, dependencies=protected,
                       responses=errors.documented(400, 401, 404, 413, 422))
    _include_optional(app, protected)

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"])
    async def ready(request: Request) -> Any:
        checks = {"database": await _db_ok(request), "broker": await broker_reachable(settings.require_kafka())}
        status = 200 if all(checks.values()) else 503
        return JSONResponse({"ready": status == 200, "checks": checks}, status_code=status)

    return app


def create_app_from_env() -> FastAPI:
    """For `twoway api --workers N`: each worker process builds its app from the environment."""
    from twoway.logs import configure

    settings = Settings()
    configure(settings.log_level, settings.log_json)
    return create_app(settings)


def _include_optional(app: FastAPI, protected: list[Any]) -> None:
    """Routers of later features; each brings its own prefix."""
    from twoway.dashboard.routes import router as dashboard_router
    from twoway.ops.metrics import router as metrics_router
    from twoway.ops.routes import router as ops_router
    from twoway.webhooks.routes import router as webhooks_router

    app.include_router(webhooks_router, responses=errors.documented(400, 404, 413, 422, 503))
    app.include_router(ops_router, dependencies=protected, responses=errors.documented(401, 404, 413, 422))
    app.include_router(metrics_router)
    app.include_router(dashboard_router)


async def _db_ok(request: Request) -> bool:
    try:
        async with request.app.state.sessions() as session:
            await session.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
