"""The circuit breaker: pure state machine driven by a fake clock."""

from __future__ import annotations

import random

import pytest

from twoway.kit import metrics
from twoway.sync.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gauge(system: str) -> float:
    return metrics.CONNECTOR_BREAKER.labels(system=system)._value.get()  # type: ignore[attr-defined]


def make(**kw: object) -> tuple[Breaker, Clock, list[tuple[str, str]]]:
    clock = Clock()
    changes: list[tuple[str, str]] = []
    breaker = Breaker("sys-test", clock=clock, on_change=lambda b, old: changes.append((old, b.state)),
                      **kw)  # type: ignore[arg-type]
    clock.now += breaker.window_seconds  # closed a whole window: it judges from here on
    return breaker, clock, changes


def test_closed_lets_everything_through_below_the_failure_rate() -> None:
    b, clock, changes = make(failure_threshold=3, failure_rate=0.8, window_seconds=5.0)
    for _ in range(100):
        for fail in (True, True, False, False):  # runs of 2 failures, half of all answers
            b.record_failure() if fail else b.record_success()
            assert b.allow()
            clock.now += 0.1
    assert b.state == "closed" and b.retry_after() == 0 and changes == []
    failures = 0
    while b.state == "closed":
        b.record_failure()
        failures += 1
        clock.now += 0.1
    assert 5 < failures <= 50  # down for every call: open within one window (50 answers here)


def test_opens_at_the_threshold_and_probes_once_after_open_seconds() -> None:
    b, clock, changes = make(failure_threshold=5, open_seconds=1.0)
    for _ in range(4):
        b.record_failure()
    assert b.state == "closed"
    b.record_failure()
    assert b.state == "open" and gauge("sys-test") == 2
    assert not b.allow()
    assert b.retry_after() == pytest.approx(1.0)
    clock.now += 0.6
    assert not b.allow() and b.retry_after() == pytest.approx(0.4)
    clock.now += 0.4
    assert b.allow()  # the probe
    assert b.state == "half_open" and gauge("sys-test") == 1
    assert not b.allow() and not b.allow()  # exactly one caller
    b.record_success()
    assert b.state == "closed" and gauge("sys-test") == 0 and b.allow()
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_failed_probes_back_off_exponentially_up_to_the_cap() -> None:
    b, clock, _ = make(failure_threshold=1, open_seconds=1.0, max_open_seconds=5.0)
    b.record_failure()
    waits = []
    for _ in range(6):
        waits.append(b.retry_after())
        clock.now += b.retry_after()
        assert b.allow()
        b.record_failure()
        assert b.state == "open"
    assert waits == [pytest.approx(w) for w in (1, 2, 4, 5, 5, 5)]
    # A successful probe resets the backoff: the next opening waits open_seconds again.
    clock.now += b.retry_after()
    assert b.allow()
    b.record_success()
    b.record_failure()
    assert b.state == "closed"  # closed just now: it judges once a whole window has passed
    clock.now += b.window_seconds
    b.record_failure()
    assert b.state == "open" and b.retry_after() == pytest.approx(1.0)


def test_late_answers_of_calls_sent_before_opening_change_nothing() -> None:
    b, clock, _ = make(failure_threshold=2, open_seconds=2.0)
    b.record_failure()
    b.record_failure()
    assert b.state == "open"
    b.record_failure()
    b.record_success()
    assert b.state == "open" and b.retry_after() == pytest.approx(2.0)
    clock.now += 2.0
    assert b.allow()


def test_a_lost_probe_does_not_wedge_the_breaker() -> None:
    b, clock, _ = make(failure_threshold=1, open_seconds=1.0, probe_timeout_seconds=10.0)
    b.record_failure()
    clock.now += 1.0
    assert b.allow()
    clock.now += 5.0
    assert not b.allow()  # still out
    clock.now += 5.0
    assert b.allow()  # never answered: another probe may go
    assert not b.allow()


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        Breaker("x", failure_threshold=0)
    with pytest.raises(ValueError):
        Breaker("x", open_seconds=10, max_open_seconds=1)
    with pytest.raises(ValueError):
        Breaker("x", failure_rate=0)
    with pytest.raises(ValueError):
        Breaker("x", window_seconds=0)


