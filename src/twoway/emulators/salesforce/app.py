"""ASGI app of the Salesforce emulator: the REST API, the token endpoint, control endpoints, a page."""

from __future__ import annotations

import json
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
from twoway.emulators.salesforce import api, auth, page, records
from twoway.emulators.salesforce.config import SalesforceConfig
from twoway.emulators.salesforce.core import Emulator
from twoway.emulators.salesforce.errors import SfError

__all__ = ["SalesforceConfig", "create_app", "run"]
UI_USER = "someone@twoway.test"
_METHODS = ["GET", "POST", "PATCH", "DELETE", "PUT"]


def create_app(config: SalesforceConfig | None = None) -> Starlette:
    emu = Emulator(config or SalesforceConfig())

    async def data(request: Request) -> Response:
        return await api.handle(emu, request)

    async def list_versions(request: Request) -> Response:
        return JSONResponse(api.versions(str(request.base_url)))

    async def token(request: Request) -> Response:
        try:
            answer = auth.token(emu.store, emu.config, await request.body(), request.headers.get("authorization"),
                                _instance_url(request))
        except auth.OAuthError as exc:
            return JSONResponse(exc.body, exc.status)
        return JSONResponse(answer)

    routes = [
        Route("/services/data", list_versions, methods=["GET"]),
        Route("/services/data/", list_versions, methods=["GET"]),
        Route("/services/data/{version}", data, methods=_METHODS),
        Route("/services/data/{version}/{rest:path}", data, methods=_METHODS),
        Route("/services/oauth2/token", token, methods=["POST"]),
        *_control_routes(emu),
        *_ui_routes(emu),
    ]
    return emulator_app(emu, routes)


def _instance_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ValueError("body must be JSON")
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def _control_routes(emu: Emulator) -> list[Route]:
    def guarded(fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def wrapper(request: Request) -> Response:
            try:
                return JSONResponse(await fn(request))
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return wrapper

    async def get_faults(_: Request) -> Any:
        return emu.faults.as_dict()

    async def set_faults(request: Request) -> Any:
        emu.faults.merge(await _json(request))
        return emu.faults.as_dict()

    async def reset(_: Request) -> Any:
        emu.reset()
        return {"reset": True}

    async def stats(_: Request) -> Any:
        return emu.stats_body()

    async def issue_token(request: Request) -> Any:
        """Act as another user: a token for any username (a person editing in Salesforce)."""
        body = await _json(request)
        username = body.get("username") or UI_USER
        if not isinstance(username, str) or "@" not in username:
            raise ValueError("username must look like an email address")
        ttl = body.get("ttl_seconds", emu.config.token_ttl_seconds)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
            raise ValueError("ttl_seconds must be a positive number")
        user = emu.store.user(username)
        return {**auth.issue(emu.store, user, _instance_url(request), float(ttl)), "user_id": user["Id"]}

    async def expire_tokens(_: Request) -> Any:
        emu.store.tokens.clear()
        emu.store.dirty = True
        return {"expired": True}

    async def clock(request: Request) -> Any:
        body = await _json(request)
        advance = body.get("advance_seconds", 0)
        if isinstance(advance, bool) or not isinstance(advance, int | float) or advance < 0:
            raise ValueError("advance_seconds must be a number >= 0 (the clock only moves forward)")
        emu.store.clock_offset_ms += int(advance * 1000)
        emu.store.dirty = True
        return {"now": emu.store.now_ms(), "offset_seconds": emu.store.clock_offset_ms / 1000}

    async def limits(request: Request) -> Any:
        body = await _json(request) if request.method == "POST" else {}
        for name in ("daily_api_requests", "used"):
            value = body.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an integer >= 0")
        store = emu.store
        store.usage_now()
        if body.get("daily_api_requests") is not None:
            store.daily_limit = body["daily_api_requests"]
        if body.get("used") is not None:
            store.usage = body["used"]
        store.dirty = True
        used, limit = store.usage_now()
        return {"daily_api_requests": limit, "used": used}

    async def hard_delete(request: Request) -> Any:
        body = await _json(request)
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("ids must be a list of record ids")
        gone = []
        for ident in ids:
            try:
                record = records.get_any(emu.store, ident)
            except SfError:
                continue
            emu.store.drop(record["Id"])
            gone.append(record["Id"])
        return {"hard_deleted": gone}

    async def accounts(_: Request) -> Any:
        return [records.render(r) for r in emu.store.records.values()]

    return [
        Route("/_emulator/faults", guarded(get_faults), methods=["GET"]),
        Route("/_emulator/faults", guarded(set_faults), methods=["POST"]),
        Route("/_emulator/reset", guarded(reset), methods=["POST"]),
        Route("/_emulator/stats", guarded(stats), methods=["GET"]),
        Route("/_emulator/token", guarded(issue_token), methods=["POST"]),
        Route("/_emulator/expire_tokens", guarded(expire_tokens), methods=["POST"]),
        Route("/_emulator/clock", guarded(clock), methods=["POST"]),
        Route("/_emulator/limits", guarded(limits), methods=["GET", "POST"]),
        Route("/_emulator/hard_delete", guarded(hard_delete), methods=["POST"]),
        Route("/_emulator/accounts", guarded(accounts), methods=["GET"]),
    ]


def _ui_routes(emu: Emulator) -> list[Route]:
    """Page forms; they call the same functions as the API, as a person (not the integration user)."""

    def user_id() -> str:
        return str(emu.store.user(UI_USER)["Id"])

    async def home(request: Request) -> Response:
        return HTMLResponse(page.render(emu.store, request.query_params.get("error")))

    async def create(request: Request) -> Response:
        form = _fields(await request.body())
        return _apply(lambda: records.create(emu.store, form, user_id(), emu.faults))

    async def update(request: Request) -> Response:
        form = _fields(await request.body())
        ident = request.path_params["id"]
        return _apply(lambda: records.update(emu.store, ident, form, user_id(), emu.faults))

    async def delete(request: Request) -> Response:
        ident = request.path_params["id"]
        return _apply(lambda: records.delete(emu.store, ident, user_id()))

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
