"""Schemathesis against our own OpenAPI document: no 5xx, and every response matches its schema.

The app runs under uvicorn in a thread (its own event loop, its lifespan entered), so the database pool
lives on the loop that serves the requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import API_KEY, STRIPE_KEY, WEBHOOK_SECRET
from twoway.api import create_app
from twoway.kit.embedded import free_port
from twoway.settings import Settings

# Every answer is documented (errors in one shape), so status codes are checked too.
CHECKS = (not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance)


@pytest.fixture(scope="module")
def served_api(pg_url: str, kafka: str, emulator_base: str) -> Iterator[str]:
    app_settings = Settings(database_url=pg_url, kafka_bootstrap_servers=kafka, stripe_secret_key=STRIPE_KEY,
                            stripe_api_base=emulator_base, stripe_webhook_secret=WEBHOOK_SECRET,
                            twoway_api_keys=API_KEY, kafka_enable_idempotence=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(app_settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _document() -> dict:
    """The same document the server serves; building it needs settings but no running parts."""
    offline = Settings(database_url="postgresql://unused@127.0.0.1:1/x", kafka_bootstrap_servers="127.0.0.1:1",
                       stripe_secret_key=STRIPE_KEY, stripe_webhook_secret=WEBHOOK_SECRET, twoway_api_keys=API_KEY)
    return create_app(offline).openapi()


schema = schemathesis.openapi.from_dict(_document())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_matches_its_schema(case: schemathesis.Case, served_api: str) -> None:
    case.call_and_validate(base_url=served_api, headers={"Authorization": f"Bearer {API_KEY}"}, checks=CHECKS,
                           timeout=30)


def test_the_served_document_is_the_one_fuzzed(served_api: str) -> None:
    import httpx

    assert httpx.get(served_api + "/openapi.json").json() == _document()
