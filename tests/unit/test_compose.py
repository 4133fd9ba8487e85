"""Issue 6: the production compose file is valid, complete, scalable and keeps secrets out of the file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SECRETS = {"POSTGRES_PASSWORD": "pw", "STRIPE_SECRET_KEY": "sk_test_compose", "TWOWAY_API_KEYS": "key"}
TWOWAY_ENV = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "API_HOST",
              "API_PORT", "TWOWAY_API_KEYS", "KAFKA_ENABLE_IDEMPOTENCE", "STRIPE_API_BASE", "TWOWAY_CONNECTORS",
              "SALESFORCE_LOGIN_URL", "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_JWT_KEY_FILE",
              "SALESFORCE_USERNAME", "SALESFORCE_API_VERSION", "SALESFORCE_EXTERNAL_ID_FIELD")


def _compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: run `sh scripts/system-deps.sh` (or `make system-deps`)")
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([binary, "-f", str(COMPOSE), *args], env={**clean, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_config_is_valid_with_secrets_from_the_environment() -> None:
    result = _compose("config", "-q", env=SECRETS)
    assert result.returncode == 0, result.stderr


def test_compose_config_parses_without_secrets() -> None:
    """Validation tools run it bare; the services themselves refuse to start on empty secrets."""
    result = _compose("config", "-q", env={})
    assert result.returncode == 0, result.stderr


def test_services_refuse_to_start_without_their_secrets() -> None:
    import sys

    env = {k: v for k, v in os.environ.items() if k not in (*SECRETS, "STRIPE_API_BASE")}
    env.update({"PYTHONPATH": str(ROOT / "src"), "DATABASE_URL": "postgresql://u@127.0.0.1:1/d",
                "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    for command in (["api"], ["worker"]):
        out = subprocess.run([sys.executable, "-m", "twoway", *command], env=env, capture_output=True, text=True,
                             timeout=60, check=False, cwd="/")  # no .twoway/dev.json to fall back on
        assert out.returncode == 2, (command, out.stdout, out.stderr)


def test_no_secret_is_written_in_the_file() -> None:
    raw = COMPOSE.read_text()
    assert not re.search(r"(sk|rk)_(test|live)_[A-Za-z0-9]", raw)
    assert not re.search(r"whsec_[A-Za-z0-9]", raw)
    for name in ("POSTGRES_PASSWORD", "STRIPE_SECRET_KEY", "TWOWAY_API_KEYS", "STRIPE_WEBHOOK_SECRET",
                 "SALESFORCE_CLIENT_SECRET"):
        for line in raw.splitlines():
            if re.match(rf"\s*{name}:", line):
                assert "${" + name in line, line


def test_services_and_one_shot_jobs(spec: dict[str, Any]) -> None:
    services = spec["services"]
    assert {"postgres", "kafka", "kafka-init", "migrate", "api", "worker"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:17")
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["migrate"]["command"] == ["migrate"] and services["migrate"]["restart"] == "no"
    assert services["api"]["command"] == ["api"] and services["worker"]["command"] == ["worker"]
    for name in ("api", "worker"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert needs["kafka-init"]["condition"] == "service_completed_successfully"
    assert "sync.outbound" in str(services["kafka-init"]["command"])
    assert "sync.inbound" in str(services["kafka-init"]["command"])


def test_kafka_runs_in_kraft_mode(spec: dict[str, Any]) -> None:
    env = spec["services"]["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert not any("zookeeper" in name for name in spec["services"])
    assert not any(k.startswith("KAFKA_ZOOKEEPER") for k in env)


def test_healthchecks(spec: dict[str, Any]) -> None:
    services = spec["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "kafka-broker-api-versions" in " ".join(services["kafka"]["healthcheck"]["test"])
    assert "/health" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_worker_scales_out(spec: dict[str, Any]) -> None:
    worker = spec["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    result = _compose("config", env=SECRETS)
    resolved = yaml.safe_load(result.stdout)["services"]["worker"]
    assert "container_name" not in resolved and "ports" not in resolved


def test_twoway_services_get_the_settings(spec: dict[str, Any]) -> None:
    resolved = yaml.safe_load(_compose("config", env=SECRETS).stdout)["services"]
    for name in ("api", "worker", "migrate"):
        env = resolved[name]["environment"]
        missing = [k for k in TWOWAY_ENV if k not in env]
        assert not missing, f"{name} lacks {missing}"
        assert env["KAFKA_ENABLE_IDEMPOTENCE"] == "true" and env["STRIPE_SECRET_KEY"] == "sk_test_compose"
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
    assert int(resolved["api"]["environment"]["API_WORKERS"]) >= 2  # `twoway api` runs that many processes


def test_dockerfile_runs_as_non_root_with_pinned_installs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert "pip install" in dockerfile and "-c constraints.txt ." in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["twoway"\]', dockerfile, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".venv" in ignored and ".git" in ignored


def test_salesforce_settings_pass_through() -> None:
    """Set in the environment, they reach the services; unset, Salesforce stays off with working defaults."""
    env = {**SECRETS, "SALESFORCE_CLIENT_ID": "3MVG9-app", "SALESFORCE_CLIENT_SECRET": "sf-secret",
           "SALESFORCE_LOGIN_URL": "https://test.salesforce.com", "TWOWAY_CONNECTORS": "stripe,salesforce"}
    resolved = yaml.safe_load(_compose("config", env=env).stdout)["services"]
    for name in ("api", "worker"):
        e = resolved[name]["environment"]
        assert e["SALESFORCE_CLIENT_ID"] == "3MVG9-app" and e["SALESFORCE_CLIENT_SECRET"] == "sf-secret"
        assert e["SALESFORCE_LOGIN_URL"] == "https://test.salesforce.com" and e["TWOWAY_CONNECTORS"] == "stripe,salesforce"
    bare = yaml.safe_load(_compose("config", env=SECRETS).stdout)["services"]["worker"]["environment"]
    from twoway.connectors import registry
    from twoway.settings import Settings

    settings = Settings(**{k.lower(): v for k, v in bare.items() if k.startswith(("SALESFORCE_", "TWOWAY_CONN"))})
    assert settings.salesforce_login_url == "https://login.salesforce.com" and settings.salesforce_api_version == "60.0"
    assert "salesforce" not in registry.enabled_systems(settings)
