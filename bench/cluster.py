"""Real processes for a benchmark or chaos run: PostgreSQL, broker, Stripe emulator, API, relay, workers.

Every process is started by us, in its own session, so a kill -9 hits exactly that process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twoway.kit.embedded import EmbeddedBroker, EmbeddedPostgres, free_port, wait_for_port
from twoway.kit.kafka import ensure_topics

PARTITIONS = 4
WORKER_COMPONENTS = "outbound,inbound,retry,sweeper,poller"


@dataclass
class ClusterConfig:
    workers: int = 2
    # The relay runs as its own process so it can be killed on its own.
    split_relay: bool = True
    worker_components: str = WORKER_COMPONENTS
    inbound_mode: str = "both"
    stripe_rate_limit: float = 1000.0
    emulator_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # Each worker and the relay serve Prometheus metrics on a port of its own (`Cluster.metrics_ports`)
    # and name their database connections after themselves, so a soak can tell them apart.
    metrics: bool = False


class Cluster:
    """Starts, kills, restarts and stops the processes of one run, all under a temp dir."""

    def __init__(self, config: ClusterConfig | None = None, root: Path | None = None) -> None:
        self.config = config or ClusterConfig()
        self.root = root or Path(tempfile.mkdtemp(prefix="twoway-bench-"))
        self.root.chmod(0o755)
        self.api_port = free_port()
        self.emulator_port = free_port()
        self.api_key = "bench_" + secrets.token_hex(8)
        self.webhook_secret = "whsec_" + secrets.token_hex(16)
        self.stripe_key = "sk_test_bench_" + secrets.token_hex(4)
        self.pg: EmbeddedPostgres | None = None
        self.broker: EmbeddedBroker | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._commands: dict[str, list[str]] = {}
        self.env: dict[str, str] = {}
        # Settings of one process only, on top of `env` (kept for its restarts).
        self._own_env: dict[str, dict[str, str]] = {}
        self.metrics_ports: dict[str, int] = {}

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.emulator_port}"

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    def worker_names(self) -> list[str]:
        return [f"worker-{i}" for i in range(self.config.workers)]

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Cluster:
        try:
            self._start_infrastructure()
            self.start_emulator()
            self._migrate()
            self._spawn("api", ["api"])
            wait_http(self.api_url + "/health", 60, self.procs["api"])
            self.start_workers()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_infrastructure(self) -> None:
        self.pg = EmbeddedPostgres(self.root / "pg")
        database_url = self.pg.start()
        self.broker = EmbeddedBroker(log_path=self.root / "tansu.log")
        self.broker.start()
        asyncio.run(ensure_topics(self.broker.bootstrap, PARTITIONS))
        self.env = self._base_env(database_url, self.broker.bootstrap)

    def _base_env(self, database_url: str, bootstrap: str) -> dict[str, str]:
        env = {
            **os.environ,
            "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "STRIPE_SECRET_KEY": self.stripe_key, "STRIPE_API_BASE": self.emulator_url,
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret, "TWOWAY_API_KEYS": self.api_key,
            "API_HOST": "127.0.0.1", "API_PORT": str(self.api_port),
            "KAFKA_ENABLE_IDEMPOTENCE": "false", "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
            # A killed consumer holds its partitions until its session times out: keep that short.
            "KAFKA_SESSION_TIMEOUT_MS": "6000", "KAFKA_REBALANCE_TIMEOUT_MS": "6000",
            "SWEEPER_GRACE_SECONDS": "3", "SWEEPER_INTERVAL_SECONDS": "1",
            "SYNC_BACKOFF_BASE_SECONDS": "0.2", "SYNC_BACKOFF_MAX_SECONDS": "3",
            "STRIPE_RATE_LIMIT_PER_SECOND": str(self.config.stripe_rate_limit),
            # The emulator limits only the account unless a workload switches its endpoint limits on
            # (config.env can set ours lower then): pace each endpoint by the account's rate too.
            "STRIPE_ENDPOINT_RATE_LIMIT_PER_SECOND": str(self.config.stripe_rate_limit),
            "INBOUND_MODE": self.config.inbound_mode, "POLL_INTERVAL_SECONDS": "1",
            "RELAY_POLL_SECONDS": "0.5", "LOG_LEVEL": "warning",
        }
        env.update(self.config.env)
        return env

    def start_emulator(self) -> None:
        hook = f"{self.api_url}/api/v1/webhooks/stripe"
        args = ["--port", str(self.emulator_port), "--webhook-url", hook,
                "--webhook-secret", self.webhook_secret, *self.config.emulator_args]
        self._spawn_module("emulator", "twoway.emulators.stripe", args)
        wait_for_port(self.emulator_port, 30, self.procs["emulator"])

    def _migrate(self) -> None:
        with open(self.root / "migrate.log", "ab") as log:
            subprocess.run([sys.executable, "-m", "twoway", "migrate"], env=self.env, check=True,
                           stdout=log, stderr=subprocess.STDOUT, timeout=120)

    def start_workers(self) -> None:
        components = self.config.worker_components
        if not self.config.split_relay:
            components = "relay," + components
        commands = {name: ["worker", "--only", components] for name in self.worker_names()}
        if self.config.split_relay:
            commands = {"relay": ["worker", "--only", "relay"], **commands}
        for name, args in commands.items():
            if self.config.metrics:
                self.metrics_ports[name] = free_port()
                self._own_env[name] = {"WORKER_METRICS_PORT": str(self.metrics_ports[name]),
                                       "DB_APPLICATION_NAME": f"twoway-{name}"}
            self._spawn(name, args)

    def stop(self) -> None:
        for name in list(self.procs):
            self.terminate(name)
        if self.broker is not None:
            self.broker.stop(hard=True)
        if self.pg is not None:
            self.pg.stop()

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- faults ------------------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL, no goodbye: the process gets no chance to commit, ack or leave its group."""
        proc = self.procs[name]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restart(self, name: str) -> None:
        self.kill(name)
        self._spawn_command(name, self._commands[name])
        if name == "api":
            wait_http(self.api_url + "/health", 60, self.procs["api"])

    def restart_broker(self) -> None:
        """Tansu keeps everything in memory: topics and committed offsets are gone after this."""
        assert self.broker is not None
        self.broker.stop(hard=True)
        time.sleep(0.5)
        self.broker.start()
        asyncio.run(ensure_topics(self.broker.bootstrap, PARTITIONS))

    def terminate(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill(name)

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    # -- emulator admin ----------------------------------------------------------------------------

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        return http_json(self.emulator_url + "/_emulator/faults", faults)

    def emulator_stats(self) -> dict[str, Any]:
        return http_json(self.emulator_url + "/_emulator/stats")

    def emulator_customers(self) -> list[dict[str, Any]]:
        return http_json(self.emulator_url + "/_emulator/customers")  # type: ignore[return-value]

    # -- spawning ----------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        self._spawn_module(name, "twoway", args)

    def _spawn_module(self, name: str, module: str, args: list[str]) -> None:
        self._spawn_command(name, [sys.executable, "-m", module, *args])

    def _spawn_command(self, name: str, command: list[str]) -> None:
        self._commands[name] = command
        with open(self.root / f"{name}.log", "ab") as log:
            env = {**(self.env or os.environ), **self._own_env.get(name, {})}
            self.procs[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 30) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else {}


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy within {timeout} s")
