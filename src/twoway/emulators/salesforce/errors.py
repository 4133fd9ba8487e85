"""Salesforce's error shape: always a list of `{"message", "errorCode", "fields"}`."""

from __future__ import annotations

from typing import Any


class SfError(Exception):
    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or []

    def body(self) -> list[dict[str, Any]]:
        return [{"message": self.message, "errorCode": self.code, "fields": self.fields}]

    def record_error(self) -> dict[str, Any]:
        """The per-record shape inside composite and create results (`statusCode`, not `errorCode`)."""
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


def not_found(message: str = "The requested resource does not exist") -> SfError:
    return SfError(404, "NOT_FOUND", message)


def malformed(message: str) -> SfError:
    return SfError(400, "MALFORMED_QUERY", message)


def invalid_field(name: str, sobject: str = "Account") -> SfError:
    return SfError(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}", [name])


def bad_json(message: str = "The request body is not valid JSON") -> SfError:
    return SfError(400, "JSON_PARSER_ERROR", message)


def session_invalid() -> SfError:
    return SfError(401, "INVALID_SESSION_ID", "Session expired or invalid")


def limit_exceeded() -> SfError:
    return SfError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")


def unavailable(status: int) -> SfError:
    if status == 503:
        return SfError(503, "SERVER_UNAVAILABLE", "Service temporarily unavailable; try again later.")
    return SfError(500, "UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this ErrorId.")
