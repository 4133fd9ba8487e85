"""Whole processes, killed and restarted: the worker mid-create, and `twoway dev` itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from sqlalchemy import text

from tests.conftest import ROOT, emulator_call, wait_until
from tests.helpers import set_faults
from twoway.dev import _kill_leftovers
from twoway.kit.embedded import free_port
from twoway.settings import Settings


def worker_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ, "PYTHONPATH": str(ROOT / "src"),
        "DATABASE_URL": settings.require_database_url(), "KAFKA_BOOTSTRAP_SERVERS": settings.require_kafka(),
        "STRIPE_SECRET_KEY": settings.stripe_key(), "STRIPE_API_BASE": settings.stripe_api_base or "",
        "STRIPE_WEBHOOK_SECRET": "whsec_unused", "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
        "KAFKA_REBALANCE_TIMEOUT_MS": str(settings.kafka_rebalance_timeout_ms), "SWEEPER_GRACE_SECONDS": "60",
    }


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "twoway", "worker"], env=worker_env(settings),
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def stripe_copies(base: str, cid: int) -> list[dict]:
    data = emulator_call(base, "/_emulator/customers")
    rows = data["data"] if isinstance(data, dict) else data
    return [c for c in rows if c.get("metadata", {}).get("internal_id") == str(cid)]


async def test_worker_sigkilled_after_stripe_create_before_commit(client, settings, emulator, db, workdir) -> None:  # type: ignore[no-untyped-def]
    set_faults(emulator, response_delay_ms=4000)  # Stripe creates at once, but answers slowly
    worker = start_worker(settings, workdir / "worker-kill.log")
    try:
        cid = (await client.post("/api/v1/customers", json={"name": "Killed", "email": "killed@example.com"})).json()["id"]
        assert await wait_until(lambda: stripe_copies(emulator, cid), timeout=30, step=0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    async with db() as s:
        assert (await s.execute(text("SELECT count(*) FROM links"))).scalar() == 0
    set_faults(emulator, response_delay_ms=0)
    restarted = start_worker(settings, workdir / "worker-kill.log")
    try:
        async def linked() -> bool:
            async with db() as s:
                return bool((await s.execute(text("SELECT count(*) FROM links"))).scalar())
        assert await wait_until(linked, timeout=60, step=0.5)
    finally:
        restarted.terminate()
        restarted.wait(20)
    assert len(stripe_copies(emulator, cid)) == 1


def _children_alive(pids: dict[str, int]) -> list[str]:
    return [name for name, pid in pids.items() if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def _start_dev(state: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in (
        "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "STRIPE_SECRET_KEY", "STRIPE_API_BASE", "TWOWAY_API_KEYS")}
    env.update({"PYTHONPATH": str(ROOT / "src"), "API_PORT": str(port)})
    return subprocess.Popen([sys.executable, "-m", "twoway", "dev", "--state-dir", str(state)], env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_dev(state: Path, proc: subprocess.Popen[bytes]) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "twoway dev exited early"
        path = state / "dev.json"
        if path.exists():
            info = json.loads(path.read_text())
            try:
                if httpx.get(info["api_url"] + "/health", timeout=2).status_code == 200:
                    return info
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    raise AssertionError("twoway dev did not come up")


def test_dev_runs_everything_stops_everything_and_recovers_after_a_crash(workdir: Path) -> None:
    state = workdir / "devstate"
    log = workdir / "dev.log"
    port = free_port()
    proc = _start_dev(state, port, log)
    try:
        info = _wait_dev(state, proc)
        assert set(info) == {"api_url", "api_key", "database_url", "kafka_bootstrap_servers",
                              "stripe_api_base", "stripe_secret_key", "stripe_webhook_secret",
                              "salesforce_instance_url", "salesforce_access_token", "salesforce_ca_file",
                              "salesforce_login_url", "salesforce_client_id", "salesforce_client_secret"}
        auth = {"Authorization": f"Bearer {info['api_key']}"}
        r = httpx.post(info["api_url"] + "/api/v1/customers", json={"name": "Dev", "email": "dev@example.com"},
                       headers=auth)
        assert r.status_code == 201
        cid = r.json()["id"]
        assert httpx.get(info["api_url"] + "/ready", timeout=10).status_code == 200
        pids = json.loads((state / "dev.pids").read_text())
        assert {"api", "worker", "broker", "emulator", "salesforce"} <= set(pids)
        # A crash of the dev process itself leaves its children running and holding ports.
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _children_alive(pids)
        (state / "dev.json").unlink()  # as scripts do: wait for the new run's file, not the old one
        proc = _start_dev(state, port, log)
        info2 = _wait_dev(state, proc)
        assert info2["api_key"] == info["api_key"]
        r = httpx.get(f"{info2['api_url']}/api/v1/customers/{cid}", headers=auth)
        assert r.status_code == 200 and r.json()["name"] == "Dev"  # data survived the restart
        pids = json.loads((state / "dev.pids").read_text())
        for log_file in state.glob("*.log"):  # the children's logs: no secret of ours in them
            content = log_file.read_text(errors="replace")
            sf_secret = (state / "salesforce_client_secret").read_text().strip()
            for secret in (info2["stripe_webhook_secret"], info2["stripe_secret_key"], info2["api_key"],
                           info2["salesforce_access_token"], sf_secret):
                assert secret not in content, f"a secret leaked into {log_file.name}"
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(60)
        deadline = time.monotonic() + 15
        while _children_alive(pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _children_alive(pids) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_leftovers(state / "dev.pids")  # children run in their own sessions
