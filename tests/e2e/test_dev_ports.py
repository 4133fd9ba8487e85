"""`twoway dev` listens where it is told: an explicit port wins over the one an earlier run remembered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import API_KEY, ROOT, WEBHOOK_SECRET
from twoway.dev import _kill_leftovers
from twoway.kit.embedded import free_port, port_open
from twoway.settings import Settings


def _wait_for_dev(state: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "twoway dev exited early"
        if (state / "dev.json").exists():
            return dict(json.loads((state / "dev.json").read_text()))
        time.sleep(0.2)
    raise AssertionError("twoway dev did not write dev.json")


def test_explicit_api_port_wins_over_the_remembered_one(settings: Settings, db: object, workdir: Path) -> None:
    state = workdir / "dev-ports"
    state.mkdir()
    remembered, explicit = free_port(), free_port()
    (state / "api.port").write_text(str(remembered))  # as an earlier `twoway dev` leaves it
    # Everything configured, so dev embeds nothing and only runs the API and a worker.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "API_PORT": str(explicit),
           "DATABASE_URL": settings.require_database_url(), "KAFKA_BOOTSTRAP_SERVERS": settings.require_kafka(),
           "STRIPE_SECRET_KEY": settings.stripe_key(), "STRIPE_API_BASE": settings.stripe_api_base or "",
           "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "TWOWAY_API_KEYS": API_KEY, "KAFKA_ENABLE_IDEMPOTENCE": "false",
           "KAFKA_GROUP_PREFIX": "twoway-dev-ports"}
    log = open(workdir / "dev-ports.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "twoway", "dev", "--state-dir", str(state)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        info = _wait_for_dev(state, proc)
        assert info["api_url"].endswith(f":{explicit}")
        assert httpx.get(f"http://127.0.0.1:{explicit}/health", timeout=5).status_code == 200
        assert not port_open(remembered)
        assert (state / "api.port").read_text() == str(remembered)  # an explicit port is not remembered
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        _kill_leftovers(state / "dev.pids")
        log.close()
