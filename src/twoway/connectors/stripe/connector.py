"""The one module that talks to Stripe through the official SDK, with an injected client."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import stripe

from twoway.connectors.base import ConnectorError, ExternalRecord, InboundEvent, NotFound, WebhookRejected
from twoway.connectors.stripe import invoices, mapping
from twoway.kit import metrics
from twoway.kit.db import asyncpg_dsn
from twoway.kit.ratelimit import Limiter, SharedLimiter, TokenBucket
from twoway.settings import Settings

SYSTEM = "stripe"
KIND = "customer"
HANDLED_EVENTS = frozenset({"customer.created", "customer.updated", "customer.deleted"})
# The kinds this connector syncs; each kind other than customers lives in its own module (invoices.py).
KINDS: tuple[str, ...] = (KIND, invoices.KIND)
RATE_LIMIT_RETRIES = 6


class StripeConnector:
    system = SYSTEM

    def __init__(self, client: stripe.StripeClient, *, limiter: Limiter, webhook_secrets: list[str],
                 livemode: bool, tolerance: int = 300) -> None:
        self.client = client
        self.limiter = limiter
        self.webhook_secrets = webhook_secrets
        self.livemode = livemode
        self.tolerance = tolerance
        self.calls: dict[str, int] = {}

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

    def kinds(self) -> tuple[str, ...]:
        return KINDS

    # -- calls -------------------------------------------------------------------------------

    async def _request(self, op: str, method: str, path: str, idempotency_key: str | None = None,
                       **params: Any) -> tuple[dict[str, Any], Mapping[str, str]]:
        """One call through the SDK's `raw_request_async`: the answer as a dict, and its headers.

        The SDK still encodes, authenticates and raises its own errors; we skip the StripeObject tree
        (a third of the CPU of a call: bench/README.md, "HTTP clients").
        """
        if idempotency_key is not None:
            params["idempotency_key"] = idempotency_key
        response = await self._call(op, self.client.raw_request_async, method, path, **params)
        return response.data, response.headers

    async def _call(self, op: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One Stripe call (an SDK coroutine) under the account's shared rate limit.

        A 429 shrinks the shared limit (every worker slows down) and the call waits its turn again:
        429s are never a record's failure.
        """
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            await self.limiter.acquire()
            try:
                result = await fn(*args, **kwargs)
                metrics.STRIPE_CALLS.labels(op=op, status="200").inc()
                return result
            except stripe.RateLimitError as exc:
                metrics.STRIPE_CALLS.labels(op=op, status="429").inc()
                if attempt == RATE_LIMIT_RETRIES:
                    raise _translate(exc)
                await self.limiter.rate_limited(_retry_after(exc))
            except stripe.StripeError as exc:
                metrics.STRIPE_CALLS.labels(op=op, status=str(exc.http_status or "error")).inc()
                raise _translate(exc)
            except Exception as exc:  # client failures the SDK did not wrap
                metrics.STRIPE_CALLS.labels(op=op, status="network").inc()
                raise ConnectorError(f"network error: {type(exc).__name__}", transient=True)
        raise AssertionError("unreachable")

    async def fetch(self, kind: str, external_id: str) -> ExternalRecord:
        if kind == invoices.KIND:
            return await invoices.fetch(self, external_id)
        try:
            obj, _ = await self._request("retrieve", "get", _customer_path(external_id))
        except NotFound:
            return ExternalRecord(external_id, {}, deleted=True)
        return _record(obj)

    async def create(self, kind: str, internal_id: int, fields: Mapping[str, str],
                     idempotency_key: str) -> ExternalRecord:
        if kind == invoices.KIND:
            return await invoices.create(self, internal_id, fields, idempotency_key)
        params = {**mapping.to_stripe(fields), "metadata": {mapping.INTERNAL_ID_KEY: str(internal_id)}}
        obj, headers = await self._request("create", "post", "/v1/customers", idempotency_key, **params)
        replayed = headers.get("idempotent-replayed", "").lower() == "true"
        return dataclasses.replace(_record(obj), replayed=replayed)

    async def update(self, kind: str, external_id: str, changes: Mapping[str, str],
                     idempotency_key: str) -> ExternalRecord:
        if kind == invoices.KIND:
            return await invoices.update(self, external_id, changes, idempotency_key)
        obj, _ = await self._request("update", "post", _customer_path(external_id), idempotency_key,
                                     **mapping.to_stripe(changes))
        return _record(obj)

    async def set_internal_id(self, kind: str, external_id: str, internal_id: int,
                              idempotency_key: str) -> ExternalRecord:
        if kind == invoices.KIND:
            return await invoices.set_internal_id(self, external_id, internal_id, idempotency_key)
        obj, _ = await self._request("update", "post", _customer_path(external_id), idempotency_key,
                                     metadata={mapping.INTERNAL_ID_KEY: str(internal_id)})
        return _record(obj)

    async def delete(self, kind: str, external_id: str, idempotency_key: str) -> None:
        if kind == invoices.KIND:
            return await invoices.delete(self, external_id, idempotency_key)
        try:
            await self._request("delete", "delete", _customer_path(external_id), idempotency_key)
        except NotFound:
            return  # already gone: the goal state holds

    async def find_by_internal_id(self, kind: str, internal_id: int) -> ExternalRecord | None:
        if kind == invoices.KIND:
            return await invoices.find_by_internal_id(self, internal_id)
        query = f"metadata['{mapping.INTERNAL_ID_KEY}']:'{internal_id}'"
        result, _ = await self._request("search", "get", "/v1/customers/search", query=query, limit=10)
        found = [o for o in result.get("data") or [] if mapping.internal_id_of(o) == internal_id]
        return _record(found[0]) if found else None

    async def list_all(self, kind: str, page_size: int = 100) -> AsyncIterator[ExternalRecord]:
        if kind == invoices.KIND:
            async for found in invoices.list_all(self, page_size):
                yield found
            return
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if after:
                params["starting_after"] = after
            page, _ = await self._request("list", "get", "/v1/customers", **params)
            data = page.get("data") or []
            for obj in data:
                yield _record(obj)
            if not page.get("has_more") or not data:
                return
            after = data[-1]["id"]

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

    def snapshot(self, payload: Mapping[str, Any]) -> ExternalRecord | None:
        try:
            event = event_from_payload(payload)
        except WebhookRejected:
            return None
        return event.record if event else None

    async def poll_events(self, cursor: str | None) -> tuple[list[InboundEvent], str | None]:
        """Events newer than `cursor`, oldest first. Without a cursor, start from now."""
        if cursor is None:
            latest, _ = await self._request("events", "get", "/v1/events", limit=1)
            data = latest.get("data") or []
            return [], (data[0]["id"] if data else "")
        collected: list[InboundEvent] = []
        while True:
            params: dict[str, Any] = {"limit": 100}
            if cursor:
                params["ending_before"] = cursor
            page, _ = await self._request("events", "get", "/v1/events", **params)
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


