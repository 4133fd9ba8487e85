"""A stateful, in-memory Stripe API emulator for development, tests and benchmarks.

Serves customers, events and webhook endpoints with Stripe's shapes and errors,
delivers signed webhooks with retries, honours Idempotency-Key, and injects
faults (errors, rate limits, latency, dropped/duplicated/reordered webhooks)
that can be changed at runtime through `/_emulator/faults`.
"""

from twoway.emulator.config import EmulatorConfig

__all__ = ["EmulatorConfig"]
