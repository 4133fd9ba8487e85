"""Repeated identical warnings (broker unreachable, a system down) logged once per interval, with a count."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any


class Quiet:
    def __init__(self, logger: Any, interval: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._seen: dict[Hashable, tuple[float, int]] = {}

    def warning(self, message: str, *, key: Hashable = None, **fields: Any) -> bool:
        """Log now if this (message, key) was not logged within the interval; else count it. True if logged."""
        k = (message, key)
        now = self.clock()
        first, suppressed = self._seen.get(k, (float("-inf"), 0))
        if now - first < self.interval:
            self._seen[k] = (first, suppressed + 1)
            return False
        if suppressed:
            fields["repeated"] = suppressed
            fields["over_seconds"] = round(now - first, 1)
        self._seen[k] = (now, 0)
        if len(self._seen) > 1000:
            self._seen = {key_: v for key_, v in self._seen.items() if now - v[0] < self.interval}
        self.logger.warning(message, **fields)
        return True