def _customer_path(external_id: str) -> str:
    return "/v1/customers/" + quote(external_id, safe="")


def account_key(settings: Settings) -> str:
    """Names the Stripe account's shared bucket without revealing the key (a key is one account)."""
    digest = hashlib.sha256(settings.stripe_key().encode()).hexdigest()[:12]
    return f"stripe:{digest}"


def limiter_for(settings: Settings) -> Limiter:
    """`STRIPE_RATE_LIMIT_PER_SECOND` is the account's limit, shared through the database by every
    process using the same key; a process with no database keeps it to itself."""
    rate = settings.effective_stripe_rate()
    if settings.database_url:
        return SharedLimiter(asyncpg_dsn(settings.database_url), account_key(settings), rate)
    return TokenBucket(rate)


def _retry_after(exc: stripe.StripeError) -> float | None:
    headers = exc.headers or {}
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
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
    type_ = payload.get("type")
    if invoices.handles(type_) and invoices.KIND in KINDS:
        return invoices.event_from_payload(payload)
    if type_ not in HANDLED_EVENTS:
        return None
    obj = (payload.get("data") or {}).get("object") or {}
    if not isinstance(obj, Mapping) or not isinstance(obj.get("id"), str):
        raise WebhookRejected("event carries no object id")
    record = _record(obj, deleted=type_ == "customer.deleted")
    created = payload.get("created")
    when = datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None
    return InboundEvent(event_id=str(payload["id"]), type=str(type_), kind=KIND, external_id=obj["id"],
                        created=when, record=record, payload=dict(payload))


def _record(obj: Any, deleted: bool = False) -> ExternalRecord:
    data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return ExternalRecord(
        external_id=data["id"],
        fields={} if data.get("deleted") and "email" not in data else mapping.from_stripe(data),
        internal_id=mapping.internal_id_of(data),
        deleted=deleted or bool(data.get("deleted")),
    )


def _translate(exc: stripe.StripeError) -> ConnectorError:
    status = exc.http_status
    code = getattr(exc, "code", None)
    message = f"stripe {status}: {exc.user_message or type(exc).__name__}"
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
