"""Stripe's rate limiters in the emulator (`--limits`), driven by the official stripe SDK: which limiter
refused is in Stripe's header and the emulator's own, and the stats count what each endpoint let through."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import stripe

from tests.integration.test_emulator import Emulator, admin, faults, sdk_for

CREATE = "POST /v1/customers"


@pytest.fixture(scope="module")
def limited() -> Iterator[Emulator]:
    emu = Emulator("--limits", "live", "--endpoint-limit", f"{CREATE}=5")
    yield emu
    emu.stop()


@pytest.fixture(autouse=True)
def _clean(limited: Emulator) -> None:
    httpx.post(limited.base + "/_emulator/reset", json={"endpoints": True}).raise_for_status()


def _refused(call: Any) -> stripe.RateLimitError | None:
    try:
        call()
    except stripe.RateLimitError as exc:
        return exc
    return None


def _limiter(exc: stripe.RateLimitError) -> tuple[str, str]:
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    return headers["twoway-emulator-limiter"], headers["stripe-rate-limited-reason"]


def test_an_endpoint_over_its_limit_gets_429s_naming_it_while_others_go_on(limited: Emulator) -> None:
    client = sdk_for(limited)
    first = client.v1.customers.create({"name": "first"})
    refusals = [r for r in (_refused(lambda: client.v1.customers.create({"name": "n"})) for _ in range(30)) if r]
    assert refusals  # 5/s: 30 calls would take 5 s to fit
    exc = refusals[0]
    assert exc.http_status == 429
    error = (exc.json_body or {})["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "rate_limit")  # Stripe's shape
    assert {_limiter(r) for r in refusals} == {(f"endpoint:{CREATE}", "endpoint-rate")}
    assert client.v1.customers.retrieve(first.id).id == first.id  # another endpoint, its own bucket

    stats = admin(limited, "GET", "/_emulator/stats")
    assert stats["responses"][CREATE]["429"] == len(refusals)
    created = stats["responses"][CREATE]["200"]
    assert sum(stats["per_second"][CREATE].values()) == created == 31 - len(refusals)
    assert stats["peak_per_second"][CREATE] <= 5 + 5  # a second's burst, then 5/s
    assert sum(stats["per_second"]["*"].values()) == created + 1


def test_the_global_limit_refuses_across_endpoints(limited: Emulator) -> None:
    client = sdk_for(limited)
    customer = client.v1.customers.create({"name": "g"})
    faults(limited, rate_limit_per_second=5)  # with --limits: the global bucket's number
    calls = [lambda: client.v1.customers.list({"limit": 1}), lambda: client.v1.customers.retrieve(customer.id),
             lambda: client.v1.events.list({"limit": 1})]
    refusals = [r for r in (_refused(calls[i % 3]) for i in range(30)) if r]
    assert refusals
    assert {_limiter(r) for r in refusals} == {("global", "global-rate")}


def test_the_concurrency_cap_refuses_what_is_over_it(limited: Emulator) -> None:
    faults(limited, concurrency_limit=2, latency_ms=500)
    client = sdk_for(limited)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _refused(lambda: client.v1.customers.list({"limit": 1})), range(8)))
    refusals = [r for r in results if r]
    assert refusals and len(refusals) <= 6
    assert {_limiter(r) for r in refusals} == {("concurrency", "global-concurrency")}
    assert client.v1.customers.list({"limit": 1}).data == []  # answered requests free their places


def test_limits_off_is_the_old_global_knob(limited: Emulator) -> None:
    faults(limited, limits="off", endpoint_limits={})
    client = sdk_for(limited)
    assert not any(_refused(lambda: client.v1.customers.create({"name": "x"})) for _ in range(15))
