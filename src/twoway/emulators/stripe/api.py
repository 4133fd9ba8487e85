"""The `/v1` pipeline: auth and the account acted on (accounts.py), rate limiters (limits.py), request faults,
routing, idempotency, execution, counters."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from twoway.emulators.stripe import (
    customers,
    endpoints,
    events,
    invoiceitems,
    invoicelists,
    invoices,
    lines,
    locks,
    search,
)
from twoway.emulators.stripe.accounts import Account
from twoway.emulators.stripe.core import Emulator
from twoway.emulators.stripe.errors import StripeError, bad_api_key, no_api_key
from twoway.emulators.stripe.forms import parse_form
from twoway.emulators.stripe.idempotency import Saved
from twoway.emulators.stripe.ids import rand_id
from twoway.emulators.stripe.state import API_VERSION, Obj, Origin, Store

_KEY_PREFIXES = ("sk_test_", "sk_live_", "rk_")
_LIVE_PREFIXES = ("sk_live_", "rk_live_")


@dataclass(frozen=True, slots=True)
class Call:
    params: Obj
    ident: str
    origin: Origin
    account: Account

    @property
    def store(self) -> Store:
        return self.account.store


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: the API key and the account it acts on."""

    api_key: str
    account: Account

    @property
    def scope(self) -> str:
        """Idempotency keys are the key's and the account's: one key can act on many accounts (Connect)."""
        return f"{self.api_key}|{self.account.id}"


Handler = Callable[[Emulator, Call], Obj]


@dataclass(frozen=True, slots=True)
class Route:
    label: str  # the stats key, e.g. "POST /v1/customers/{id}"
    handler: Handler
    write: bool  # counts towards stats["writes"] when it succeeds


def _reject(emu: Emulator) -> Any:
    return emu.faults.reject_regex


_TABLE: dict[tuple[str, str], tuple[Handler, bool]] = {
    ("POST", "customers"): (lambda e, c: customers.create(c.store, c.params, c.origin, _reject(e)), True),
    ("GET", "customers"): (lambda e, c: customers.list_customers(c.store, c.params), False),
    ("GET", "customers/search"): (lambda e, c: search.search_customers(c.store, c.params), False),
    ("GET", "customers/{id}"): (lambda e, c: customers.retrieve(c.store, c.ident), False),
    ("POST", "customers/{id}"): (
        lambda e, c: customers.update(c.store, c.ident, c.params, c.origin, _reject(e)),
        True,
    ),
    ("DELETE", "customers/{id}"): (lambda e, c: customers.delete(c.store, c.ident, c.origin), True),
    ("POST", "invoices"): (lambda e, c: invoices.create(c.store, c.params, c.origin, _reject(e)), True),
    ("GET", "invoices"): (lambda e, c: invoicelists.list_invoices(c.store, c.params), False),
    ("GET", "invoices/search"): (lambda e, c: invoicelists.search_invoices(c.store, c.params), False),
    ("GET", "invoices/{id}"): (lambda e, c: invoices.retrieve(c.store, c.ident), False),
    ("POST", "invoices/{id}"): (lambda e, c: invoices.update(c.store, c.ident, c.params, c.origin, _reject(e)), True),
    ("DELETE", "invoices/{id}"): (lambda e, c: invoices.delete(c.store, c.ident, c.origin), True),
    ("POST", "invoices/{id}/finalize"): (lambda e, c: invoices.finalize(c.store, c.ident, c.params, c.origin), True),
    ("POST", "invoices/{id}/pay"): (lambda e, c: invoices.pay(c.store, c.ident, c.params, c.origin), True),
    ("POST", "invoices/{id}/send"): (lambda e, c: invoices.send(c.store, c.ident, c.params, c.origin), True),
    ("POST", "invoices/{id}/void"): (lambda e, c: invoices.void(c.store, c.ident, c.params, c.origin), True),
    ("POST", "invoices/{id}/mark_uncollectible"): (
        lambda e, c: invoices.mark_uncollectible(c.store, c.ident, c.params, c.origin),
        True,
    ),
    ("GET", "invoices/{id}/lines"): (lambda e, c: invoicelists.list_lines(c.store, c.ident, c.params), False),
    ("POST", "invoices/{id}/lines/{id}"): (
        lambda e, c: lines.update_line(c.store, c.ident, c.params, c.origin, _reject(e)),
        True,
    ),
    ("POST", "invoices/{id}/add_lines"): (
        lambda e, c: lines.add_lines(c.store, c.ident, c.params, c.origin, _reject(e)),
        True,
    ),
    ("POST", "invoices/{id}/update_lines"): (
        lambda e, c: lines.update_lines(c.store, c.ident, c.params, c.origin, _reject(e)),
        True,
    ),
    ("POST", "invoices/{id}/remove_lines"): (
        lambda e, c: lines.remove_lines(c.store, c.ident, c.params, c.origin),
        True,
    ),
    ("POST", "invoiceitems"): (lambda e, c: invoiceitems.create(c.store, c.params, c.origin, _reject(e)), True),
    ("GET", "invoiceitems"): (lambda e, c: invoiceitems.list_items(c.store, c.params), False),
    ("GET", "invoiceitems/{id}"): (lambda e, c: invoiceitems.retrieve(c.store, c.ident), False),
    ("POST", "invoiceitems/{id}"): (
        lambda e, c: invoiceitems.update(c.store, c.ident, c.params, c.origin, _reject(e)),
        True,
    ),
    ("DELETE", "invoiceitems/{id}"): (lambda e, c: invoiceitems.delete(c.store, c.ident, c.origin), True),
    ("GET", "account"): (lambda e, c: _account(c.account), False),
    ("GET", "events"): (lambda e, c: events.list_events(c.store, c.params), False),
    ("GET", "events/{id}"): (lambda e, c: events.retrieve(c.store, c.ident), False),
    ("POST", "webhook_endpoints"): (lambda e, c: endpoints.create(c.store, c.params, c.origin), False),
    ("GET", "webhook_endpoints"): (lambda e, c: endpoints.list_endpoints(c.store, c.params), False),
    ("GET", "webhook_endpoints/{id}"): (lambda e, c: endpoints.retrieve(c.store, c.ident), False),
    ("POST", "webhook_endpoints/{id}"): (lambda e, c: endpoints.update(c.store, c.ident, c.params), False),
    ("DELETE", "webhook_endpoints/{id}"): (lambda e, c: endpoints.delete(c.store, c.ident), False),
}
ROUTES = {key: Route(f"{key[0]} /v1/{key[1]}", h, w) for key, (h, w) in _TABLE.items()}


