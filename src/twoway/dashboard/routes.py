"""Server-rendered dashboard. Protected like the API: a Bearer key, or the key given once via ?key=.

The sign-in cookie is httponly and SameSite=strict; the one state-changing form (Replay) also carries a
token derived from the signed-in key and must come from our own origin, so another site cannot post it.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from twoway.connectors import registry
from twoway.dashboard import charts, data
from twoway.kit import records
from twoway.kit.auth import bearer_token, is_authorized, key_matches
from twoway.kit.db import unit_of_work
from twoway.kit.deps import RecordId
from twoway.ops import status_table
from twoway.ops.status import full_status
from twoway.sync import replay as replays

router = APIRouter(include_in_schema=False)
COOKIE = "twoway_key"
templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(default=True))
# The table sizes, ages and windows read as in `twoway status`.
templates.filters.update(size=status_table.size, age=status_table.age, retention=status_table.retention)


Kind = Annotated[str, Query(max_length=50, pattern=r"^[a-z_]+$")]
Search = Annotated[str, Query(max_length=200)]
PageNo = Annotated[int, Query(ge=1, le=1_000_000)]


@router.get("/")
async def dashboard(request: Request, kind: Kind = "customer", q: Search = "", page: PageNo = 1) -> Response:
    key = request.query_params.get("key")
    keys: list[str] = request.app.state.api_keys
    if key and keys and key_matches(key, keys):
        # Swap the key in the URL for a cookie at once, so it does not linger in history or logs.
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, key, httponly=True, samesite="strict")
        return response
    return await _listing(request, "index.html", kind, q, page)


@router.get("/dashboard/live")
async def dashboard_live(request: Request, kind: Kind = "customer", q: Search = "", page: PageNo = 1) -> Response:
    """The part of the page that moves, polled by the page itself every few seconds."""
    return await _listing(request, "live.html", kind, q, page)


@router.get("/records/{kind}/{record_id}")
async def record_page(request: Request, kind: str, record_id: RecordId) -> Response:
    return await _record(request, "record.html", kind, record_id)


@router.get("/records/{kind}/{record_id}/live")
async def record_live(request: Request, kind: str, record_id: RecordId) -> Response:
    return await _record(request, "record_live.html", kind, record_id)


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


async def _listing(request: Request, template: str, kind: str, q: str, page: int) -> Response:
    """A page of one kind's records: the whole page, or the part that moves."""
    if not is_authorized(request):
        return _page("signin.html", status_code=401)
    spec = _kind(kind)
    if spec is None:
        return _page("missing.html", status_code=404, what=f"no kind of record named {kind!r}")
    return _page(template, **await _context(request, spec, q, page))


async def _record(request: Request, template: str, kind: str, record_id: int) -> Response:
    """One record: the whole page, or the part that moves."""
    if not is_authorized(request):
        return _page("signin.html", status_code=401)
    context = await _record_context(request, kind, record_id)
    if context is None:
        return _page("missing.html", status_code=404, what=f"no {kind} {record_id}")
    return _page(template, **context)


def _kind(name: str) -> records.Kind | None:
    try:
        return records.kind(name)
    except KeyError:
        return None


async def _context(request: Request, spec: records.Kind, q: str, page: int) -> dict[str, Any]:
    settings = request.app.state.settings
    systems = registry.enabled_systems(settings)
    status = await full_status(request.app.state.sessions, settings, getattr(request.app.state, "lag_reader", None))
    async with request.app.state.sessions() as session:
        listing = await data.records_page(session, spec, systems, q=q, page=page)
        events = await data.recent_events(session)
        dead = await data.dead_letters(session)
        synced, failed = await data.per_minute(session, systems)
    history = _lag_history(request)
    history.add({f"{r['system']} {r['direction']}": r["consumer_lag"] for r in status["connectors"]})
    lag = history.per_minute(synced.minutes, list(synced.lines))
    context: dict[str, Any] = {
        "systems": systems, "kind": spec, "kinds": [k.name for k in records.all_kinds()], "q": q,
        "listing": listing, "events": events, "dead": dead, "status": status,
        "charts": [charts.line_chart("chart-synced", "Synced changes per minute", synced.minutes, synced.lines),
                   charts.line_chart("chart-lag", "Consumer lag (highest each minute)", synced.minutes, lag),
                   charts.line_chart("chart-failures", "Failures per minute", failed.minutes, failed.lines)],
        "csrf": csrf_token(request), "notice": _notice(request), "emulator": None,
        "emulator_base": settings.stripe_api_base, "query": _query,
    }
    if settings.stripe_api_base and "stripe" in systems and spec.name == "customer":
        theirs = await data.emulator_customers(settings.stripe_api_base)
        context["emulator"] = data.side_by_side(listing.rows, theirs, "stripe") if theirs is not None else False
    return context


async def _record_context(request: Request, kind: str, record_id: int) -> dict[str, Any] | None:
    spec = _kind(kind)
    if spec is None:
        return None
    systems = registry.enabled_systems(request.app.state.settings)
    async with request.app.state.sessions() as session:
        view = await data.record(session, spec, record_id, systems)
        if view is None:
            return None
        timeline = await data.timeline(session, spec.name, record_id)
    return {"kind": spec, "record": view, "timeline": timeline, "systems": systems}


def _lag_history(request: Request) -> charts.LagHistory:
    history = getattr(request.app.state, "lag_history", None)
    if history is None:
        history = request.app.state.lag_history = charts.LagHistory()
    return history


def _query(**params: Any) -> str:
    """A query string for links within the dashboard, leaving out what is at its default."""
    return "?" + urlencode({k: v for k, v in params.items() if v not in ("", None, 1, "customer")})


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
