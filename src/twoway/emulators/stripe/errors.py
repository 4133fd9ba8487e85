"""Stripe's error envelope and the few error kinds the emulator raises."""

from __future__ import annotations

from typing import Any

INVALID_REQUEST = "invalid_request_error"


class StripeError(Exception):
    """An API error rendered as Stripe's `{"error": {...}}` body.

    `save` says whether an idempotency key keeps this answer: Stripe saves results
    only once execution began, so parameter validation failures are not saved.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = INVALID_REQUEST,
        code: str | None = None,
        param: str | None = None,
        save: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.save = save

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = "https://stripe.com/docs/error-codes/" + self.code.replace("_", "-")
        if self.param:
            err["param"] = self.param
        if request_id:
            err["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        return {"error": err}


def invalid(message: str, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(400, message, param=param, code=code)


def unknown_param(name: str) -> StripeError:
    return invalid(f"Received unknown parameter: {name}", param=name, code="parameter_unknown")


def missing(kind: str, ident: str, param: str = "id") -> StripeError:
    # Looking an object up is execution, so a 404 is kept under an idempotency key.
    return StripeError(404, f"No such {kind}: '{ident}'", code="resource_missing", param=param, save=True)


def no_api_key() -> StripeError:
    return StripeError(
        401,
        "You did not provide an API key. You need to provide your API key in the Authorization "
        "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
        "https://stripe.com/docs/api#authentication for details, or we can help at "
        "https://support.stripe.com/.",
    )


def masked(key: str) -> str:
    """A key as Stripe's messages show it: its prefix and last four characters."""
    return key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else key


def bad_api_key(key: str) -> StripeError:
    return StripeError(401, f"Invalid API Key provided: {masked(key)}", code="api_key_invalid")