def match(method: str, path: str) -> tuple[Route | None, str]:
    rest = path[4:].strip("/")  # drop "/v1/"
    route = ROUTES.get((method, rest))
    if route is not None:
        return route, ""
    parts = rest.split("/")
    if len(parts) in (2, 3) and all(parts):
        # `invoices/in_123` or `invoices/in_123/finalize`: the id is always the second segment.
        pattern = "/".join([parts[0], "{id}", *parts[2:]])
        return ROUTES.get((method, pattern)), parts[1]
    if len(parts) == 4 and all(parts):
        # `invoices/in_123/lines/il_456`: both ids travel as "in_123/il_456".
        pattern = f"{parts[0]}/{{id}}/{parts[2]}/{{id}}"
        return ROUTES.get((method, pattern)), f"{parts[1]}/{parts[3]}"
    return None, ""


async def handle(emu: Emulator, request: Request) -> Response:
    method, path = request.method, request.url.path
    route, ident = match(method, path)
    label = route.label if route else f"{method} /v1/(unrecognized)"
    response = await _run(emu, request, route, ident, label)
    emu.stats.count(label, response.status_code)
    return response


async def _run(emu: Emulator, request: Request, route: Route | None, ident: str, label: str) -> Response:
    request_id = rand_id("req_")
    try:
        api_key = authenticate(request.headers.get("authorization"))
        account = emu.accounts.resolve(api_key, request.headers.get("stripe-account"))
    except StripeError as exc:
        return _error(exc, request_id)
    # Request faults strike before execution, so nothing is saved under an idempotency key.
    live_key = api_key.startswith(_LIVE_PREFIXES)
    refusal = emu.limiters.admit(emu.faults, route.label if route else None, live_key, account.id)
    if refusal is not None:
        return _error(_rate_limit_error(), request_id, refusal.headers())
    emu.stats.admitted(label)
    try:
        return await _admitted(emu, request, route, ident, Caller(api_key, account), request_id)
    finally:
        emu.limiters.release(live_key, account.id)


