"""Startup configuration of the emulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twoway.emulators.stripe.faults import Faults


@dataclass
class EmulatorConfig:
    # Fault knobs at startup, as accepted by POST /_emulator/faults (also what reset goes back to).
    startup_faults: dict[str, Any] = field(default_factory=dict)
    # Delivery.
    real_retry_schedule: bool = False
    webhook_timeout: float = 10.0
    webhook_concurrency: int = 32
    webhook_url: str | None = None
    webhook_secret: str | None = None
    # Storage.
    state_file: str | None = None
    save_interval: float = 2.0
    max_events: int = 100_000
    # Invoices: seconds until an auto_advance draft finalizes itself (Stripe: about an hour).
    auto_finalize_seconds: float = 3600.0

    def faults(self) -> Faults:
        faults = Faults()
        faults.merge(dict(self.startup_faults))
        return faults
