"""Idempotency-Key replay cache, scoped per API key, kept 24 hours."""

from __future__ import annotations

import time
from dataclasses import dataclass

TTL_SECONDS = 24 * 3600
# Stripe keeps keys 24 h; a benchmark at 1000 writes/s would hold ~86M answers, so
# the oldest are also dropped beyond this many (far more than any retry window needs).
MAX_ENTRIES = 200_000


@dataclass(frozen=True, slots=True)
class Saved:
    fingerprint: tuple[object, ...]
    status: int
    body: bytes
    request_id: str
    saved_at: float


class IdempotencyCache:
    def __init__(self, ttl: float = TTL_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self._ttl = ttl
        self._max = max_entries
        # Insertion order is save order, so expiry only ever pops from the front.
        self._saved: dict[tuple[str, str], Saved] = {}

    def get(self, api_key: str, key: str) -> Saved | None:
        saved = self._saved.get((api_key, key))
        if saved is not None and time.time() - saved.saved_at > self._ttl:
            return None
        return saved

    def put(self, api_key: str, key: str, saved: Saved) -> None:
        self._saved[(api_key, key)] = saved
        self._expire(saved.saved_at)

    def _expire(self, now: float) -> None:
        while self._saved:
            first = next(iter(self._saved))
            if len(self._saved) <= self._max and now - self._saved[first].saved_at <= self._ttl:
                return
            del self._saved[first]

    def clear(self) -> None:
        self._saved.clear()

    def __len__(self) -> int:
        return len(self._saved)
