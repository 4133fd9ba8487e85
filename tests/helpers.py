"""Shared test helpers: running a worker in the test's event loop, reading the emulator's stats."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence

import twoway.models  # noqa: F401  (registers every kind, as the worker's entry point does)
from tests.conftest import ROOT, emulator_call
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


async def settled(settings: Settings, db, emulator: str) -> bool:  # type: ignore[no-untyped-def]
    """Nothing in flight anywhere: every change published, every message consumed and committed, every
    stored event handled, no retry owed, no webhook on its way. A snapshot taken now is a fixed point;
    one taken after a pause is only a guess (and a slow machine makes it a wrong one)."""
    from sqlalchemy import text

    from twoway.ops.status import read_lag

    async with db() as s:
        busy = (await s.execute(text("""
            SELECT (SELECT count(*) FROM outbox WHERE sent_at IS NULL)
                 + (SELECT count(*) FROM inbox WHERE processed_at IS NULL)
                 + (SELECT count(*) FROM sync_events WHERE status IN ('retry', 'requeued', 'started'))"""))).scalar()
    if busy or emulator_call(emulator, "/_emulator/stats")["webhooks"]["pending"]:
        return False
    return all(r.behind == 0 for r in await read_lag(settings))


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


def cli_env(settings: Settings) -> dict[str, str]:
    """What a `twoway` command run as its own process needs to reach this test's system (wide, no colour)."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "250", "NO_COLOR": "1",
            "LOG_LEVEL": "warning", "DATABASE_URL": settings.require_database_url(),
            "KAFKA_BOOTSTRAP_SERVERS": settings.require_kafka(), "KAFKA_GROUP_PREFIX": settings.kafka_group_prefix,
            "STRIPE_SECRET_KEY": settings.stripe_key(), "STRIPE_API_BASE": settings.stripe_api_base or ""}


def run_cli(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`twoway <args>` as a process of its own (as an operator runs it), its output captured."""
    return subprocess.run([sys.executable, "-m", "twoway", *args], env=cli_env(settings), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def run_bench(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """subprocess.run, except that a run which overstays gets SIGTERM first: bench.chaos (or soak) then stops its
    cluster, where a SIGKILL would leave its workers, emulators, broker and database loading the rest
    of the suite."""
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    return subprocess.CompletedProcess(command, proc.returncode, out, err)
