"""The Salesforce emulator for tests: started once per session over TLS, reset per test, and driven
with the real client library (simple-salesforce) the way a person or another app would."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce

from tests.conftest import ROOT
from twoway.kit.embedded import free_port, wait_for_port

SF_CLIENT_ID = "twoway-test"
SF_CLIENT_SECRET = "sf-test-secret"
SF_VERSION = "60.0"


@dataclass(frozen=True)
class SfEmulator:
    base: str
    ca_file: str
    tls_dir: Path

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
        context = ssl.create_default_context(cafile=self.ca_file)
        with urllib.request.urlopen(req, timeout=10, context=context) as r:
            raw = r.read()
        return json.loads(raw) if raw else {}

    def session(self) -> requests.Session:
        s = requests.Session()
        s.verify = self.ca_file
        s.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would override `verify`
        return s

    def client(self, username: str = "person@twoway.test") -> Salesforce:
        """simple-salesforce as another user (a person editing Accounts in Salesforce)."""
        tok = self.call("/_emulator/token", {"username": username})
        return Salesforce(instance_url=tok["instance_url"], session_id=tok["access_token"], session=self.session(),
                          version=SF_VERSION)

    def stats(self) -> dict[str, Any]:
        return dict(self.call("/_emulator/stats"))


def start_sf_emulator(port: int, tls_dir: Path, *extra: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SALESFORCE_EMULATOR_CLIENT_SECRET": SF_CLIENT_SECRET}
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "twoway.emulators.salesforce", "--port", str(port),
                             "--tls-dir", str(tls_dir), "--client-id", SF_CLIENT_ID, *extra],
                            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port(port, 30, proc)
    return proc


@pytest.fixture(scope="session")
def sf_emulator_session(workdir: Path) -> Iterator[SfEmulator]:
    port = free_port()
    tls_dir = workdir / "sf-tls"
    proc = start_sf_emulator(port, tls_dir, log=workdir / "sf-emulator.log")
    yield SfEmulator(f"https://127.0.0.1:{port}", str(tls_dir / "ca.pem"), tls_dir)
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def sf_emulator(sf_emulator_session: SfEmulator) -> SfEmulator:
    sf_emulator_session.call("/_emulator/reset", {})
    return sf_emulator_session
