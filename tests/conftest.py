"""Real parts for the tests: an embedded PostgreSQL, the Tansu broker and the Stripe emulator.

They start once per test session; each test gets empty tables and a reset emulator.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import stripe
from sqlalchemy import text

from twoway.kit.embedded import EmbeddedBroker, EmbeddedPostgres, free_port, wait_for_port
from twoway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-api-key"
WEBHOOK_SECRET = "whsec_test_secret"
STRIPE_KEY = "sk_test_twoway"
TABLES = ("invoice_lines, invoices, customers, outbox, links, inbox, sync_events, cursors, webhook_rejections, "
          "connector_state, rate_limits, webhook_rejection_counts, idempotency_keys")


SHARED_NODE_ID = pytest.StashKey[bool]()

# Tests that load the whole machine (clusters of processes, a minute of faults) run one after another on
# one pytest-xdist worker (`make test` runs two); the other tests spread over both. They are marked
# `heavy` where they are written, so a renamed test keeps its place; tests/e2e is heavy as a whole.
E2E = ROOT / "tests" / "e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("heavy") or E2E in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("heavy"))
    if hasattr(config, "workerinput"):
        # xdist's loadgroup schedules by node id: of several tests sharing one it ran one and dropped the
        # others without a word (schemathesis's cases: 1 of 19). `make test` runs those in a run of their own.
        counts = Counter(item.nodeid for item in items)
        for item in items:
            if counts[item.nodeid] > 1:
                item.stash[SHARED_NODE_ID] = True


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.stash.get(SHARED_NODE_ID, False):
        pytest.fail(f"{item.nodeid} shares its node id with other tests: run it without -n (see Makefile)")


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="twoway-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url(workdir: Path) -> Iterator[str]:
    pg = EmbeddedPostgres(workdir / "pg")
    url = pg.start()
    from twoway.kit.migrate import upgrade

    upgrade(url)
    yield url
    pg.stop()


@pytest.fixture(scope="session")
def broker(workdir: Path) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(log_path=workdir / "tansu.log")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
async def kafka(broker: EmbeddedBroker) -> str:
    from twoway.kit.kafka import ensure_topics

    await ensure_topics(broker.bootstrap, 4)
    return broker.bootstrap


def start_emulator(port: int, *extra: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "twoway.emulators.stripe", "--port", str(port), *extra],
                            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port(port, 30, proc)
    return proc


@pytest.fixture(scope="session")
def emulator_base(workdir: Path) -> Iterator[str]:
    port = free_port()
    proc = start_emulator(port, log=workdir / "emulator.log")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def emulator_call(base: str, path: str, body: dict | None = None) -> dict:
    import json

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
    return json.loads(raw) if raw else {}


@pytest.fixture
def emulator(emulator_base: str) -> str:
    emulator_call(emulator_base, "/_emulator/reset", {"endpoints": True})
    return emulator_base


@pytest.fixture
def stripe_client(emulator: str) -> stripe.StripeClient:
    return stripe.StripeClient(STRIPE_KEY, base_addresses={"api": emulator}, max_network_retries=0)


async def recreate_topics(bootstrap: str) -> None:
    """Empty topics for each test: no test reads another's messages (the dev broker deletes at once)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from twoway.kit.kafka import TOPICS, ensure_topics

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(TOPICS))
    finally:
        await admin.close()
    await ensure_topics(bootstrap, 4)


@pytest.fixture
async def settings(pg_url: str, kafka: str, emulator: str) -> Settings:
    await recreate_topics(kafka)
    return Settings(
        # A group of its own for each test: no test inherits another's members or offsets.
        kafka_group_prefix=f"twoway-test-{uuid.uuid4().hex[:8]}",
        database_url=pg_url, kafka_bootstrap_servers=kafka, stripe_secret_key=STRIPE_KEY,
        stripe_api_base=emulator, stripe_webhook_secret=WEBHOOK_SECRET, twoway_api_keys=API_KEY,
        # Tansu holds a group's first join for half the session (3 s at 6 s, 2 s at 4 s): each worker a test
        # starts pays it. Four heartbeats (1 s) still fit in a session.
        kafka_enable_idempotence=False, kafka_session_timeout_ms=4000, kafka_rebalance_timeout_ms=4000,
        sweeper_grace_seconds=3, sweeper_interval_seconds=1, sync_backoff_base_seconds=0.2,
        sync_backoff_max_seconds=2, stripe_rate_limit_per_second=500, poll_interval_seconds=0.5,
        stripe_endpoint_rate_limit_per_second=500,  # the emulator limits no endpoint unless a test says so
        # A record that met 5xx retries on a delay growing to this (30 s in production): under injected
        # error rates the last unlucky record otherwise sets a test's length (a test took 57-131 s).
        sync_outage_retry_max_seconds=5,
        log_level=os.environ.get("TWOWAY_TEST_LOG_LEVEL", "info"),
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[object]:
    """An empty schema for each test (ids keep growing, so old broker messages point nowhere)."""
    from twoway.kit.db import make_engine, make_sessionmaker

    engine = make_engine(settings.require_database_url(), pool_size=5)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {TABLES}"))
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def app(settings: Settings, db: object) -> AsyncIterator[object]:
    from twoway.api import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://twoway.test",
                                 headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        yield c


async def wait_until(predicate, timeout: float = 20.0, step: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll an async or sync predicate until it returns something truthy."""
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(step)
    return last
