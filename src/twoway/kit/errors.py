"""One error shape for every 4xx: {"error": {"type", "message", "details"?}}. Never a bare 500."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from twoway.logs import get_logger

log = get_logger(__name__)


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
            422: "Request failed validation"}
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


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", path=request.url.path, error=repr(exc)[:500])
    return error_response(500, "internal_error", "internal error; the request was not applied")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
