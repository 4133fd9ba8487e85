"""Startup configuration of the emulator."""

from __future__ import annotations

from dataclasses import dataclass

from twoway.emulator.faults import Faults


@dataclass
class EmulatorConfig:
    # Fault knobs at startup (also what POST /_emulator/reset goes back to); 0/None is off.
    error_rate: float = 0.0
    rate_limit_per_second: float = 0.0
    latency_ms: float = 0.0
    webhook_drop_rate: float = 0.0
    webhook_duplicate_rate: float = 0.0
    webhook_reorder: int = 0
    webhook_delay_ms: float = 0.0
    reject_pattern: str | None = None
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

    def faults(self) -> Faults:
        faults = Faults()
        faults.merge(
            {
                "error_rate": self.error_rate,
                "rate_limit_per_second": self.rate_limit_per_second,
                "latency_ms": self.latency_ms,
                "webhook_drop_rate": self.webhook_drop_rate,
                "webhook_duplicate_rate": self.webhook_duplicate_rate,
                "webhook_reorder": self.webhook_reorder,
                "webhook_delay_ms": self.webhook_delay_ms,
                "reject_pattern": self.reject_pattern,
            }
        )
        return faults
