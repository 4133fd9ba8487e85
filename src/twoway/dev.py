"""`twoway dev`: the whole system from one command, embedding whatever is not configured."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from twoway.kit.embedded import EmbeddedBroker, EmbeddedPostgres, free_port, port_open, wait_for_port
from twoway.kit.kafka import ensure_topics
from twoway.settings import Settings

# A crashed run's children are killed at start; their ports take a moment to be released.
PORT_FREE_GRACE_SECONDS = 5.0
DEV_JSON_KEYS = ("api_url", "api_key", "database_url", "kafka_bootstrap_servers",
                 "stripe_api_base", "stripe_secret_key", "stripe_webhook_secret",
                 "salesforce_instance_url", "salesforce_access_token", "salesforce_ca_file",
                 "salesforce_login_url", "salesforce_client_id", "salesforce_client_secret")
SF_CLIENT_ID = "twoway-emulator"
# Who `salesforce_access_token` acts as: a person editing Accounts, not the connector's integration user.
SF_PERSON = "you@twoway.dev"


@dataclass
class DevSystem:
    state: Path
    settings: Settings
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pg: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    api_port: int = 0
    stopping: bool = False
    _args: dict[str, list[str]] = field(default_factory=dict)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> dict[str, str | None]:
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "dev.json").unlink(missing_ok=True)
        _kill_leftovers(self.state / "dev.pids")
        self.api_port = self._pick_port("api.port", self._explicit("api_port"), self.settings.api_port)
        self._database()
        self._broker()
        self._emulator()
        self._salesforce_emulator()
        api_key = self._api_key()
        self._migrate()
        ready = self.state / "worker.ready"
        ready.unlink(missing_ok=True)
        self.env.update({"API_HOST": self.settings.api_host, "API_PORT": str(self.api_port),
                         "WORKER_READY_FILE": str(ready.resolve()),
                         "WORKER_METRICS_PORT": str(self._pick_port(
                             "worker-metrics.port", self._explicit("worker_metrics_port"), 9464))})
        self._spawn("api", ["api"])
        self._spawn("worker", ["worker"])
        api_url = f"http://{self.settings.api_host}:{self.api_port}"
        _wait_http(api_url + "/health", 60, self.children["api"])
        _wait_file(ready, 40, self.children["worker"])
        info: dict[str, str | None] = {
            "api_url": api_url, "api_key": api_key, "database_url": self.env["DATABASE_URL"],
            "kafka_bootstrap_servers": self.env["KAFKA_BOOTSTRAP_SERVERS"],
            "stripe_api_base": self.env.get("STRIPE_API_BASE"),
            "stripe_secret_key": self.env.get("STRIPE_SECRET_KEY"),
            "stripe_webhook_secret": self.env.get("STRIPE_WEBHOOK_SECRET"),
            **self._salesforce_info(),
        }
        tmp = self.state / "dev.json.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(self.state / "dev.json")
        return info

    def supervise(self) -> None:
        """Restart a child that dies, until asked to stop."""
        while not self.stopping:
            time.sleep(0.5)
            if self.broker and self.broker.proc and self.broker.proc.poll() is not None and not self.stopping:
                print("[twoway dev] broker exited; restarting it (its topics were in memory)", flush=True)
                self.broker.start()
                asyncio.run(ensure_topics(self.broker.bootstrap, self.settings.kafka_topic_partitions))
            for name, proc in list(self.children.items()):
                if proc.poll() is not None and not self.stopping:
                    print(f"[twoway dev] {name} exited with {proc.returncode}; restarting "
                          f"(see {self.state / (name + '.log')})", flush=True)
                    time.sleep(2)
                    self._spawn(name, self._args[name])

    def stop(self) -> None:
        self.stopping = True
        for proc in self.children.values():
            _terminate(proc)
        if self.broker:
            self.broker.stop()
        if self.pg:
            self.pg.stop()
        (self.state / "dev.pids").unlink(missing_ok=True)

    # -- parts ---------------------------------------------------------------------------------------

    def _database(self) -> None:
        if self.settings.database_url:
            self.env["DATABASE_URL"] = self.settings.database_url
            return
        port = self._pick_port("pg.port", None, 0)
        self.pg = EmbeddedPostgres(self.state / "pgdata", port=port)
        self.env["DATABASE_URL"] = self.pg.start()
        print(f"[twoway dev] embedded PostgreSQL on 127.0.0.1:{port} (data in {self.state / 'pgdata'})", flush=True)

    def _broker(self) -> None:
        if self.settings.kafka_bootstrap_servers:
            self.env["KAFKA_BOOTSTRAP_SERVERS"] = self.settings.kafka_bootstrap_servers
            return
        self.broker = EmbeddedBroker(port=self._pick_port("broker.port", None, 0), log_path=self.state / "tansu.log")
        self.env["KAFKA_BOOTSTRAP_SERVERS"] = self.broker.start()
        asyncio.run(ensure_topics(self.broker.bootstrap, self.settings.kafka_topic_partitions))
        # The dev broker does not support the idempotent producer.
        self.env["KAFKA_ENABLE_IDEMPOTENCE"] = "false"
        self._record_pid("broker", self.broker.proc.pid if self.broker.proc else 0)
        print(f"[twoway dev] embedded Kafka-compatible broker on {self.env['KAFKA_BOOTSTRAP_SERVERS']}", flush=True)

    def _emulator(self) -> None:
        if self.settings.stripe_key():
            return
        port = self._pick_port("emulator.port", None, 12111)
        key = "sk_test_emulator_" + secrets.token_hex(8)
        secret = "whsec_" + secrets.token_hex(16)
        hook = f"http://{self.settings.api_host}:{self.api_port}/api/v1/webhooks/stripe"
        self._spawn("emulator", ["emulator", "stripe", "--port", str(port), "--webhook-url", hook,
                                 "--webhook-secret", secret, "--state-file", str(self.state / "emulator.json")])
        wait_for_port(port, 30, self.children["emulator"])
        self.env.update({"STRIPE_SECRET_KEY": key, "STRIPE_API_BASE": f"http://127.0.0.1:{port}",
                         "STRIPE_WEBHOOK_SECRET": secret})
        print(f"[twoway dev] Stripe emulator on http://127.0.0.1:{port}", flush=True)

    def _salesforce_emulator(self) -> None:
        """Emulated unless Salesforce credentials are configured (or TWOWAY_CONNECTORS leaves it out)."""
        chosen = self.settings.connector_names()
        if self.settings.salesforce_configured() or (chosen is not None and "salesforce" not in chosen):
            return
        port = self._pick_port("salesforce.port", None, 12112)
        secret_file = self.state / "salesforce_client_secret"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_urlsafe(24))
            secret_file.chmod(0o600)
        tls_dir = (self.state / "salesforce-tls").resolve()
        # The secret goes by environment, never on a command line (visible to `ps`).
        self.env.update({"SALESFORCE_EMULATOR_CLIENT_SECRET": secret_file.read_text().strip()})
        self._spawn("salesforce", ["emulator", "salesforce", "--port", str(port), "--tls-dir", str(tls_dir),
                                   "--client-id", SF_CLIENT_ID, "--daily-api-requests", "1000000",
                                   "--state-file", str(self.state / "salesforce.json")])
        wait_for_port(port, 30, self.children["salesforce"])
        # Against the emulator, poll as often as the Stripe poller (its allowance is set generously).
        self.env.setdefault("SALESFORCE_POLL_INTERVAL_SECONDS", "2")
        self.env.update({"SALESFORCE_LOGIN_URL": f"https://127.0.0.1:{port}", "SALESFORCE_CLIENT_ID": SF_CLIENT_ID,
                         "SALESFORCE_CLIENT_SECRET": secret_file.read_text().strip(),
                         "SALESFORCE_CA_FILE": str(tls_dir / "ca.pem")})
        print(f"[twoway dev] Salesforce emulator on https://127.0.0.1:{port} (CA {tls_dir / 'ca.pem'})", flush=True)

    def _salesforce_info(self) -> dict[str, str | None]:
        """For scripts: an emulator token of a person (not the integration user), and the CA to trust."""
        none: dict[str, str | None] = {"salesforce_instance_url": None, "salesforce_access_token": None,
                                       "salesforce_ca_file": None, "salesforce_login_url": None,
                                       "salesforce_client_id": None, "salesforce_client_secret": None}
        if "salesforce" not in self.children:
            return none
        base, ca = self.env["SALESFORCE_LOGIN_URL"], self.env["SALESFORCE_CA_FILE"]
        body = json.dumps({"username": SF_PERSON, "ttl_seconds": 30 * 24 * 3600}).encode()
        req = urllib.request.Request(base + "/_emulator/token", data=body, method="POST",  # noqa: S310 (our URL)
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10, context=ssl.create_default_context(cafile=ca)) as r:  # noqa: S310
            token = json.loads(r.read())
        # The connector's own credentials too, so CLI commands (reconcile, status) find the emulator.
        return {"salesforce_instance_url": token["instance_url"], "salesforce_access_token": token["access_token"],
                "salesforce_ca_file": ca, "salesforce_login_url": base, "salesforce_client_id": SF_CLIENT_ID,
                "salesforce_client_secret": self.env["SALESFORCE_CLIENT_SECRET"]}

    def _api_key(self) -> str:
        keys = self.settings.api_keys()
        if keys:
            return keys[0]
        path = self.state / "api_key"
        if not path.exists():
            path.write_text("tw_" + secrets.token_urlsafe(24))
            path.chmod(0o600)
        key = path.read_text().strip()
        self.env["TWOWAY_API_KEYS"] = key
        return key

    def _migrate(self) -> None:
        subprocess.run([*_twoway(), "migrate"], env=self.env, check=True)

    # -- helpers -------------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        self._args[name] = args
        log = open(self.state / f"{name}.log", "ab")  # noqa: SIM115
        self.children[name] = subprocess.Popen([*_twoway(), *args], env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True)
        self._record_pid(name, self.children[name].pid)

    def _record_pid(self, name: str, pid: int) -> None:
        path = self.state / "dev.pids"
        pids = json.loads(path.read_text()) if path.exists() else {}
        pids[name] = pid
        path.write_text(json.dumps(pids))

    def _explicit(self, field_name: str) -> int | None:
        """A port the user set (environment or argument), as opposed to the settings' default."""
        value = getattr(self.settings, field_name)
        return int(value) if field_name in self.settings.model_fields_set and value else None

    def _pick_port(self, name: str, explicit: int | None, default: int) -> int:
        """The port for one of our listeners.

        An explicit setting always wins (and is not remembered: it says nothing about the next run).
        Otherwise last run's port when it is free (stable URLs across runs), else the default, else any
        free one; the choice is remembered under the state directory.
        """
        if explicit:
            if not _wait_port_free(explicit, PORT_FREE_GRACE_SECONDS):
                raise SystemExit(f"[twoway dev] port {explicit} ({name.removesuffix('.port')}) is set explicitly "
                                 "but something already listens on it")
            return explicit
        path = self.state / name
        text = path.read_text().strip() if path.exists() else ""
        remembered = int(text) if text.isdigit() else 0
        for port in (remembered, default):
            if port and not port_open(port):
                break
        else:
            port = free_port()
        path.write_text(str(port))
        return port


def _twoway() -> list[str]:
    return [sys.executable, "-m", "twoway"]


def _kill_leftovers(pid_file: Path) -> None:
    """A crashed run can leave children holding ports; stop the ones that are still ours."""
    if not pid_file.exists():
        return
    try:
        pids = json.loads(pid_file.read_text())
    except ValueError:
        pids = {}
    killed = []
    for pid in pids.values():
        try:
            proc = psutil.Process(int(pid))
            cmdline = " ".join(proc.cmdline())
            if "twoway" in cmdline or "tansu" in cmdline:
                os.killpg(proc.pid, signal.SIGKILL) if os.getpgid(proc.pid) == proc.pid else proc.kill()
                killed.append(proc)
        except (psutil.Error, ProcessLookupError, ValueError, PermissionError):
            continue
    psutil.wait_procs(killed, timeout=5)  # their ports are free once they are gone
    pid_file.unlink(missing_ok=True)


def _wait_port_free(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while port_open(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_file(path: Path, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """The worker writes the file once its consumers hold partitions: changes then flow at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}; see its log in {path.parent}")
        time.sleep(0.1)


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} process exited with {proc.returncode}; see .twoway/*.log")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (local URL we built)
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} not healthy in {timeout} s")
