"""Stripe's rate limits without I/O: the emulator's limiters (admitted in a tight loop, so no refill to
speak of), our nested limiter in one process, and the settings that give its numbers."""

from __future__ import annotations

import asyncio

import pytest

from twoway.emulators.stripe.faults import Faults
from twoway.emulators.stripe.limits import Limiters
from twoway.kit.ratelimit import EndpointRates, LocalLimiter
from twoway.settings import Settings

CREATE, RETRIEVE, SEARCH = "POST /v1/customers", "GET /v1/customers/{id}", "GET /v1/customers/search"


def _faults(**knobs: object) -> Faults:
    faults = Faults()
    faults.merge(knobs)
    return faults


def _admitted(limiters: Limiters, faults: Faults, route: str | None, n: int, live: bool = False) -> list[str]:
    """What each of `n` requests got: "ok" or the limiter that refused it (each answered at once)."""
    got = []
    for _ in range(n):
        refusal = limiters.admit(faults, route, live)
        if refusal is None:
            limiters.release(live)
        got.append("ok" if refusal is None else refusal.limiter)
    return got


def test_off_by_default_only_the_global_knob_limits() -> None:
    limiters = Limiters()
    assert _admitted(limiters, Faults(), CREATE, 200) == ["ok"] * 200
    got = _admitted(limiters, _faults(rate_limit_per_second=5), CREATE, 20)
    assert got.count("ok") == 5 and set(got) == {"ok", "global"}


def test_each_endpoint_has_its_own_bucket_inside_the_global_one() -> None:
    limiters, faults = Limiters(), _faults(limits="live")  # global 100/s, endpoints 25/s, search 20/s
    assert _admitted(limiters, faults, CREATE, 30).count("ok") == 25
    assert _admitted(limiters, faults, CREATE, 1) == [f"endpoint:{CREATE}"]
    assert _admitted(limiters, faults, SEARCH, 30).count("ok") == 20
    assert _admitted(limiters, faults, RETRIEVE, 30).count("ok") == 25
    # 70 spent of the global 100: another endpoint's 25 finds only 30 left between them.
    got = _admitted(limiters, faults, "POST /v1/customers/{id}", 25) + _admitted(limiters, faults, "GET /v1/invoices", 25)
    assert got.count("ok") == 30 and got.count("global") == 20


def test_a_refused_request_spends_no_token_anywhere() -> None:
    limiters, faults = Limiters(), _faults(limits="live", endpoint_limits={CREATE: 2})
    assert _admitted(limiters, faults, CREATE, 50).count("ok") == 2  # 48 refused by the endpoint...
    assert _admitted(limiters, faults, RETRIEVE, 25).count("ok") == 25  # ...took nothing from the global 100
    assert _admitted(limiters, faults, "GET /v1/invoices", 25).count("ok") == 25
    assert _admitted(limiters, faults, "GET /v1/events", 25).count("ok") == 25
    assert _admitted(limiters, faults, "GET /v1/invoiceitems", 25).count("ok") == 23  # 2 + 25 * 3 + 23 = 100


def test_the_numbers_follow_the_setting_or_the_keys_mode() -> None:
    def global_allowance(limits: str, live: bool, **knobs: object) -> int:
        faults = _faults(limits=limits, endpoint_rate_limit_per_second=0, **knobs)  # no endpoint limit
        return _admitted(Limiters(), faults, CREATE, 150, live).count("ok")

    assert global_allowance("sandbox", live=True) == 25
    assert global_allowance("live", live=False) == 100
    assert global_allowance("key", live=False) == 25 and global_allowance("key", live=True) == 100
    assert global_allowance("live", live=True, rate_limit_per_second=40) == 40


def test_live_and_test_keys_are_counted_apart() -> None:
    limiters, faults = Limiters(), _faults(limits="key")
    assert _admitted(limiters, faults, CREATE, 30, live=False).count("ok") == 25
    assert _admitted(limiters, faults, CREATE, 30, live=True).count("ok") == 25


def test_concurrency_cap_counts_requests_until_answered() -> None:
    limiters, faults = Limiters(), _faults(concurrency_limit=2)
    assert limiters.admit(faults, CREATE, False) is None
    assert limiters.admit(faults, RETRIEVE, False) is None
    refusal = limiters.admit(faults, CREATE, False)
    assert refusal is not None and refusal.headers() == {"Stripe-Rate-Limited-Reason": "global-concurrency",
                                                         "Twoway-Emulator-Limiter": "concurrency"}
    assert limiters.admit(faults, CREATE, True) is None  # live keys have their own
    limiters.release(False)
    assert limiters.admit(faults, CREATE, False) is None


def test_limit_knobs_are_validated() -> None:
    faults = Faults()
    for bad in ({"limits": "fast"}, {"endpoint_limits": {"customers": 1}}, {"endpoint_limits": {CREATE: -1}},
                {"concurrency_limit": -1}):
        with pytest.raises(ValueError):
            faults.merge(bad)
    faults.merge({"limits": "off"})
    assert faults.limits is None


def test_endpoint_rates_exact_names_then_patterns_then_the_default() -> None:
    rates = EndpointRates(24.0, {"GET /v1/*": 50.0, "GET /v1/*/search": 19.0, CREATE: 30.0})
    assert rates.of(CREATE) == 30.0
    assert rates.of(SEARCH) == 50.0  # the first pattern that matches
    assert rates.of("DELETE /v1/customers/{id}") == 24.0


def test_settings_give_stripes_numbers_with_headroom_and_overrides() -> None:
    assert Settings().stripe_endpoint_limits() == (24.0, {"GET /v1/*/search": 19.0})
    given = Settings(stripe_endpoint_rate_limit_per_second=40, stripe_search_rate_limit_per_second=30,
                     stripe_endpoint_rate_limits="post /v1/customers=50, GET /v1/*/search=35")
    assert given.stripe_endpoint_limits() == (40.0, {CREATE: 50.0, "GET /v1/*/search": 35.0})
    for bad in ("POST /v1/customers", "customers=5", "POST /v1/customers=0"):
        with pytest.raises(ValueError):
            Settings(stripe_endpoint_rate_limits=bad)


async def test_local_limiter_takes_from_the_endpoint_and_the_account() -> None:
    # Burst 1 each: the second call to one endpoint waits 1/rate for it; other endpoints wait for the account.
    limiter = LocalLimiter(1000.0, endpoint_rates=EndpointRates(2.0))
    loop = asyncio.get_running_loop()
    start = loop.time()
    await limiter.acquire(endpoint=CREATE)
    await limiter.acquire(endpoint=RETRIEVE)
    assert loop.time() - start < 0.25  # neither waited for the other's bucket
    await limiter.acquire(endpoint=CREATE)
    assert loop.time() - start >= 0.4  # one endpoint: 2/s
    await limiter.rate_limited(0.5, endpoint=CREATE)  # that endpoint's 429: it waits out the penalty
    before = loop.time()
    await limiter.acquire(endpoint=CREATE)
    assert loop.time() - before >= 0.45
    await limiter.close()