def test_a_system_failing_a_third_of_its_calls_is_not_an_outage() -> None:
    """30 % of 20,000 calls (100 a second) fail at random: runs of 5+ failures come (a run-based breaker
    opened on each), the failure rate over a window never reaches 80 %: every call keeps going."""
    b, clock, changes = make(failure_threshold=5, failure_rate=0.8, window_seconds=5.0)
    rng = random.Random(7)
    run = longest = 0
    for _ in range(20_000):
        if rng.random() < 0.3:
            b.record_failure()
            run += 1
            longest = max(longest, run)
        else:
            b.record_success()
            run = 0
        assert b.allow()
        clock.now += 0.01
    assert longest >= 5 and changes == []


def test_the_first_answers_to_a_burst_do_not_open_it() -> None:
    """A refusal comes back before a success: of 100 calls sent together to a system failing 30 % of
    them, the first 30 answers are the failures. A closed breaker judges only once a whole window of
    answers is in (the last-N-answers rule opened here, at the 5th)."""
    b, clock, _ = make(failure_threshold=5, failure_rate=0.8, window_seconds=5.0)
    for _ in range(5):
        b.record_failure()  # a real outage: it opens
    assert b.state == "open"
    clock.now += b.retry_after()
    assert b.allow()
    b.record_success()  # the probe: closed, and every waiting retry is made due at once
    for n in range(100):
        b.record_failure() if n < 30 else b.record_success()
        clock.now += 0.002
    assert b.state == "closed"
    # Still down after all (the probe was lucky): every call fails; open once a window has passed.
    waited = 0.0
    while b.state == "closed":
        b.record_failure()
        clock.now += 0.1
        waited += 0.1
    assert waited == pytest.approx(b.window_seconds, abs=0.15)


def test_a_system_down_for_every_call_opens_it_within_a_window() -> None:
    b, clock, _ = make(failure_threshold=5, failure_rate=0.8, window_seconds=5.0)
    for _ in range(100):
        b.record_success()
        clock.now += 0.01
    start = clock.now
    while b.state == "closed":
        b.record_failure()
        clock.now += 0.01
    assert clock.now - start <= b.window_seconds  # the successes before the outage age out


async def test_save_state_upserts(pg_url: str) -> None:
    from sqlalchemy import text

    from twoway.kit.db import make_engine
    from twoway.sync.breaker import save_state

    b, _, _ = make(failure_threshold=1)
    engine = make_engine(pg_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM connector_state WHERE system = 'sys-test'"))
            await save_state(conn, "sys-test", b)
        b.record_failure()
        async with engine.begin() as conn:
            await save_state(conn, "sys-test", b)
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT breaker, consecutive_failures, since FROM connector_state WHERE system = 'sys-test'"))).all()
        assert [(r[0], r[1]) for r in rows] == [("open", 1)]
        assert rows[0][2] == b.since
    finally:
        await engine.dispose()


def test_a_probe_back_without_a_verdict_lets_the_next_caller_probe() -> None:
    b, clock, _ = make(failure_threshold=1, open_seconds=1.0, probe_timeout_seconds=60.0)
    b.record_failure()
    clock.now += 1.0
    assert b.allow() and b.state == "half_open"
    assert not b.allow() and b.retry_after() == pytest.approx(1.0)
    b.release_probe()  # a 429 or a cancel: nothing learnt about the system
    assert b.state == "half_open" and b.retry_after() == 0
    assert b.allow()  # the next caller probes at once, not 60 s later
    assert not b.allow()
    b.release_probe()
    b.record_failure()
    assert b.state == "open"
    b.release_probe()  # only a probe out can be released
    assert not b.allow()
