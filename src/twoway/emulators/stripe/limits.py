"""Stripe's rate limiters, as its docs describe them (docs.stripe.com/rate-limits), for tests and the bench.

Stripe measures limits per account, so every account (accounts.py) has its own buckets and in-flight count.
Off unless the `limits` knob is set: then only the `rate_limit_per_second` knob limits (one bucket for
every request of an account), as before this module. With `limits`:
- each mode (live keys `sk_live_`/`rk_live_`, and test keys) has its own buckets, as Stripe counts them;
- the global bucket allows `rate_limit_per_second` when set, else Stripe's 100/s for live numbers and
  25/s for sandbox ones: `limits` "live" or "sandbox" picks the numbers for every key, "key" by the
  key's mode;
- each endpoint (a route: `POST /v1/customers/{id}`) has a bucket inside the global one: 25/s
  (`endpoint_rate_limit_per_second`), search routes 20/s (`search_rate_limit_per_second`; Stripe's
  page does not say whether its search routes share one budget, so each has its own), and
  `endpoint_limits` {route: rate} for others.
`concurrency_limit` (0: none) caps the requests of one account and mode in flight at once, with or without `limits`
(Stripe publishes no number).

A bucket holds one second's worth; a refused request spends no token anywhere. The 429 has Stripe's
body (`invalid_request_error`, code `rate_limit`) and Stripe's `Stripe-Rate-Limited-Reason` header
(`global-rate`, `endpoint-rate`, `global-concurrency`), and the emulator's own `Twoway-Emulator-Limiter`
(`global`, `endpoint:<route>`, `concurrency`), which names the route for tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from twoway.emulators.stripe.faults import Faults

LIVE_GLOBAL = 100.0
SANDBOX_GLOBAL = 25.0
LIMITER_HEADER = "Twoway-Emulator-Limiter"
_ALL = "all"  # the one bucket of the `rate_limit_per_second` knob while `limits` is off


@dataclass(frozen=True, slots=True)
class Refusal:
    limiter: str  # global | endpoint:<route> | concurrency
    reason: str  # Stripe's Stripe-Rate-Limited-Reason

    def headers(self) -> dict[str, str]:
        return {"Stripe-Rate-Limited-Reason": self.reason, LIMITER_HEADER: self.limiter}


_GLOBAL = Refusal("global", "global-rate")
_CONCURRENCY = Refusal("concurrency", "global-concurrency")


class _Bucket:
    """Refills at the rate asked for now (knobs change at runtime), holding at most one second's worth."""

    def __init__(self) -> None:
        self.tokens = -1.0  # negative: not used yet (it starts full); a token is only taken from >= 1
        self.at = 0.0

    def has_token(self, rate: float, now: float) -> bool:
        capacity = max(1.0, rate)
        self.tokens = capacity if self.tokens < 0 else min(capacity, self.tokens + (now - self.at) * rate)
        self.at = now
        return self.tokens >= 1.0

    def take(self) -> None:
        self.tokens -= 1.0


class Limiters:
    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}  # (account, mode, "" or route) -> bucket
        # (account, mode) -> requests admitted and not yet answered
        self._in_flight: dict[tuple[str, str], int] = {}

    def admit(self, faults: Faults, route: str | None, live_key: bool, account: str = "") -> Refusal | None:
        """None: the request may run (call `release` with the same key and account when it is answered)."""
        mode = "live" if live_key else "test"
        if faults.concurrency_limit and self._in_flight.get((account, mode), 0) >= faults.concurrency_limit:
            return _CONCURRENCY
        buckets: list[tuple[_Bucket, float, Refusal]] = []
        global_rate = _global_rate(faults, live_key)
        if global_rate:
            buckets.append((self._bucket(account, mode if faults.limits else _ALL, ""), global_rate, _GLOBAL))
        if faults.limits and route is not None and (rate := _endpoint_rate(faults, route)):
            buckets.append((self._bucket(account, mode, route), rate, Refusal(f"endpoint:{route}", "endpoint-rate")))
        now = time.monotonic()
        for bucket, rate, refusal in buckets:
            if not bucket.has_token(rate, now):
                return refusal
        for bucket, _, _ in buckets:
            bucket.take()
        self._in_flight[(account, mode)] = self._in_flight.get((account, mode), 0) + 1
        return None

    def release(self, live_key: bool, account: str = "") -> None:
        self._in_flight[(account, "live" if live_key else "test")] -= 1

    def reset(self) -> None:
        self._buckets.clear()  # requests in flight stay counted: they release when answered

    def _bucket(self, account: str, mode: str, route: str) -> _Bucket:
        bucket = self._buckets.get((account, mode, route))
        if bucket is None:
            bucket = self._buckets[(account, mode, route)] = _Bucket()
        return bucket


def _global_rate(faults: Faults, live_key: bool) -> float:
    if faults.rate_limit_per_second or not faults.limits:
        return faults.rate_limit_per_second
    live = faults.limits == "live" or (faults.limits == "key" and live_key)
    return LIVE_GLOBAL if live else SANDBOX_GLOBAL


def _endpoint_rate(faults: Faults, route: str) -> float:
    if route in faults.endpoint_limits:
        return faults.endpoint_limits[route]
    if route.endswith("/search"):
        return faults.search_rate_limit_per_second
    return faults.endpoint_rate_limit_per_second


def parse_endpoint_limit(text: str) -> tuple[str, float]:
    """`POST /v1/customers=10` -> ("POST /v1/customers", 10.0)."""
    route, sep, rate = text.rpartition("=")
    if not sep or " /v1/" not in route:
        raise ValueError(f"expected METHOD /v1/route=rate, got {text!r}")
    return route.strip(), float(rate)
