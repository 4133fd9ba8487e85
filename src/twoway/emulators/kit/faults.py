"""Fault-injection knobs that any emulator's API honours; an emulator subclasses to add its own."""

from __future__ import annotations

import random
import re
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar


@dataclass
class Faults:
    """Runtime-adjustable knobs; 0, False or None means off."""

    error_rate: float = 0.0
    rate_limit_per_second: float = 0.0
    latency_ms: float = 0.0
    # Every API request answers 503 (a whole-system outage) until turned off.
    outage: bool = False
    # Held after a write executes: the change is made, the answer is slow (a crash window for tests).
    response_delay_ms: float = 0.0
    reject_pattern: str | None = None

    # Knobs that are fractions in [0, 1]; subclasses extend.
    FRACTIONS: ClassVar[tuple[str, ...]] = ("error_rate",)

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
            checked[name] = self._coerce(name, str(known[name].type), value)
        regex = _compile(checked["reject_pattern"]) if "reject_pattern" in checked else self.reject_regex
        for name, value in checked.items():
            setattr(self, name, value)
        self.reject_regex = regex

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _coerce(self, name: str, type_: str, value: Any) -> Any:
        if "str" in type_:
            if value in (None, ""):
                return None
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string or null")
            return value
        if type_ == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
            return value
        if value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number")
        if value < 0:
            raise ValueError(f"{name} must be >= 0")
        if name in self.FRACTIONS and value > 1:
            raise ValueError(f"{name} must be between 0 and 1")
        return int(value) if type_ == "int" else float(value)

    # -- decisions -------------------------------------------------------------------

    def rate_limited(self) -> bool:
        rate = self.rate_limit_per_second
        return rate > 0 and not self._bucket.take(rate, time.monotonic())

    def injected_status(self) -> int | None:
        """503 during an outage; 500 or 503 at `error_rate`; None otherwise."""
        if self.outage:
            return 503
        if self.error_rate <= 0 or random.random() >= self.error_rate:
            return None
        return random.choice((500, 503))

    def latency_seconds(self) -> float:
        if self.latency_ms <= 0:
            return 0.0
        return self.latency_ms / 1000 * random.uniform(0.75, 1.25)

    def rejects(self, *values: object) -> bool:
        regex = self.reject_regex
        return regex is not None and any(isinstance(v, str) and regex.search(v) for v in values)

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


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"reject_pattern is not a valid regex: {exc}") from None
