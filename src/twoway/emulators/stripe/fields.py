"""Form-value parsing shared by the resources: metadata, booleans, integers, strings."""

from __future__ import annotations

from typing import Any

from twoway.emulators.stripe.errors import invalid


def merge_metadata(current: dict[str, str], raw: Any) -> dict[str, str]:
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise invalid("Invalid hash", param="metadata")
    merged = dict(current)
    for key, value in raw.items():
        if not isinstance(value, str):
            raise invalid(f"Invalid string: {value!r}", param=f"metadata[{key}]")
        if len(key) > 40:
            raise invalid("Metadata keys must be at most 40 characters.", param=f"metadata[{key}]")
        if len(value) > 500:
            raise invalid("Metadata values must be at most 500 characters.", param=f"metadata[{key}]")
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > 50:
        raise invalid("Metadata can have up to 50 keys.", param="metadata")
    return merged


def boolean(raw: Any, param: str) -> bool:
    if raw in ("true", True):
        return True
    if raw in ("false", False):
        return False
    raise invalid(f"Invalid boolean: {raw}", param=param)


def integer(raw: Any, param: str, minimum: int | None = None) -> int:
    if not isinstance(raw, str) or not raw.strip().lstrip("-").isdigit():
        raise invalid(f"Invalid integer: {raw}", param=param, code="parameter_invalid_integer")
    value = int(raw)
    if minimum is not None and value < minimum:
        raise invalid(f"This value must be greater than or equal to {minimum}.", param=param)
    return value


def string(raw: Any, param: str, limit: int = 5000) -> str | None:
    """A string field; Stripe treats an empty string as "unset"."""
    if not isinstance(raw, str):
        raise invalid(f"Invalid string: {raw!r}", param=param)
    if len(raw) > limit:
        raise invalid(f"Invalid string: {raw[:limit]}...; must be at most {limit} characters", param=param)
    return raw or None


def required(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise invalid(f"Missing required param: {name}.", param=name, code="parameter_missing")
    return value
