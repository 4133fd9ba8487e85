"""Fault-injection knobs and the decisions made from them."""

from __future__ import annotations

import random
import re
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from twoway.emulators.stripe.errors import StripeError


@dataclass
class Faults:
    """Runtime-adjustable knobs; 0 or None means off."""

    error_rate: float = 0.0
    rate_limit_per_second: float = 0.0
    latency_ms: float = 0.0
    webhook_drop_rate: float = 0.0
    webhook_duplicate_rate: float = 0.0
    webhook_reorder: int = 0
    webhook_delay_ms: float = 0.0
    reject_pattern: str | None = None
    # Held after a write executes: the change is made, the answer is slow (a crash window for tests).
    response_delay_ms: float = 0.0
    # Overlapping writes to one invoice answer 429 lock_timeout, as Stripe can (see locks.py).
    invoice_lock_timeout: bool = False

    def __post_init__(self) -> None:
        self._bucket = TokenBucket()
        self.reject_regex: re.Pattern[str] | None = _compile(self.reject_pattern)

    def merge(self, changes: dict[str, Any]) -> None:
        """Apply a partial update, validating all of it before changing anything."""
        known = {f.name: f for f in fields(self)}
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault knob: {name}")
            checked[name] = _coerce(name, value)
        regex = _compile(checked["reject_pattern"]) if "reject_pattern" in checked else self.reject_regex
        for name, value in checked.items():
            setattr(self, name, value)
        self.reject_regex = regex

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    # -- decisions -------------------------------------------------------------------

    def rate_limited(self) -> bool:
        rate = self.rate_limit_per_second
        return rate > 0 and not self._bucket.take(rate, time.monotonic())

    def injected_error(self) -> StripeError | None:
        if self.error_rate <= 0 or random.random() >= self.error_rate:
            return None
        status = random.choice((500, 503))
        message = "An unknown error occurred" if status == 500 else "The server is temporarily unavailable."
        return StripeError(status, message, type_="api_error")

    def latency_seconds(self) -> float:
        if self.latency_ms <= 0:
            return 0.0
        return self.latency_ms / 1000 * random.uniform(0.75, 1.25)

    def chance(self, rate: float) -> bool:
        return rate > 0 and random.random() < rate


class TokenBucket:
    """Allows `rate` requests per second with a burst of one second's worth."""

    def __init__(self) -> None:
        self._tokens = -1.0  # negative: not started, fill on first use
        self._last = 0.0

    def take(self, rate: float, now: float) -> bool:
        capacity = max(1.0, rate)
        if self._tokens < 0:
            self._tokens = capacity
        else:
            self._tokens = min(capacity, self._tokens + (now - self._last) * rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _coerce(name: str, value: Any) -> Any:
    if name == "reject_pattern":
        if value in (None, ""):
            return None
        if not isinstance(value, str):
            raise ValueError("reject_pattern must be a string or null")
        return value
    if name == "invoice_lock_timeout":
        if not isinstance(value, bool):
            raise ValueError("invoice_lock_timeout must be true or false")
        return value
    if value is None:
        value = 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if value < 0:
        raise ValueError(f"{name} must be >= 0")
    if name in ("error_rate", "webhook_drop_rate", "webhook_duplicate_rate") and value > 1:
        raise ValueError(f"{name} must be between 0 and 1")
    return int(value) if name == "webhook_reorder" else float(value)


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"reject_pattern is not a valid regex: {exc}") from None
