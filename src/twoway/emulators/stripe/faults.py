"""The Stripe emulator's fault knobs: the shared request knobs (emulators/kit) plus webhook and
invoice ones, and Stripe's shape for an injected error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from twoway.emulators.kit.faults import Faults as RequestFaults
from twoway.emulators.kit.faults import TokenBucket
from twoway.emulators.stripe.errors import StripeError

__all__ = ["Faults", "TokenBucket"]


@dataclass
class Faults(RequestFaults):
    """Runtime-adjustable knobs; 0, False or None means off."""

    webhook_drop_rate: float = 0.0
    webhook_duplicate_rate: float = 0.0
    webhook_reorder: int = 0
    webhook_delay_ms: float = 0.0
    # Overlapping writes to one invoice answer 429 lock_timeout, as Stripe can (see locks.py).
    invoice_lock_timeout: bool = False

    FRACTIONS: ClassVar[tuple[str, ...]] = ("error_rate", "webhook_drop_rate", "webhook_duplicate_rate")

    def injected_error(self) -> StripeError | None:
        status = self.injected_status()
        if status is None:
            return None
        message = "An unknown error occurred" if status == 500 else "The server is temporarily unavailable."
        return StripeError(status, message, type_="api_error")
