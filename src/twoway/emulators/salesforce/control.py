"""Control endpoints under `/_emulator`: what a test or a demo does to the instance from outside.

Instance-wide: faults, reset, clock, and the orgs (`POST /_emulator/orgs` makes one). Per org: token,
expire_tokens, limits, hard_delete, accounts, stats; each at `/_emulator/<name>` for the first org (as
before there were several) and at `/_emulator/orgs/{org_id}/<name>` for any org.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from twoway.emulators.salesforce import auth, records
from twoway.emulators.salesforce.core import Emulator
from twoway.emulators.salesforce.errors import SfError
from twoway.emulators.salesforce.orgs import Org

UI_USER = "someone@twoway.test"

Handler = Callable[[Request], Awaitable[Any]]
OrgHandler = Callable[[Org, Request], Awaitable[Any]]


def instance_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ValueError("body must be JSON")
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def _guarded(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def wrapper(request: Request) -> Response:
        try:
            return JSONResponse(await fn(request))
        except LookupError as exc:
            return JSONResponse({"error": str(exc.args[0] if exc.args else exc)}, status_code=404)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
    return wrapper


def routes(emu: Emulator) -> list[Route]:
    def org_of(request: Request) -> Org:
        ident = request.path_params.get("org_id")
        if ident is None:
            return emu.orgs.default
        org = emu.orgs.get(ident)
        if org is None:
            raise LookupError(f"no org {ident}")
        return org

    def per_org(fn: OrgHandler) -> Handler:
        async def bound(request: Request) -> Any:
            return await fn(org_of(request), request)
        return bound

    out = [Route(path, _guarded(fn), methods=methods) for path, fn, methods in _instance(emu)]
    for name, fn, methods in _per_org(emu):
        handler = _guarded(per_org(fn))
        out.append(Route(f"/_emulator/{name}", handler, methods=methods))
        out.append(Route(f"/_emulator/orgs/{{org_id}}/{name}", handler, methods=methods))
    out.append(Route("/_emulator/orgs/{org_id}", _guarded(per_org(_describe)), methods=["GET"]))
    return out


async def _describe(org: Org, _: Request) -> Any:
    return org.describe()


def _instance(emu: Emulator) -> list[tuple[str, Handler, list[str]]]:
    async def get_faults(_: Request) -> Any:
        return emu.faults.as_dict()

    async def set_faults(request: Request) -> Any:
        emu.faults.merge(await _json(request))
        return emu.faults.as_dict()

    async def reset(_: Request) -> Any:
        emu.reset()
        return {"reset": True}

    async def clock(request: Request) -> Any:
        body = await _json(request)
        advance = body.get("advance_seconds", 0)
        if isinstance(advance, bool) or not isinstance(advance, int | float) or advance < 0:
            raise ValueError("advance_seconds must be a number >= 0 (the clock only moves forward)")
        emu.orgs.clock.offset_ms += int(advance * 1000)
        emu.orgs.dirty = True
        return {"now": emu.orgs.clock.now_ms(), "offset_seconds": emu.orgs.clock.offset_ms / 1000}

    async def create_org(request: Request) -> Any:
        """A new org on this instance: its OAuth client (shown here only) and a person's token in it."""
        org = emu.orgs.create(await _json(request))
        url = instance_url(request)
        person = auth.issue(org, org.store.user(UI_USER), url, emu.config.token_ttl_seconds)
        return {**org.describe(), "login_url": url, "instance_url": url, "client_secret": org.client_secret,
                "person_token": person["access_token"]}

    async def list_orgs(_: Request) -> Any:
        return [org.describe() for org in emu.orgs.all()]

    return [
        ("/_emulator/faults", get_faults, ["GET"]),
        ("/_emulator/faults", set_faults, ["POST"]),
        ("/_emulator/reset", reset, ["POST"]),
        ("/_emulator/clock", clock, ["POST"]),
        ("/_emulator/orgs", create_org, ["POST"]),
        ("/_emulator/orgs", list_orgs, ["GET"]),
    ]


def _per_org(emu: Emulator) -> list[tuple[str, OrgHandler, list[str]]]:
    async def stats(org: Org, _: Request) -> Any:
        return emu.stats_body(org)

    async def issue_token(org: Org, request: Request) -> Any:
        """Act as another user: a token for any username (a person editing in Salesforce)."""
        body = await _json(request)
        username = body.get("username") or UI_USER
        if not isinstance(username, str) or "@" not in username:
            raise ValueError("username must look like an email address")
        ttl = body.get("ttl_seconds", emu.config.token_ttl_seconds)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
            raise ValueError("ttl_seconds must be a positive number")
        user = org.store.user(username)
        return {**auth.issue(org, user, instance_url(request), float(ttl)), "user_id": user["Id"]}

    async def expire_tokens(org: Org, _: Request) -> Any:
        org.store.tokens.clear()
        org.store.dirty = True
        return {"expired": True}

    async def limits(org: Org, request: Request) -> Any:
        """Read or set the org's daily allowance and usage (`used` = the allowance: REQUEST_LIMIT_EXCEEDED)."""
        body = await _json(request) if request.method == "POST" else {}
        for name in ("daily_api_requests", "used"):
            value = body.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an integer >= 0")
        store = org.store
        store.usage_now()
        if body.get("daily_api_requests") is not None:
            store.daily_limit = body["daily_api_requests"]
        if body.get("used") is not None:
            store.usage = body["used"]
        store.dirty = True
        used, limit = store.usage_now()
        return {"daily_api_requests": limit, "used": used}

    async def hard_delete(org: Org, request: Request) -> Any:
        body = await _json(request)
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("ids must be a list of record ids")
        gone = []
        for ident in ids:
            try:
                record = records.get_any(org.store, ident)
            except SfError:
                continue
            org.store.drop(record["Id"])
            gone.append(record["Id"])
        return {"hard_deleted": gone}

    async def accounts(org: Org, _: Request) -> Any:
        return [records.render(r, org.store.schema) for r in org.store.records.values()]

    return [
        ("stats", stats, ["GET"]),
        ("token", issue_token, ["POST"]),
        ("expire_tokens", expire_tokens, ["POST"]),
        ("limits", limits, ["GET", "POST"]),
        ("hard_delete", hard_delete, ["POST"]),
        ("accounts", accounts, ["GET"]),
    ]
