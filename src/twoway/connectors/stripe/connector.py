"""The one module that talks to Stripe through the official SDK, with an injected client: auth, the
account's and each endpoint's rate limits, webhook verification, the Events API, and the table of the
kinds it syncs (each kind's calls and fields live in its own module: customers.py, invoices.py).

Every call names its endpoint as Stripe counts it, the method and the route template
(`POST /v1/customers/{id}`, never an id; the labels of the emulator's `api.ROUTES`): Stripe limits each
endpoint (25/s) within the account (100/s live), and the limiter paces both (kit/ratelimit.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import quote

import stripe

from twoway.connectors.base import (
    ConnectorError,
    Dispatch,
    EventTable,
    InboundEvent,
    KindHandler,
    NotFound,
    Parses,
    WebhookRejected,
)
from twoway.connectors.stripe import customers, invoices
from twoway.kit import metrics
from twoway.kit.db import asyncpg_dsn
from twoway.kit.ratelimit import EndpointLimiter, EndpointRates, LocalLimiter, SharedLimiter
from twoway.settings import Settings

SYSTEM = "stripe"
RATE_LIMIT_RETRIES = 6
# Stripe's `Stripe-Rate-Limited-Reason` on a 429: `endpoint-rate` names the endpoint's limiter; the others
# (`global-rate`, `global-concurrency`) the account's.
REASON_HEADER = "stripe-rate-limited-reason"
# A 429 `lock_timeout` is another request holding the object (Stripe's object lock), not a rate limit:
# it shrinks no budget, and the call tries again after a short wait that doubles each time.
LOCK_TIMEOUT = "lock_timeout"
LOCK_RETRY_SECONDS = 0.05
# Stripe keeps idempotency keys for 24 hours; stay clear of the edge.
IDEMPOTENCY_WINDOW = timedelta(hours=23)
EVENTS_ENDPOINT = "GET /v1/events"


class HandlerClass(Parses, Protocol):
    """A row of the table: the handler's class parses events alone; bound to the connector, it calls."""

    def __call__(self, conn: StripeConnector) -> KindHandler: ...


# One row per kind this connector syncs: the kind's module holds its calls, fields and events.
HANDLERS: tuple[HandlerClass, ...] = (customers.Customers, invoices.Invoices)
KINDS = tuple(h.kind for h in HANDLERS)
EVENTS = EventTable(HANDLERS)


