"""Issue 12 with real processes: the API SIGKILLed in the middle of groups, and PostgreSQL stopped for 15 s."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from tests.conftest import API_KEY, ROOT, WEBHOOK_SECRET
from tests.integration.test_webhooks import event, sign
from twoway.kit.db import asyncpg_dsn
from twoway.kit.embedded import EmbeddedPostgres, free_port, wait_for_port
from twoway.settings import Settings


def start_api(database_url: str, settings: Settings, port: int, log: Path, **env: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ, "PYTHONPATH": str(ROOT / "src"), "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.require_kafka(), "STRIPE_SECRET_KEY": settings.stripe_key(),
        "STRIPE_API_BASE": settings.stripe_api_base or "", "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "TWOWAY_API_KEYS": API_KEY, "API_HOST": "127.0.0.1", "API_PORT": str(port), "LOG_LEVEL": "info", **env,
    }
    proc = subprocess.Popen([sys.executable, "-m", "twoway", "api"], env=environment, stdout=open(log, "ab"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
    wait_for_port(port, 60, proc)
    return proc


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


async def test_api_sigkilled_mid_group_loses_no_acknowledged_event_and_half_stores_none(settings, db, workdir) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    # A long linger keeps a group open (and one committing) at almost any instant of the kill.
    api = start_api(settings.require_database_url(), settings, port, workdir / "api-kill.log",
                    GROUP_COMMIT_MAX_WAIT_MS="20")
    prefix = f"evt_kill_{uuid.uuid4().hex[:6]}"
    answered: dict[str, int] = {}
    sent: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            async def sender(lane: int) -> None:
                for i in range(10_000):
                    event_id = f"{prefix}_{lane}_{i}"
                    body = json.dumps(event(event_id)).encode()
                    sent.append(event_id)
                    try:
                        r = await client.post("/api/v1/webhooks/stripe", content=body,
                                              headers={"Stripe-Signature": sign(body)})
                    except httpx.HTTPError:
                        return  # the process died under this request: unanswered
                    answered[event_id] = r.status_code

            lanes = [asyncio.create_task(sender(k)) for k in range(16)]
            while sum(1 for s in answered.values() if s == 200) < 300:
                await asyncio.sleep(0.01)
            kill(api)
            await asyncio.gather(*lanes)
    finally:
        kill(api)
    acknowledged = {e for e, s in answered.items() if s == 200}
    conn = await asyncpg.connect(asyncpg_dsn(settings.require_database_url()))
    try:
        inbox = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM inbox")}
        queued = {r["e"] for r in await conn.fetch("SELECT payload->>'event_id' AS e FROM outbox")}
    finally:
        await conn.close()
    assert acknowledged <= inbox  # every 200 is durable ...
    assert inbox == queued  # ... and nothing is half stored: an inbox row always has its outbox row
    assert len(sent) > len(acknowledged)  # some were in flight when the process died

    # The senders retry what was not acknowledged: each event is then stored exactly once.
    api = start_api(settings.require_database_url(), settings, port, workdir / "api-kill.log")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for event_id in sorted(set(sent) - acknowledged):
                body = json.dumps(event(event_id)).encode()
                r = await client.post("/api/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body)})
                assert r.status_code == 200
    finally:
        kill(api)
    conn = await asyncpg.connect(asyncpg_dsn(settings.require_database_url()))
    try:
        assert await conn.fetchval("SELECT count(*) FROM inbox") == len(set(sent))
        assert await conn.fetchval("SELECT count(*) FROM outbox") == len(set(sent))
    finally:
        await conn.close()


async def test_postgres_stopped_15s_under_writes_is_503_and_loses_nothing(settings, workdir) -> None:  # type: ignore[no-untyped-def]
    from twoway.kit.migrate import upgrade

    pg = EmbeddedPostgres(workdir / "pg-outage")
    url = await asyncio.to_thread(pg.start)
    await asyncio.to_thread(upgrade, url)
    port = free_port()
    log = workdir / "api-outage.log"
    api = start_api(url, settings, port, log)
    created: dict[str, int] = {}  # Idempotency-Key -> customer id, once acknowledged
    statuses: list[int] = []
    retry_after_missing = 0
    stop_at, outage = 3.0, 15.0
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                     headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            async def writer(n: int) -> None:
                nonlocal retry_after_missing
                key = f"outage-{n}"
                while True:  # a client that retries with the same key until it gets an answer
                    r = await client.post("/api/v1/customers", json={"name": f"O{n}", "email": f"o{n}@ex.io"},
                                          headers={"Idempotency-Key": key})
                    statuses.append(r.status_code)
                    if r.status_code == 201:
                        created[key] = r.json()["id"]
                        return
                    assert r.status_code == 503, r.text
                    if "Retry-After" not in r.headers:
                        retry_after_missing += 1
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))

            started = time.monotonic()
            tasks = []
            n = 0
            stopped = restarted = False
            while time.monotonic() - started < stop_at + outage + 4:  # 20 writes/s before, during and after
                tasks.append(asyncio.create_task(writer(n)))
                n += 1
                elapsed = time.monotonic() - started
                if not stopped and elapsed >= stop_at:
                    await asyncio.to_thread(pg.stop)
                    stopped = True
                if stopped and not restarted and elapsed >= stop_at + outage:
                    await asyncio.to_thread(pg.start)
                    restarted = True
                await asyncio.sleep(0.05)
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
    finally:
        kill(api)
    try:
        assert 503 in statuses and 500 not in statuses and retry_after_missing == 0
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            rows = {r["id"] for r in await conn.fetch("SELECT id FROM customers")}
            keys = await conn.fetchval("SELECT count(*) FROM idempotency_keys")
        finally:
            await conn.close()
        assert set(created.values()) <= rows  # every acknowledged write exists
        assert len(rows) == len(created) == n == keys  # and every key created exactly one customer
        lines = log.read_text().splitlines()
        assert not [line for line in lines if "Traceback" in line]
        outage_lines = [line for line in lines if "database" in line and "reachable" in line]
        assert 1 <= len(outage_lines) <= 6, lines[-20:]
    finally:
        pg.stop()


async def test_api_serves_from_several_processes(settings, db, workdir) -> None:  # type: ignore[no-untyped-def]
    import psutil

    port = free_port()
    api = start_api(settings.require_database_url(), settings, port, workdir / "api-workers.log", API_WORKERS="2")
    try:
        workers = [p for p in psutil.Process(api.pid).children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2  # uvicorn's supervisor and its two worker processes
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                     headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            body = json.dumps(event("evt_workers")).encode()
            answers = await asyncio.gather(
                *(client.post("/api/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body)})
                  for _ in range(4)),
                *(client.post("/api/v1/customers", json={"name": f"W{i}", "email": f"w{i}@ex.io"}) for i in range(20)))
    finally:
        kill(api)
    assert [r.status_code for r in answers] == [200] * 4 + [201] * 20
    assert sum(not r.json()["duplicate"] for r in answers[:4]) == 1
    assert len({r.json()["id"] for r in answers[4:]}) == 20
