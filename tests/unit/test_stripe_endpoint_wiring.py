"""The Stripe connector's calls name their endpoints to the limiter, and a 429 shrinks the bucket Stripe
says it hit: the endpoint's, the account's, or none for a `lock_timeout` (an object lock, not a limit)."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from twoway.connectors.base import ConnectorError
from twoway.connectors.stripe import connector as stripe_connector
from twoway.connectors.stripe.connector import StripeConnector, fill, limiter_for
from twoway.kit.ratelimit import LocalLimiter
from twoway.settings import Settings

UPDATE = "POST /v1/customers/{id}"


class Recorder:
    """An `EndpointLimiter` that lets everything through and remembers what it was told."""

    def __init__(self) -> None:
        self.acquired: list[str | None] = []
        self.limited: list[str | None] = []

    async def acquire(self, endpoint: str | None = None) -> None:
        self.acquired.append(endpoint)

    async def rate_limited(self, retry_after: float | None = None, endpoint: str | None = None) -> None:
        self.limited.append(endpoint)

    async def close(self) -> None:
        return None


def _connector(limiter: Recorder) -> StripeConnector:
    return StripeConnector(stripe.StripeClient("sk_test_unit"), limiter=limiter, webhook_secrets=[],
                           livemode=False)


def _429(headers: dict[str, str], code: str = "rate_limit") -> stripe.RateLimitError:
    body = {"error": {"type": "invalid_request_error", "code": code, "message": "slow down"}}
    return stripe.RateLimitError("slow down", "{}", 429, body, headers)


def _answers(*outcomes: Exception | str) -> Any:
    """An SDK call that raises or returns each outcome in turn."""
    pending = list(outcomes)

    async def fn() -> str:
        outcome = pending.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    return fn


@pytest.mark.parametrize(("headers", "shrunk"), [
    ({"Stripe-Rate-Limited-Reason": "endpoint-rate"}, UPDATE),
    ({"stripe-rate-limited-reason": "Endpoint-Rate"}, UPDATE),  # header and value in any case
    ({"Stripe-Rate-Limited-Reason": "global-rate"}, None),
    ({"Stripe-Rate-Limited-Reason": "global-concurrency"}, None),
    ({}, None),  # Stripe says nothing: the account's
])
async def test_a_429_shrinks_the_bucket_stripe_names(headers: dict[str, str], shrunk: str | None) -> None:
    limiter = Recorder()
    result = await _connector(limiter).call("update", UPDATE, _answers(_429(headers), "ok"))
    assert result == "ok"
    assert limiter.acquired == [UPDATE, UPDATE]  # the retry queues at the endpoint again
    assert limiter.limited == [shrunk]


async def test_a_lock_timeout_shrinks_nothing_and_ends_as_contention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stripe_connector, "LOCK_RETRY_SECONDS", 0.0)
    limiter = Recorder()
    conn = _connector(limiter)
    assert await conn.call("update", UPDATE, _answers(_429({}, "lock_timeout"), "ok")) == "ok"
    locked = [_429({}, "lock_timeout")] * (stripe_connector.RATE_LIMIT_RETRIES + 1)
    with pytest.raises(ConnectorError) as raised:
        await conn.call("update", UPDATE, _answers(*locked))
    assert limiter.limited == []
    exc = raised.value
    assert (exc.status, exc.code, exc.transient, exc.rate_limited) == (429, "lock_timeout", True, False)


async def test_request_fills_the_template_and_names_the_endpoint() -> None:
    limiter = Recorder()
    conn = _connector(limiter)
    sent: list[tuple[str, str]] = []

    class Response:
        data: dict[str, Any] = {"id": "cus_1"}
        headers: dict[str, str] = {}

    async def raw(method: str, path: str, **params: Any) -> Response:
        sent.append((method, path))
        return Response()
    conn.client.raw_request_async = raw  # type: ignore[method-assign]
    await conn.request("update", UPDATE, "cus_1", idempotency_key="k", name="n")
    await conn.request("search", "GET /v1/customers/search", query="q")
    assert sent == [("post", "/v1/customers/cus_1"), ("get", "/v1/customers/search")]
    assert limiter.acquired == [UPDATE, "GET /v1/customers/search"]


def test_fill_quotes_each_id_whole_and_counts_them() -> None:
    assert fill("/v1/invoices/{id}/lines/{id}", ("in_1", "il/2")) == "/v1/invoices/in_1/lines/il%2F2"
    assert fill("/v1/customers", ()) == "/v1/customers"
    with pytest.raises(ValueError):
        fill("/v1/customers/{id}", ())


def test_limiter_for_nests_the_settings_endpoint_limits() -> None:
    limiter = limiter_for(Settings(stripe_secret_key="sk_live_x", stripe_endpoint_rate_limits="POST /v1/customers=50"))
    assert isinstance(limiter, LocalLimiter)  # no database
    rates = limiter.endpoint_rates
    assert rates is not None
    assert (rates.of("POST /v1/customers"), rates.of(UPDATE), rates.of("GET /v1/customers/search")) == (50, 24, 19)
