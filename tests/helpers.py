"""Shared test helpers: running a worker in the test's event loop, reading the emulator's stats."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from twoway.settings import Settings
from twoway.sync.worker import COMPONENTS, Worker
from tests.conftest import emulator_call


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
