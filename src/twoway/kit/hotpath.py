"""Plain ASGI handlers for the few requests that arrive by the thousand (webhooks, creates).

They sit inside the body limit and the error boundary, in front of FastAPI's routing, dependency
solving and response validation, which cost most of a request's CPU (see bench/README.md). A handler
serves only the plain, valid case and returns None for anything else (a wrong key, invalid input,
an unusual header): that request goes on to the FastAPI route, so every error a client can see, and
the OpenAPI document, stay exactly FastAPI's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from twoway.kit.limits import replaying

Headers = dict[str, str]
Handler = Callable[[Scope, bytes, Headers], Awaitable[Response | None]]


class HotPaths:
    def __init__(self, app: ASGIApp, routes: dict[tuple[str, str], Handler]) -> None:
        """`routes` maps (method, path) to a handler; a path ending in "/" matches what starts with it."""
        self.app = app
        self.exact = {key: h for key, h in routes.items() if not key[1].endswith("/")}
        self.prefixes = [(m, p, h) for (m, p), h in routes.items() if p.endswith("/")]

    def _match(self, method: str, path: str) -> Handler | None:
        handler = self.exact.get((method, path))
        if handler is not None:
            return handler
        for m, prefix, h in self.prefixes:
            if m == method and path.startswith(prefix):
                return h
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._match(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        headers: Headers = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))  # the first, as Starlette's
        response = await handler(scope, body, headers)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, replaying(body, receive), send)
