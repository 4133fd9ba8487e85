"""One error shape for every 4xx and 503: {"error": {"type", "message", "details"?}}. Never a bare 500.

A database that cannot be reached is a 503 with Retry-After: the request was not applied, the client
retries later; the outage is logged once per interval with a count, never a traceback per request,
and the connection stays open. A failure while COMMIT was in flight says that its outcome is unknown.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twoway.kit.groupcommit import OutcomeUnknown, Unavailable
from twoway.kit.outage import OutageLog, is_connection_error
from twoway.logs import get_logger

log = get_logger(__name__)
RETRY_AFTER_SECONDS = 2
DATABASE = OutageLog("database")


class ErrorDetail(BaseModel):
    type: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give, all in the one error shape."""
    text = {400: "Malformed request", 401: "Missing or invalid API key", 404: "No such resource",
            409: "Refused by the record's state; nothing changed", 413: "Body too large",
            422: "Request failed validation",
            503: "Database unreachable (not applied), or the outcome of the commit is unknown; retry after "
                 "Retry-After seconds (with the same Idempotency-Key)"}
    return {status: {"model": ErrorBody, "description": text[status]} for status in statuses}


def error_response(status: int, type_: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _clean(errors: list[Any]) -> list[dict[str, Any]]:
    # Echoing the input back would repeat a megabyte of bad data; location and reason are enough.
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _clean(list(exc.errors()))
    if any(e["type"] == "json_invalid" for e in errors):
        return error_response(400, "invalid_json", "request body is not valid JSON", errors)
    return error_response(422, "validation_error", "request failed validation", errors)


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 409: "conflict",
             413: "payload_too_large", 422: "validation_error"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, type_, str(exc.detail), headers=getattr(exc, "headers", None))


def unavailable(exc: BaseException) -> JSONResponse:
    DATABASE.failed(exc)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if isinstance(exc, OutcomeUnknown):
        return error_response(503, "outcome_unknown", "the database connection failed while the write was being "
                              "committed: it may or may not have been applied; retry the same request (with the "
                              "same Idempotency-Key) to be safe", headers=headers)
    return error_response(503, "service_unavailable", "the database is unavailable; the request was not applied; "
                          "retry later", headers=headers)


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    return unavailable(exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if is_connection_error(exc):
        return unavailable(exc)
    log.error("unhandled error", path=request.url.path, error=repr(exc)[:500])
    return error_response(500, "internal_error", "internal error; the request was not applied")


class ErrorBoundary:
    """Answers what escaped the routes, so Starlette's last-resort handler (which logs a traceback, then
    re-raises and drops the connection) is never reached for an outage. A bug is still a logged 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        status = 0

        async def watch(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise
            if is_connection_error(exc) or isinstance(exc, (Unavailable, OutcomeUnknown)):
                response = unavailable(exc)
            else:
                log.exception("unhandled error", path=scope.get("path"), error=repr(exc)[:500])
                response = error_response(500, "internal_error", "internal error; the request was not applied")
            await response(scope, receive, send)
        else:
            if DATABASE.since is not None and 200 <= status < 300 and scope.get("path", "").startswith("/api/"):
                DATABASE.ok()


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Unavailable, _unavailable)
    app.add_exception_handler(OutcomeUnknown, _unavailable)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(ErrorBoundary)
