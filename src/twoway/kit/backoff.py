"""Exponential backoff with full jitter (AWS architecture blog's recommendation)."""

from __future__ import annotations

import random


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (1 = first retry): uniform in [base/2, min(cap, base*2^(attempt-1))]."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    low = min(base / 2, ceiling)
    return (rng or random).uniform(low, ceiling)