async def _admitted(emu: Emulator, request: Request, route: Route | None, ident: str, caller: Caller,
                    request_id: str) -> Response:
    faults = emu.faults
    injected = faults.injected_error()
    if injected is not None:
        return _error(injected, request_id, {"Stripe-Should-Retry": "true"})
    raw = await request.body() if request.method == "POST" else b""
    held = None
    if faults.invoice_lock_timeout and route is not None and route.write:
        held = locks.invoice_of(caller.account.store, route.label, ident, raw)
        if held is not None:
            if held in emu.invoice_locks:
                return _error(locks.lock_timeout(), request_id, {"Stripe-Should-Retry": "true"})
            emu.invoice_locks.add(held)
    try:
        delay = faults.latency_seconds()
        if delay:
            await asyncio.sleep(delay)
        if route is None:
            return _error(_unrecognized(request.method, request.url.path), request_id)
        response = _execute(emu, request, route, ident, raw, caller, request_id)
        if faults.response_delay_ms > 0 and route.write:
            await asyncio.sleep(faults.response_delay_ms / 1000)
        return response
    finally:
        if held is not None:
            emu.invoice_locks.discard(held)


def _execute(
    emu: Emulator, request: Request, route: Route, ident: str, raw: bytes, caller: Caller, request_id: str
) -> Response:
    # No await from here on: the lookup-execute-save sequence is atomic on the event
    # loop, so concurrent requests with one idempotency key simply replay in turn.
    key = request.headers.get("idempotency-key") if request.method == "POST" else None
    fingerprint: tuple[object, ...] = ()
    if key:
        fingerprint = (route.label, ident, tuple(sorted(parse_qsl(raw.decode(errors="replace"), True))))
        saved = emu.idempotency.get(caller.scope, key)
        if saved is not None:
            return _replay(saved, fingerprint, key, request_id)
    origin = Origin(request_id, key, caller.api_key.startswith(_LIVE_PREFIXES))
    try:
        params = parse_form(request.url.query)
        if raw:
            params.update(parse_form(raw))
        obj = route.handler(emu, Call(params, ident, origin, caller.account))
        status, body, save = 200, json.dumps(obj).encode(), True
    except StripeError as exc:
        status, body, save = exc.status, json.dumps(exc.body(request_id)).encode(), exc.save
    if key and save:
        emu.idempotency.put(caller.scope, key, Saved(fingerprint, status, body, request_id, time.time()))
    if status == 200 and route.write:
        emu.stats.writes += 1
    headers = {"Idempotency-Key": key} if key else None
    return _response(body, status, request_id, headers)


def _replay(saved: Saved, fingerprint: tuple[object, ...], key: str, request_id: str) -> Response:
    if saved.fingerprint != fingerprint:
        message = (
            "Keys for idempotent requests can only be used with the same parameters they were first "
            f"used with. Try using a key other than '{key}' if you meant to execute a different request."
        )
        return _error(StripeError(400, message, type_="idempotency_error"), request_id)
    headers = {"Idempotent-Replayed": "true", "Original-Request": saved.request_id, "Idempotency-Key": key}
    return _response(saved.body, saved.status, request_id, headers)


def authenticate(header: str | None) -> str:
    """The API key from Bearer or Basic auth (Stripe accepts the key as Basic username)."""
    if not header:
        raise no_api_key()
    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "basic":
        try:
            value = base64.b64decode(value).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            raise bad_api_key(value)
    elif scheme != "bearer":
        raise no_api_key()
    if not value:
        raise no_api_key()
    if not value.startswith(_KEY_PREFIXES):
        raise bad_api_key(value)
    return value


def _account(account: Account) -> Obj:
    """`GET /v1/account`: the account the call acts on (the cheap call that checks a key)."""
    return {
        "id": account.id,
        "object": "account",
        "type": "standard",
        "created": account.created,
        "charges_enabled": True,
        "payouts_enabled": True,
        "details_submitted": True,
        "country": "US",
        "default_currency": "usd",
        "metadata": {},
    }


def _rate_limit_error() -> StripeError:
    return StripeError(
        429,
        "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
        code="rate_limit",
    )


def _unrecognized(method: str, path: str) -> StripeError:
    return StripeError(
        404,
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can "
        "help at https://support.stripe.com/.",
    )


def _error(exc: StripeError, request_id: str, extra: dict[str, str] | None = None) -> Response:
    body = json.dumps(exc.body(request_id)).encode()
    return _response(body, exc.status, request_id, extra)


def _response(body: bytes, status: int, request_id: str, extra: dict[str, str] | None = None) -> Response:
    headers = {"Request-Id": request_id, "Stripe-Version": API_VERSION}
    if extra:
        headers.update(extra)
    return Response(body, status, headers, media_type="application/json")
