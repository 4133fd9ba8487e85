"""Server-rendered dashboard. Protected like the API: a Bearer key, or the key given once via ?key=.

The sign-in cookie is httponly and SameSite=strict; the one state-changing form (Replay) also carries a
token derived from the signed-in key and must come from our own origin, so another site cannot post it.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from twoway.connectors import registry
from twoway.dashboard import data
from twoway.kit.auth import bearer_token, is_authorized, key_matches
from twoway.kit.db import unit_of_work
from twoway.ops.status import full_status
from twoway.sync import replay as replays

router = APIRouter(include_in_schema=False)
COOKIE = "twoway_key"
templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(default=True))


@router.get("/")
async def dashboard(request: Request) -> Response:
    key = request.query_params.get("key")
    keys: list[str] = request.app.state.api_keys
    if key and keys and key_matches(key, keys):
        # Swap the key in the URL for a cookie at once, so it does not linger in history or logs.
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, key, httponly=True, samesite="strict")
        return response
    if not is_authorized(request):
        return _page("signin.html", status_code=401)
    return _page("index.html", **await _context(request))


@router.post("/dashboard/dead-letters/{failure_id}/replay")
async def replay_dead_letter(failure_id: int, request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    if not is_authorized(request):
        return _page("signin.html", status_code=401)
    if not (hmac.compare_digest(csrf, csrf_token(request)) and _same_origin(request)):
        return HTMLResponse("<h1>403</h1><p>This form must be sent from the dashboard.</p>", status_code=403)
    replayed = False
    if 0 < failure_id < 2**63:  # a BIGINT id, or nothing to replay
        async with unit_of_work(request.app.state.sessions) as session:
            replayed = await replays.replay(session, failure_id)
    return RedirectResponse(f"/?{'replayed' if replayed else 'not_replayed'}={failure_id}", status_code=303)


def csrf_token(request: Request) -> str:
    """Bound to the credential in use: only a page that could read it (ours) can know it."""
    credential = bearer_token(request) or request.cookies.get(COOKIE, "")
    return hmac.new(credential.encode(), b"twoway-dashboard-replay", hashlib.sha256).hexdigest()


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # non-browser clients send neither; the token still has to match
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def _context(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    systems = registry.enabled_systems(settings)
    async with request.app.state.sessions() as session:
        customers = await data.customers(session, systems)
        events = await data.recent_events(session)
        dead = await data.dead_letters(session)
    context: dict[str, Any] = {
        "systems": systems, "customers": customers, "events": events, "dead": dead,
        "status": await full_status(request.app.state.sessions, settings), "csrf": csrf_token(request),
        "notice": _notice(request), "emulator": None, "emulator_base": settings.stripe_api_base,
    }
    if settings.stripe_api_base and "stripe" in systems:
        theirs = await data.emulator_customers(settings.stripe_api_base)
        context["emulator"] = data.side_by_side(customers, theirs, "stripe") if theirs is not None else False
    return context


def _notice(request: Request) -> str | None:
    params = request.query_params
    if "replayed" in params:
        return f"Dead letter {params['replayed']} sent back through the sync path."
    if "not_replayed" in params:
        return f"Dead letter {params['not_replayed']} was not replayed (already replayed or unknown)."
    return None


def _page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status_code,
                        headers={"Cache-Control": "no-store"})
