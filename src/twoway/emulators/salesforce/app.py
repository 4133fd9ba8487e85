"""ASGI app of the Salesforce emulator: the REST API, the token endpoint, control endpoints (control.py), a page."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from twoway.emulators.kit import serve, tls
from twoway.emulators.kit.app import emulator_app
from twoway.emulators.salesforce import api, auth, control, page, records
from twoway.emulators.salesforce.config import SalesforceConfig
from twoway.emulators.salesforce.core import Emulator
from twoway.emulators.salesforce.errors import SfError

__all__ = ["SalesforceConfig", "create_app", "run"]
_METHODS = ["GET", "POST", "PATCH", "DELETE", "PUT"]


def create_app(config: SalesforceConfig | None = None) -> Starlette:
    emu = Emulator(config or SalesforceConfig())

    async def data(request: Request) -> Response:
        return await api.handle(emu, request)

    async def list_versions(request: Request) -> Response:
        return JSONResponse(api.versions(str(request.base_url)))

    async def token(request: Request) -> Response:
        try:
            answer = auth.token(emu.orgs, emu.config.token_ttl_seconds, await request.body(),
                                request.headers.get("authorization"), control.instance_url(request))
        except auth.OAuthError as exc:
            return JSONResponse(exc.body, exc.status)
        return JSONResponse(answer)

    routes = [
        Route("/services/data", list_versions, methods=["GET"]),
        Route("/services/data/", list_versions, methods=["GET"]),
        Route("/services/data/{version}", data, methods=_METHODS),
        Route("/services/data/{version}/{rest:path}", data, methods=_METHODS),
        Route("/services/oauth2/token", token, methods=["POST"]),
        *control.routes(emu),
        *_ui_routes(emu),
    ]
    return emulator_app(emu, routes)


def _ui_routes(emu: Emulator) -> list[Route]:
    """Page forms, on the first org; they call the same functions as the API, as a person (not the
    integration user)."""
    store = emu.orgs.default.store

    def user_id() -> str:
        return str(store.user(control.UI_USER)["Id"])

    async def home(request: Request) -> Response:
        return HTMLResponse(page.render(store, request.query_params.get("error")))

    async def create(request: Request) -> Response:
        form = _fields(await request.body())
        return _apply(lambda: records.create(store, form, user_id(), emu.faults))

    async def update(request: Request) -> Response:
        form = _fields(await request.body())
        ident = request.path_params["id"]
        return _apply(lambda: records.update(store, ident, form, user_id(), emu.faults))

    async def delete(request: Request) -> Response:
        ident = request.path_params["id"]
        return _apply(lambda: records.delete(store, ident, user_id()))

    return [
        Route("/", home, methods=["GET"]),
        Route("/_emulator/ui/accounts", create, methods=["POST"]),
        Route("/_emulator/ui/accounts/{id}", update, methods=["POST"]),
        Route("/_emulator/ui/accounts/{id}/delete", delete, methods=["POST"]),
    ]


def _fields(raw: bytes) -> dict[str, Any]:
    form = dict(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True))
    return {k: v for k, v in form.items() if k in page.EDITABLE}


def _apply(change: Callable[[], object]) -> Response:
    try:
        change()
    except SfError as exc:
        return RedirectResponse("/?error=" + quote(f"{exc.code}: {exc.message}"), status_code=303)
    return RedirectResponse("/", status_code=303)


def run(host: str = "127.0.0.1", port: int = 12112, config: SalesforceConfig | None = None,
        ca_file: str | None = None) -> None:
    """Serve until interrupted. With `tls_dir`, over https with a local CA (copied to `ca_file` if given)."""
    config = config or SalesforceConfig()
    generated = not config.client_secret
    if generated:
        config.client_secret = secrets.token_urlsafe(24)
    files = tls.ensure(config.tls_dir) if config.tls_dir else None
    if files is not None and ca_file:
        with open(ca_file, "wb") as f:
            f.write(files.ca_file.read_bytes())
    app = create_app(config)

    def announce(url: str) -> None:
        if files is not None:
            print(f"CA certificate {ca_file or files.ca_file}", flush=True)
        # A secret the caller chose stays out of the log; a generated one is shown once, or nobody knows it.
        print(f"client id {config.client_id} secret {config.client_secret if generated else '(as given)'}",
              flush=True)

    # The API sets Date from the emulator's own clock, which the control endpoints can move.
    serve.run(app, "salesforce", host, port, files, announce, date_header=False)
