"""`twoway status`: one readable row per connector and direction; `--json` for scripts; `--watch` refreshes."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import httpx
from sqlalchemy import text

from tests.conftest import ROOT, wait_until
from tests.helpers import cli_env, run_cli, running_worker
from twoway.kit.db import unit_of_work
from twoway.settings import Settings
from twoway.sync.breaker import Breaker, save_state


async def _synced_customer(client: httpx.AsyncClient, settings: Settings, db) -> None:  # type: ignore[no-untyped-def]
    await client.post("/api/v1/customers", json={"name": "Stan Status", "email": "stan@example.com"})

    async def linked() -> bool:
        async with db() as s:
            return bool((await s.execute(text("SELECT count(*) FROM links"))).scalar())

    async with running_worker(settings):
        assert await wait_until(linked, timeout=30)


async def test_one_row_per_connector_and_direction(client: httpx.AsyncClient, settings: Settings, db) -> None:  # type: ignore[no-untyped-def]
    await _synced_customer(client, settings, db)
    now = [0.0]
    breaker = Breaker("stripe", failure_threshold=1, clock=lambda: now[0])
    now[0] += breaker.window_seconds  # closed a whole window: it judges
    breaker.record_failure()  # one outage error opens it
    async with unit_of_work(db) as session:
        await save_state(session, "stripe", breaker)

    result = run_cli(settings, "status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    # The keys scripts already read are still there, with their old shapes.
    assert {"outbox_backlog", "inbox_backlog", "customers", "links", "sync_states", "dead_letters",
            "last_success", "consumer_lag"} <= set(data)
    assert data["customers"] == {"live": 1, "total": 1} and data["links"] == {"stripe": 1}
    rows = {(r["system"], r["direction"]): r for r in data["connectors"]}
    assert set(rows) == {("stripe", "outbound"), ("stripe", "inbound")}
    out = rows[("stripe", "outbound")]
    assert out["breaker"] == "open" and out["dead_letters"] == 0 and isinstance(out["consumer_lag"], int)
    assert out["last_success"] and 0 <= out["last_success_age_seconds"] < 120

    table = run_cli(settings, "status")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    outbound = next(line for line in lines if "stripe" in line and "outbound" in line)
    inbound = next(line for line in lines if "stripe" in line and "inbound" in line)
    assert "open" in outbound and "s ago" in outbound
    assert "never" in inbound  # nothing came in from Stripe yet
    assert "{" not in table.stdout  # no raw JSON in the cells any more


async def test_breaker_column_is_a_dash_without_state(client: httpx.AsyncClient, settings: Settings, db) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(run_cli(settings, "status", "--json").stdout)
    assert [r["breaker"] for r in data["connectors"]] == [None, None]
    row = next(line for line in run_cli(settings, "status").stdout.splitlines() if "outbound" in line)
    assert " - " in row


WATCHED = {"customers", "invoices", "invoice_lines", "links", "inbox", "outbox", "sync_events", "idempotency_keys"}


async def test_tables_show_size_rows_oldest_and_window(app, client: httpx.AsyncClient, settings: Settings, db) -> None:  # type: ignore[no-untyped-def]
    await _synced_customer(client, settings, db)
    async with unit_of_work(db) as session:
        # An event handled two days ago, its payload still kept (as if retention had not run yet).
        await session.execute(text("""
            INSERT INTO inbox (system, event_id, event_type, kind, external_id, source, payload, processed_at)
            VALUES ('stripe', 'evt_old', 'customer.updated', 'customer', 'cus_old', 'webhook', '{"id": "cus_old"}',
                    now() - interval '2 days')"""))
    async with db() as session:
        await session.execute(text("ANALYZE customers"))

    data = json.loads(run_cli(settings, "status", "--json").stdout)
    assert "connectors" in data and "dead_letters" in data  # beside the keys scripts read
    tables = data["tables"]
    assert set(tables) >= WATCHED
    assert all(t["bytes"] > 0 and isinstance(t["rows_estimate"], int) for t in tables.values())
    assert tables["customers"]["rows_estimate"] == 1  # the planner's estimate, as of the ANALYZE
    customers = tables["customers"]
    assert customers["retention"] is None and customers["oldest"]["column"] == "created_at"
    assert 0 <= customers["oldest"]["age_seconds"] < 120
    inbox = tables["inbox"]
    assert inbox["oldest"]["column"] == "processed_at" and 2 * 86400 <= inbox["oldest"]["age_seconds"] < 2 * 86400 + 120
    assert inbox["retention"] == {"seconds": 31 * 86400, "setting": "INBOX_DEDUP_RETENTION_DAYS"}
    assert inbox["payloads"]["oldest"]["age_seconds"] >= 2 * 86400
    assert inbox["payloads"]["retention"] == {"seconds": 3600, "setting": "INBOX_PAYLOAD_RETENTION_HOURS"}
    assert tables["sync_events"]["oldest"]["at"] and tables["links"]["oldest"]["at"]
    assert tables["idempotency_keys"]["oldest"]["at"] is None  # no request carried a key
    assert tables["outbox"]["retention"]["seconds"] == 3600

    lines = run_cli(settings, "status").stdout.splitlines()
    rows = {line.split("│")[1].strip(): line for line in lines if line.count("│") == 6}  # the tables' table
    assert "2d ago (processed_at)" in rows["inbox"] and "31d (INBOX_DEDUP_RETENTION_DAYS)" in rows["inbox"]
    assert "1h (INBOX_PAYLOAD_RETENTION_HOURS)" in rows["payloads"]
    assert "kept (the data)" in rows["customers"]

    # The windows are the settings the process runs with.
    app.state.settings = settings.model_copy(update={"sync_events_retention_days": 0.5})
    served = (await client.get("/api/v1/sync/status")).json()["tables"]
    assert served["sync_events"]["retention"] == {"seconds": 43200, "setting": "SYNC_EVENTS_RETENTION_DAYS"}


def test_watch_redraws_in_place_until_interrupted(settings: Settings, db) -> None:  # type: ignore[no-untyped-def]
    """In a terminal (a pty here): the table is drawn, then redrawn over itself (cursor up), until Ctrl-C."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "twoway", "status", "--watch", "--interval", "0.2"],
                            env={**cli_env(settings), "TERM": "xterm"}, cwd=ROOT, stdin=terminal, stdout=terminal,
                            stderr=terminal, close_fds=True)
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        # Rich moves the cursor up (ESC [ n A) to draw the next frame over the last one.
        while not (seen.count(b"outbound") >= 2 and re.search(rb"\x1b\[\d*A", seen)):
            assert time.monotonic() < deadline, seen.decode(errors="replace")[-2000:]
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(controller, 65536)
                except OSError:
                    break
    finally:
        proc.send_signal(signal.SIGINT)
        # Keep reading, as a terminal does: a process whose frames nobody reads blocks writing them once the
        # pty is full, and cannot exit (shown by pausing this reader for 8 s).
        signals: list[str] = []
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.2)[0]:
                try:
                    os.read(controller, 65536)
                except OSError:
                    break
        if proc.poll() is None:  # say how it stood: a signal ignored or blocked, or a process still busy
            with open(f"/proc/{proc.pid}/status") as status:
                signals = [line.strip() for line in status if line.startswith(("Sig", "State"))]
            proc.kill()
        code = proc.wait(10)
        os.close(controller)
        assert code == 0, signals
    assert seen.count(b"outbound") >= 2, seen.decode(errors="replace")[-2000:]