class StripeConnector(Dispatch[KindHandler]):
    system = SYSTEM
    kinds = KINDS
    webhooks = True
    polls = True  # the Events API: the safety net for webhooks (INBOUND_MODE)
    batch_writes = False  # Stripe has no batch writes
    max_in_flight: int | None = None  # the shared rate limiter paces calls; the engine's setting bounds them
    idempotency_window = IDEMPOTENCY_WINDOW
    # The kinds whose event's `data.object` (the object as it was at the event) may stand for a read of it
    # when it is the newest (sync/plan/inbound.py `newest_state`). Invoices read: an import from an invoice
    # deleted since calls it back in vain, and their events may carry a first page of lines only.
    event_objects = frozenset({"customer"})

    def __init__(self, client: stripe.StripeClient, *, limiter: EndpointLimiter, webhook_secrets: list[str],
                 livemode: bool, tolerance: int = 300) -> None:
        self.client = client
        self.limiter = limiter
        self.webhook_secrets = webhook_secrets
        self.livemode = livemode
        self.tolerance = tolerance
        self.handlers: dict[str, KindHandler] = {h.kind: h(self) for h in HANDLERS}

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeConnector:
        base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
        client = stripe.StripeClient(
            settings.stripe_key() or "sk_test_unset",
            base_addresses=base,  # type: ignore[arg-type]
            max_network_retries=0,  # we retry ourselves, with durable scheduling
            http_client=http_client(settings.stripe_timeout_seconds),
        )
        return cls(client, limiter=limiter_for(settings), webhook_secrets=settings.webhook_secrets(),
                   livemode=settings.stripe_livemode(), tolerance=settings.webhook_tolerance_seconds)

    # -- calls -------------------------------------------------------------------------------

    async def request(self, op: str, endpoint: str, *ids: str, idempotency_key: str | None = None,
                      **params: Any) -> tuple[dict[str, Any], Mapping[str, str]]:
        """One call to `endpoint` (`GET /v1/customers/{id}`: its method, and its path with `ids` in its
        `{id}`s) through the SDK's `raw_request_async`: the answer as a dict, and its headers.

        The SDK still encodes, authenticates and raises its own errors; we skip the StripeObject tree
        (a third of the CPU of a call: bench/README.md, "HTTP clients").
        """
        if idempotency_key is not None:
            params["idempotency_key"] = idempotency_key
        method, _, template = endpoint.partition(" ")
        response = await self.call(op, endpoint, self.client.raw_request_async, method.lower(),
                                   fill(template, ids), **params)
        return response.data, response.headers

    async def call(self, op: str, endpoint: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One Stripe call (an SDK coroutine) to `endpoint` under its own and the account's shared limits.

        A 429 shrinks the limit Stripe says it hit, the endpoint's or the account's (every worker slows
        down), and the call waits its turn again: 429s are never a record's failure. A `lock_timeout`
        429 shrinks nothing (see LOCK_TIMEOUT).
        """
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            await self.limiter.acquire(endpoint=endpoint)
            try:
                result = await fn(*args, **kwargs)
                metrics.STRIPE_CALLS.labels(op=op, status="200").inc()
                return result
            except stripe.RateLimitError as exc:
                metrics.STRIPE_CALLS.labels(op=op, status="429").inc()
                if attempt == RATE_LIMIT_RETRIES:
                    raise _translate(exc)
                if _code(exc) == LOCK_TIMEOUT:
                    await asyncio.sleep(LOCK_RETRY_SECONDS * 2 ** attempt)
                else:
                    await self.limiter.rate_limited(_retry_after(exc), endpoint=_limited_endpoint(exc, endpoint))
            except stripe.StripeError as exc:
                metrics.STRIPE_CALLS.labels(op=op, status=str(exc.http_status or "error")).inc()
                raise _translate(exc)
            except Exception as exc:  # client failures the SDK did not wrap
                metrics.STRIPE_CALLS.labels(op=op, status="network").inc()
                raise ConnectorError(f"network error: {type(exc).__name__}", transient=True)
        raise AssertionError("unreachable")

    # -- inbound -----------------------------------------------------------------------------

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> InboundEvent | None:
        signature = headers.get("stripe-signature")
        if not signature:
            raise WebhookRejected("missing Stripe-Signature header")
        if not self.webhook_secrets:
            # An empty secret verifies against an empty key, which anyone can forge.
            raise WebhookRejected("no webhook secret configured")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise WebhookRejected("body is not UTF-8")
        _verify_any(text, signature, self.webhook_secrets, self.tolerance)
        try:
            payload = json.loads(text)
        except ValueError:
            raise WebhookRejected("body is not JSON")
        if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
            raise WebhookRejected("body is not a Stripe event")
        if bool(payload.get("livemode")) != self.livemode:
            raise WebhookRejected("livemode of the event does not match the API key's mode")
        return event_from_payload(payload)

    async def poll_events(self, cursor: str | None) -> tuple[list[InboundEvent], str | None]:
        """Events newer than `cursor`, oldest first. Without a cursor, start from now."""
        if cursor is None:
            latest, _ = await self.request("events", EVENTS_ENDPOINT, limit=1)
            data = latest.get("data") or []
            return [], (data[0]["id"] if data else "")
        collected: list[InboundEvent] = []
        while True:
            params: dict[str, Any] = {"limit": 100}
            if cursor:
                params["ending_before"] = cursor
            page, _ = await self.request("events", EVENTS_ENDPOINT, **params)
            data = page.get("data") or []
            if not data:
                return collected, cursor
            for obj in reversed(data):
                event = event_from_payload(obj)
                if event is not None:
                    collected.append(event)
            cursor = data[0]["id"]
            if not page.get("has_more"):
                return collected, cursor

    async def close(self) -> None:
        await self.limiter.close()
        try:
            await self.client._requestor._client.close_async()  # type: ignore[attr-defined,union-attr]
        except Exception:
            pass


def http_client(timeout: float) -> stripe.HTTPClient:
    """The SDK's aiohttp client: ~0.5 ms of CPU a call where its httpx client takes ~3.5 ms
    (bench/README.md, "HTTP clients"), with no cap on connections (the engine bounds calls in flight;
    aiohttp's default of 100 would silently queue the rest)."""
    import aiohttp

    return _AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=timeout))


