"""Small parts of the engine: quiet warnings, coalescing."""

from __future__ import annotations

import asyncio
import logging

from twoway.logs import OncePerInterval
from twoway.sync.coalesce import Coalescer
from twoway.sync.quiet import Quiet


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def warning(self, message: str, **fields: object) -> None:
        self.lines.append((message, fields))


def test_a_repeated_warning_is_logged_once_per_interval_with_a_count() -> None:
    now = [0.0]
    log = _Log()
    quiet = Quiet(log, interval=30, clock=lambda: now[0])
    for _ in range(1000):
        quiet.warning("broker unreachable", key="b")
        now[0] += 0.01
    quiet.warning("stripe down", key="s")
    assert [m for m, _ in log.lines] == ["broker unreachable", "stripe down"]
    now[0] = 31.0
    quiet.warning("broker unreachable", key="b")
    assert log.lines[-1][1]["repeated"] == 999


def test_library_log_floods_are_held_back() -> None:
    f = OncePerInterval(interval=30)
    records = [logging.LogRecord("aiokafka", logging.ERROR, "x", 1, "Unable connect to %s", ("node",), None)
               for _ in range(100)]
    for i, r in enumerate(records):
        r.created = i * 0.1
    assert sum(f.filter(r) for r in records) == 1
    late = logging.LogRecord("aiokafka", logging.ERROR, "x", 1, "Unable connect to %s", ("node",), None)
    late.created = 40.0
    assert f.filter(late) and "repeated 99 times" in late.getMessage()


async def test_calls_made_together_become_one_bulk_call() -> None:
    batches: list[list[int]] = []

    async def bulk(items: list[int]) -> list[int]:
        batches.append(items)
        return [i * 2 for i in items]

    c: Coalescer[int, int] = Coalescer(bulk)
    assert await asyncio.gather(*(c.submit(i) for i in range(5))) == [0, 2, 4, 6, 8]
    assert batches == [[0, 1, 2, 3, 4]]


def test_a_folded_message_keeps_what_either_asks() -> None:
    """A repair (no event: must read) folded behind a redelivered event (handled: may cost nothing) still
    reads; two handled events stay cheap; a claim hint survives the fold."""
    from twoway.sync.consumer import _fold
    from twoway.sync.engine import Item
    handled = Item("inbound", "invoice", "stripe", external_id="in_1", hint_only=True)
    repair = Item("inbound", "invoice", "stripe", external_id="in_1")
    claim = Item("inbound", "invoice", "stripe", external_id="in_1", hint=4)
    assert _fold(handled, repair).hint_only is False
    assert _fold(repair, handled).hint_only is False
    assert _fold(handled, handled).hint_only is True
    assert _fold(handled, claim).hint == 4 and _fold(claim, handled).hint == 4
