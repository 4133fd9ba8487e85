"""The Stripe emulator's fault knobs: the shared request knobs (emulators/kit) plus webhook and
invoice ones, and Stripe's shape for an injected error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from twoway.emulators.kit.faults import Faults as RequestFaults
from twoway.emulators.kit.faults import TokenBucket
from twoway.emulators.stripe.errors import StripeError

__all__ = ["Faults", "TokenBucket"]

LIMITS_MODES = ("key", "live", "sandbox")


@dataclass
class Faults(RequestFaults):
    """Runtime-adjustable knobs; 0, False or None means off."""

    webhook_drop_rate: float = 0.0
    webhook_duplicate_rate: float = 0.0
    webhook_reorder: int = 0
    webhook_delay_ms: float = 0.0
    # Overlapping writes to one invoice answer 429 lock_timeout, as Stripe can (see locks.py).
    invoice_lock_timeout: bool = False
    # Stripe's rate limiters (limits.py): None (off), "key", "live" or "sandbox".
    limits: str | None = None
    endpoint_rate_limit_per_second: float = 25.0
    search_rate_limit_per_second: float = 20.0
    endpoint_limits: dict[str, float] = field(default_factory=dict)  # route -> requests/s
    concurrency_limit: int = 0

    FRACTIONS: ClassVar[tuple[str, ...]] = ("error_rate", "webhook_drop_rate", "webhook_duplicate_rate")

    def _coerce(self, name: str, type_: str, value: Any) -> Any:
        if name == "limits":
            value = None if value in (None, "", "off") else value
            if value is not None and value not in LIMITS_MODES:
                raise ValueError(f"limits must be off, {', '.join(LIMITS_MODES)}")
            return value
        if name == "endpoint_limits":
            if not isinstance(value, dict) or not all(isinstance(k, str) and " /v1/" in k for k in value):
                raise ValueError('endpoint_limits must map routes to rates: {"POST /v1/customers": 10}')
            rate = super()._coerce
            return {k: rate(name, "float", v) for k, v in value.items()}
        return super()._coerce(name, type_, value)

    def injected_error(self) -> StripeError | None:
        status = self.injected_status()
        if status is None:
            return None
        message = "An unknown error occurred" if status == 500 else "The server is temporarily unavailable."
        return StripeError(status, message, type_="api_error")
