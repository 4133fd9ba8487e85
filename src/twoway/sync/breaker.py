"""A circuit breaker per connector: when a system fails across the board, stop calling it and probe.

Only outage errors (`ConnectorError.outage`: 5xx, timeouts, refused connections) are recorded as
failures; a record's own errors (a 400, a 404) say nothing about the system. Closed: every call goes.
It opens when the system fails across the board: of the calls answered in the last `window_seconds`,
at least `failure_threshold` and at least `failure_rate` failed.
- A rate, not a run of consecutive failures: with hundreds of calls in flight, a system that fails
  30 % of its calls gives a run of 5 failures every second or so, and a run-based breaker held every
  call (70 % of which would have gone through) again and again.
- Over time, not over the last N answers, and judged only once it has been closed for a whole window:
  a refusal comes back faster than a success, so the first answers to a burst of calls (the backlog
  at start, every retry made due when the breaker closes) are mostly the failures.
Open: no call goes until the probe time; then exactly one caller gets a probe (half-open). Its success
closes the breaker; its failure opens it again for twice as long, up to `max_open_seconds`. Pure logic
with an injectable clock; the engine owns it and `save_state` makes it visible to status, metrics and
the dashboard.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import text

from twoway.kit import metrics
from twoway.settings import Settings

State = Literal["closed", "open", "half_open"]
GAUGE_VALUE: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}


class Breaker:
    def __init__(self, system: str, *, failure_threshold: int = 5, open_seconds: float = 1.0,
                 max_open_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[Breaker, str], None] | None = None,
                 probe_timeout_seconds: float = 60.0, failure_rate: float = 0.8,
                 window_seconds: float = 5.0) -> None:
        if failure_threshold < 1 or open_seconds <= 0 or max_open_seconds < open_seconds:
            raise ValueError("need failure_threshold >= 1 and 0 < open_seconds <= max_open_seconds")
        if not 0 < failure_rate <= 1 or window_seconds <= 0:
            raise ValueError("need 0 < failure_rate <= 1 and window_seconds > 0")
        self.system = system
        self.failure_threshold = failure_threshold
        self.failure_rate = failure_rate
        self.window_seconds = window_seconds
        self._outcomes: deque[tuple[float, bool]] = deque()  # (when, failed) in the window, while closed
        self._failures = 0  # the failures among them
        self._closed_at = clock()
        self.open_seconds = open_seconds
        self.max_open_seconds = max_open_seconds
        # A probe whose caller never reports (cancelled, crashed) must not wedge the breaker.
        self.probe_timeout_seconds = probe_timeout_seconds
        self.clock = clock
        self.on_change = on_change
        self.state: State = "closed"
        self.consecutive_failures = 0
        self.since = datetime.now(UTC)  # wall time of the last change, for operators
        self._open_for = open_seconds  # the current backoff; doubles on each failed probe
        self._probe_at = 0.0  # open: when the next probe may go
        self._probe_sent = 0.0  # half-open: when the probe went out
        metrics.CONNECTOR_BREAKER.labels(system=system).set(0)

    @classmethod
    def from_settings(cls, system: str, settings: Settings,
                      on_change: Callable[[Breaker, str], None] | None = None) -> Breaker:
        return cls(system, failure_threshold=settings.breaker_failure_threshold,
                   failure_rate=settings.breaker_failure_rate, window_seconds=settings.breaker_window_seconds,
                   open_seconds=settings.breaker_open_seconds, max_open_seconds=settings.breaker_max_open_seconds,
                   on_change=on_change)

    # -- the calls the engine makes --------------------------------------------------------

    def allow(self) -> bool:
        """May a call go now? Open turns half-open at the probe time, for exactly one caller."""
        if self.state == "closed":
            return True
        now = self.clock()
        if self.state == "open":
            if now < self._probe_at:
                return False
            self._probe_sent = now
            self._change("half_open")
            return True
        if now - self._probe_sent >= self.probe_timeout_seconds:
            self._probe_sent = now  # the last probe was lost: send another
            return True
        return False

    def record_success(self) -> None:
        self.consecutive_failures = 0
        if self.state == "closed":
            self._note(False)
        if self.state == "half_open":
            self._open_for = self.open_seconds
            self._change("closed")
        # A success while open came from a call sent before the breaker opened: the probe decides.

    def release_probe(self) -> None:
        """The probe came back with no verdict (a 429, a cancel, a bug in the caller): the next caller probes.

        Without this the breaker would hold every call to the system for `probe_timeout_seconds`.
        """
        if self.state == "half_open":
            self._probe_sent = -math.inf

    def record_failure(self) -> None:
        """An outage error (never a record's own error). Opens when the window fails across the board (see
        the module's docstring), or on a failed probe."""
        self.consecutive_failures += 1
        if self.state == "half_open":
            self._open_for = min(self._open_for * 2, self.max_open_seconds)
            self._open()
        elif self.state == "closed":
            now = self._note(True)
            if (now - self._closed_at >= self.window_seconds and self._failures >= self.failure_threshold
                    and self._failures >= self.failure_rate * len(self._outcomes)):
                self._open_for = self.open_seconds
                self._open()
        # Open: late failures of calls sent before it opened change nothing.

    def retry_after(self) -> float:
        """Seconds until a call may be tried again (0 when closed)."""
        if self.state == "closed":
            return 0.0
        now = self.clock()
        if self.state == "open":
            return max(0.0, self._probe_at - now)
        # Half-open: the probe is out; its answer comes within a call's time, or it times out.
        return max(0.0, min(self._open_for, self._probe_sent + self.probe_timeout_seconds - now))

    # -- internals ------------------------------------------------------------------------

    def _note(self, failed: bool) -> float:
        now = self.clock()
        self._outcomes.append((now, failed))
        self._failures += failed
        while self._outcomes[0][0] < now - self.window_seconds:
            self._failures -= self._outcomes.popleft()[1]
        return now

    def _open(self) -> None:
        self._probe_at = self.clock() + self._open_for
        self._change("open")

    def _change(self, state: State) -> None:
        old = self.state
        if old == state:
            return
        self.state = state
        self.since = datetime.now(UTC)
        if state == "closed":  # judge the system afresh, from a whole window of answers
            self._outcomes.clear()
            self._failures = 0
            self._closed_at = self.clock()
        metrics.CONNECTOR_BREAKER.labels(system=self.system).set(GAUGE_VALUE[state])
        if self.on_change is not None:
            self.on_change(self, old)


_UPSERT = text("""
    INSERT INTO connector_state (system, breaker, since, consecutive_failures, updated_at)
    VALUES (:system, :breaker, :since, :failures, now())
    ON CONFLICT (system) DO UPDATE SET breaker = EXCLUDED.breaker, since = EXCLUDED.since,
        consecutive_failures = EXCLUDED.consecutive_failures, updated_at = now()
""")


async def save_state(conn_or_session: Any, system: str, breaker: Breaker) -> None:
    """Upsert the breaker's state into `connector_state`; the caller's transaction commits it.

    Takes an SQLAlchemy AsyncSession or AsyncConnection (both have `execute`).
    """
    await conn_or_session.execute(_UPSERT, {"system": system, "breaker": breaker.state, "since": breaker.since,
                                            "failures": breaker.consecutive_failures})