class _AIOHTTPClient(stripe.AIOHTTPClient):
    @property
    def _session(self) -> Any:
        # Built on first use, inside the running loop, as the SDK's own is.
        if self._cached_session is None:
            import ssl

            import aiohttp

            connector = aiohttp.TCPConnector(limit=0, ssl=ssl.create_default_context(cafile=stripe.ca_bundle_path))
            self._cached_session = aiohttp.ClientSession(connector=connector)  # type: ignore[assignment]
        return self._cached_session

    async def close_async(self) -> None:
        if self._cached_session is not None:
            await self._cached_session.close()
            self._cached_session = None


def account_key(settings: Settings) -> str:
    """Names the Stripe account's shared bucket without revealing the key (a key is one account)."""
    digest = hashlib.sha256(settings.stripe_key().encode()).hexdigest()[:12]
    return f"stripe:{digest}"


def limiter_for(settings: Settings) -> EndpointLimiter:
    """`STRIPE_RATE_LIMIT_PER_SECOND` is the account's limit and `Settings.stripe_endpoint_limits` each
    endpoint's within it, shared through the database by every process using the same key; a process
    with no database keeps them to itself."""
    rate = settings.effective_stripe_rate()
    default, limits = settings.stripe_endpoint_limits()
    endpoint_rates = EndpointRates(default, limits)
    if settings.database_url:
        return SharedLimiter(asyncpg_dsn(settings.database_url), account_key(settings), rate,
                             endpoint_rates=endpoint_rates)
    return LocalLimiter(rate, endpoint_rates=endpoint_rates)


def fill(template: str, ids: tuple[str, ...]) -> str:
    """`/v1/customers/{id}` with its ids, each quoted whole (an id never adds a segment)."""
    parts = template.split("{id}")
    if len(parts) != len(ids) + 1:
        raise ValueError(f"{template} takes {len(parts) - 1} ids, not {len(ids)}")
    return parts[0] + "".join(quote(i, safe="") + rest for i, rest in zip(ids, parts[1:], strict=True))


def _limited_endpoint(exc: stripe.StripeError, endpoint: str) -> str | None:
    """The endpoint whose limiter refused, when Stripe says so; None: the account's."""
    reason = _header(exc, REASON_HEADER) or ""
    return endpoint if reason.lower().startswith("endpoint") else None


def _header(exc: stripe.StripeError, name: str) -> str | None:
    """A header of the error's answer, whatever its case (`name` in lower case)."""
    return next((v for k, v in (exc.headers or {}).items() if k.lower() == name), None)


def _code(exc: stripe.StripeError) -> str | None:
    """The error's code: the SDK sets `code` on some errors only (not on a 429), the body has it always."""
    return exc.code or (exc.error.code if exc.error is not None else None)


def _retry_after(exc: stripe.StripeError) -> float | None:
    raw = _header(exc, "retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None  # an HTTP date: rare from APIs, and our own backoff covers it


def _verify_any(text: str, signature: str, secrets: list[str], tolerance: int) -> None:
    reason = "signature does not match"
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, signature, secret, tolerance)
            return
        except stripe.SignatureVerificationError as exc:
            reason = _safe_reason(str(exc.user_message or exc))
    raise WebhookRejected(reason)


def _safe_reason(message: str) -> str:
    if "tolerance" in message.lower():
        return "timestamp outside the tolerance zone"
    if "extract" in message.lower():
        return "malformed Stripe-Signature header"
    return "signature does not match"


def event_from_payload(payload: Mapping[str, Any]) -> InboundEvent | None:
    """The event, parsed by the handler of its type; None for a type we do not sync."""
    return EVENTS.event(payload)


def _translate(exc: stripe.StripeError) -> ConnectorError:
    status = exc.http_status
    code = getattr(exc, "code", None)
    message = f"stripe {status}: {exc.user_message or type(exc).__name__}"
    if isinstance(exc, stripe.RateLimitError) and _code(exc) == LOCK_TIMEOUT:
        return ConnectorError(message, transient=True, status=429, code=LOCK_TIMEOUT)  # contention, not a limit
    if isinstance(exc, stripe.RateLimitError):
        return ConnectorError(message, transient=True, status=429, code="rate_limit", rate_limited=True,
                              retry_after=_retry_after(exc))
    if isinstance(exc, stripe.IdempotencyError):
        return ConnectorError(message, transient=False, status=status, code="idempotency_error")
    if isinstance(exc, stripe.APIConnectionError):
        return ConnectorError(f"stripe connection error: {type(exc).__name__}", transient=True)
    if status == 404:
        return NotFound(message, param=getattr(exc, "param", None))
    transient = status is None or status >= 500 or status in (409, 429)
    return ConnectorError(message, transient=transient, status=status, code=code, retry_after=_retry_after(exc))
