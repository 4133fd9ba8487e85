"""Shared test helpers: running a worker in the test's event loop, reading the emulator's stats."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import twoway.models  # noqa: F401  (registers every kind, as the worker's entry point does)
from tests.conftest import emulator_call
from twoway.settings import Settings
from twoway.sync.worker import COMPONENTS, Worker


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, components: Sequence[str] = COMPONENTS) -> AsyncIterator[Worker]:
    worker = Worker(settings, components=components)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop.set()
        await asyncio.wait_for(task, 30)


def stripe_writes(base: str) -> int:
    return int(emulator_call(base, "/_emulator/stats")["writes"])


def set_faults(base: str, **faults: object) -> None:
    emulator_call(base, "/_emulator/faults", dict(faults))


@contextlib.asynccontextmanager
async def served_api(settings: Settings, port: int) -> AsyncIterator[str]:
    """The real app over real HTTP, so the emulator can deliver webhooks to it."""
    import uvicorn

    from twoway.api import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def register_webhook(stripe_client, port: int) -> str:  # type: ignore[no-untyped-def]
    endpoint = stripe_client.v1.webhook_endpoints.create(
        {"url": f"http://127.0.0.1:{port}/api/v1/webhooks/stripe", "enabled_events": ["*"]})
    return str(endpoint.secret)
