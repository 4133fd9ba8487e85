"""Server-rendered dashboard. Protected like the API: a Bearer key, or the key given once via ?key=."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from twoway.kit.auth import is_authorized, key_matches

router = APIRouter(include_in_schema=False)


@router.get("/")
async def dashboard(request: Request) -> Response:
    key = request.query_params.get("key")
    keys: list[str] = request.app.state.api_keys
    if key and keys and key_matches(key, keys):
        response = RedirectResponse("/", status_code=303)
        response.set_cookie("twoway_key", key, httponly=True, samesite="strict")
        return response
    if not is_authorized(request):
        return HTMLResponse("<html><body><h1>twoway</h1><p>Open /?key=&lt;API key&gt; to sign in.</p></body></html>",
                            status_code=401)
    return HTMLResponse("<html><body><h1>twoway</h1></body></html>")
