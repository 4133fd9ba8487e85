"""Bearer API keys, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request


def key_matches(presented: str, keys: list[str]) -> bool:
    # Compare against every key, always, so timing does not reveal which one (or how many) matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def is_authorized(request: Request) -> bool:
    keys: list[str] = request.app.state.api_keys
    if not keys:
        return True
    token = bearer_token(request) or request.cookies.get("twoway_key", "")
    return bool(token) and key_matches(token, keys)


async def require_api_key(request: Request) -> None:
    if not is_authorized(request):
        raise HTTPException(401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})
