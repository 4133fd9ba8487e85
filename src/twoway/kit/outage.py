"""Telling "the database (or broker) is away" from a bug, and logging an outage in a handful of lines."""

from __future__ import annotations

import time

import asyncpg
from sqlalchemy import exc as sa_exc

from twoway.logs import get_logger

log = get_logger(__name__)

# Server-side states that mean "not now" rather than "your statement is wrong".
_AWAY_STATES = ("08", "57P")


def is_connection_error(exc: BaseException) -> bool:
    """True for a failure to reach or keep a connection: the request may be retried later."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (OSError, TimeoutError, ConnectionError, asyncpg.InterfaceError,
                                asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError)):
            return True
        # A connection left mid-operation when the server went away: asyncpg refuses the next one with
        # "cannot switch to state …; another operation … is in progress". The API answered it 500 while
        # PostgreSQL was stopped (test_postgres_stopped_15s_under_writes_is_503_and_loses_nothing).
        if isinstance(current, asyncpg.InternalClientError) and "another operation" in str(current):
            return True
        if isinstance(current, asyncpg.PostgresError) and str(getattr(current, "sqlstate", "")).startswith(
                _AWAY_STATES):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, (sa_exc.InterfaceError, sa_exc.TimeoutError)):
            return True
        # SQLAlchemy keeps the driver's exception as `orig` (also when it was not raised `from` it).
        current = current.__cause__ or current.__context__ or getattr(current, "orig", None)
    return False


class OutageLog:
    """One line when an outage starts, one per `interval` while it lasts (with a count), one at its end."""

    def __init__(self, what: str, interval: float = 10.0) -> None:
        self.what = what
        self.interval = interval
        self.since: float | None = None
        self.count = 0
        self.total = 0
        self._next = 0.0

    def failed(self, error: BaseException) -> None:
        now = time.monotonic()
        self.count += 1
        self.total += 1
        if self.since is None:
            self.since = now
            self._next = now + self.interval
            self.count = 0
            log.warning(f"{self.what} unreachable; answering 503 until it is back", error=repr(error)[:200])
        elif now >= self._next:
            log.warning(f"{self.what} still unreachable", seconds=round(now - self.since, 1),
                        refused_since_last_line=self.count, error=repr(error)[:200])
            self.count = 0
            self._next = now + self.interval

    def ok(self) -> None:
        if self.since is not None:
            log.warning(f"{self.what} reachable again", seconds=round(time.monotonic() - self.since, 1),
                        refused=self.total)
            self.since = None
            self.total = 0
