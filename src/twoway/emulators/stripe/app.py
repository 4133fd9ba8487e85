"""ASGI app of the Stripe emulator and the uvicorn runner."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from twoway.emulators.kit import serve
from twoway.emulators.kit.app import emulator_app
from twoway.emulators.stripe import api, customers, invoicelists, invoices, page
from twoway.emulators.stripe.accounts import Account
from twoway.emulators.stripe.config import EmulatorConfig
from twoway.emulators.stripe.core import Emulator
from twoway.emulators.stripe.errors import StripeError
from twoway.emulators.stripe.forms import parse_form
from twoway.emulators.stripe.ids import rand_id
from twoway.emulators.stripe.state import Obj, Origin

__all__ = ["EmulatorConfig", "create_app", "run"]


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    emu = Emulator(config or EmulatorConfig())

    async def v1(request: Request) -> Response:
        return await api.handle(emu, request)

    routes = [
        Route("/v1/{rest:path}", v1, methods=["GET", "POST", "DELETE"]),
        *_admin_routes(emu),
        *_account_routes(emu),
        *_ui_routes(emu),
    ]
    return emulator_app(emu, routes)


def _admin_routes(emu: Emulator) -> list[Route]:
    async def get_faults(_: Request) -> Response:
        return JSONResponse(emu.faults.as_dict())

    async def set_faults(request: Request) -> Response:
        try:
            changes = json.loads(await request.body() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object")
            emu.faults.merge(changes)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(emu.faults.as_dict())

    async def reset(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        emu.reset(clear_endpoints=bool(body.get("endpoints")), drop_accounts=bool(body.get("accounts")))
        return JSONResponse({"reset": True})

    async def stats(_: Request) -> Response:
        return JSONResponse(emu.stats_body())

    async def all_customers(request: Request) -> Response:
        account = _account_of(emu, request.query_params.get("account"))
        if account is None:
            return _no_account()
        return JSONResponse(list(account.store.customers.values()))

    async def all_invoices(request: Request) -> Response:
        account = _account_of(emu, request.query_params.get("account"))
        if account is None:
            return _no_account()
        return JSONResponse(invoicelists.dump(account.store))

    return [
        Route("/_emulator/faults", get_faults, methods=["GET"]),
        Route("/_emulator/faults", set_faults, methods=["POST"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/_emulator/stats", stats, methods=["GET"]),
        Route("/_emulator/customers", all_customers, methods=["GET"]),
        Route("/_emulator/invoices", all_invoices, methods=["GET"]),
    ]


def _account_of(emu: Emulator, ident: str | None) -> Account | None:
    """The account `ident` names; none named: the platform."""
    return emu.accounts.platform if ident is None else emu.accounts.by_id.get(ident)


def _no_account() -> Response:
    return JSONResponse({"error": "no such account"}, status_code=404)


def _account_routes(emu: Emulator) -> list[Route]:
    """`/_emulator/accounts`: make accounts, and break or mend their access the ways Stripe's can break."""
    accounts = emu.accounts

    async def create(_: Request) -> Response:
        account, key = accounts.create()
        return JSONResponse({"id": account.id, "secret_key": key})

    async def listing(_: Request) -> Response:
        return JSONResponse([a.summary(a is accounts.platform) for a in accounts])

    def change(verb: Callable[[Account], Obj]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            account = accounts.by_id.get(request.path_params["id"])
            if account is None:
                return _no_account()
            if account is accounts.platform:
                return JSONResponse({"error": "the platform's keys and access cannot change"}, status_code=400)
            return JSONResponse({"id": account.id, **verb(account)})

        return endpoint

    def revoke(account: Account) -> Obj:
        accounts.revoke_keys(account)
        return {"revoked": True}

    def deauthorize(account: Account) -> Obj:
        return {"deauthorized": True, "event": accounts.deauthorize(account)["id"]}

    def authorize(account: Account) -> Obj:
        accounts.authorize(account)
        return {"deauthorized": False}

    return [
        Route("/_emulator/accounts", create, methods=["POST"]),
        Route("/_emulator/accounts", listing, methods=["GET"]),
        Route("/_emulator/accounts/{id}/revoke_keys", change(revoke), methods=["POST"]),
        Route("/_emulator/accounts/{id}/roll_keys", change(lambda a: {"secret_key": accounts.roll_keys(a)}),
              methods=["POST"]),
        Route("/_emulator/accounts/{id}/deauthorize", change(deauthorize), methods=["POST"]),
        Route("/_emulator/accounts/{id}/authorize", change(authorize), methods=["POST"]),
    ]


def _ui_routes(emu: Emulator) -> list[Route]:
    """Dashboard forms; they call the same functions as the API, so events and webhooks fire."""

    async def home(request: Request) -> Response:
        return HTMLResponse(page.render(emu.accounts, request.query_params.get("error")))

    async def create(request: Request) -> Response:
        form = _fields(await request.body())
        return _apply(lambda o: customers.create(emu.store, form, o, emu.faults.reject_regex))

    async def update(request: Request) -> Response:
        form = _fields(await request.body())
        ident = request.path_params["id"]
        return _apply(lambda o: customers.update(emu.store, ident, form, o, emu.faults.reject_regex))

    async def delete(request: Request) -> Response:
        ident = request.path_params["id"]
        return _apply(lambda o: customers.delete(emu.store, ident, o))

    async def invoice_action(request: Request) -> Response:
        ident, verb = request.path_params["id"], request.path_params["verb"]
        store = emu.store
        calls: dict[str, Callable[[Origin], object]] = {
            "finalize": lambda o: invoices.finalize(store, ident, {}, o),
            "pay": lambda o: invoices.pay(store, ident, {"paid_out_of_band": "true"}, o),
            "void": lambda o: invoices.void(store, ident, {}, o),
            "mark_uncollectible": lambda o: invoices.mark_uncollectible(store, ident, {}, o),
            "delete": lambda o: invoices.delete(store, ident, o),
        }
        call = calls.get(verb)
        if call is None:
            return RedirectResponse("/?error=" + quote(f"unknown invoice action {verb}"), status_code=303)
        return _apply(call)

    return [
        Route("/", home, methods=["GET"]),
        Route("/_emulator/ui/invoices/{id}/{verb}", invoice_action, methods=["POST"]),
        Route("/_emulator/ui/customers", create, methods=["POST"]),
        Route("/_emulator/ui/customers/{id}", update, methods=["POST"]),
        Route("/_emulator/ui/customers/{id}/delete", delete, methods=["POST"]),
    ]


def _fields(raw: bytes) -> dict[str, object]:
    return {k: v for k, v in parse_form(raw).items() if k in ("name", "email")}


def _apply(change: Callable[[Origin], object]) -> Response:
    try:
        change(Origin(rand_id("req_")))
    except StripeError as exc:
        return RedirectResponse("/?error=" + quote(exc.message), status_code=303)
    return RedirectResponse("/", status_code=303)


def run(host: str = "127.0.0.1", port: int = 12111, config: EmulatorConfig | None = None) -> None:
    """Serve until interrupted; prints the readiness line once the socket is bound."""
    app = create_app(config)

    def announce(_url: str) -> None:
        endpoint = app.state.emulator.startup_endpoint
        if endpoint is not None:
            # A secret the caller chose stays out of the log; a generated one is shown once, or nobody knows it.
            given = app.state.emulator.config.webhook_secret is not None
            secret = "(as given)" if given else endpoint["secret"]
            print(f"webhook endpoint {endpoint['id']} -> {endpoint['url']} secret {secret}", flush=True)

    serve.run(app, "stripe", host, port, after_start=announce)
