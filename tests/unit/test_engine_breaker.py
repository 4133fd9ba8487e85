"""The engine reports every probe's end to the breaker, also an end that says nothing about the system.

A probe that never reported held every call to the system for `probe_timeout_seconds` (60 s). The
connector here stands in for an external system's answers; no database is reached (a Fetch needs none).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from twoway.connectors.base import ConnectorError
from twoway.kit.db import make_engine, make_sessionmaker
from twoway.settings import Settings
from twoway.sync import plan
from twoway.sync.breaker import Breaker
from twoway.sync.engine import Item, SyncEngine


class Answers:
    """An external system that answers each fetch with the next exception, or a record."""

    kinds = ("customer",)
    max_in_flight = None

    def __init__(self, *answers: BaseException | None) -> None:
        self.answers = list(answers)

    async def fetch(self, kind: str, external_id: str) -> Any:
        answer = self.answers.pop(0)
        if answer is None:
            return {"id": external_id}
        if isinstance(answer, asyncio.CancelledError):
            await asyncio.sleep(3600)  # cancelled by the test
        raise answer


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _engine(connector: Answers) -> tuple[SyncEngine, Breaker, Clock]:
    clock = Clock()
    breaker = Breaker("ext", failure_threshold=1, open_seconds=1.0, clock=clock, probe_timeout_seconds=60.0)
    sessions = make_sessionmaker(make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none"))
    engine = SyncEngine(sessions, {"ext": connector}, Settings(), breakers={"ext": breaker})  # type: ignore[dict-item]
    clock.now += breaker.window_seconds  # closed a whole window: it judges
    breaker.record_failure()  # open
    clock.now += 1.0  # the probe time
    return engine, breaker, clock


ITEM = Item("inbound", "customer", "ext", external_id="cus_1")


@pytest.mark.parametrize("answer", [
    ConnectorError("stripe 429", transient=True, status=429, rate_limited=True),
    RuntimeError("a bug in the connector"),
], ids=["rate-limited", "bug"])
async def test_a_probe_that_ends_without_a_verdict_frees_the_next_probe(answer: BaseException) -> None:
    engine, breaker, _ = _engine(Answers(answer, None))
    with pytest.raises(type(answer)):
        await engine._call(ITEM, plan.Fetch("cus_1"))
    assert breaker.state == "half_open"
    # The next call is the new probe (on the old code: Unavailable for 60 s, the lost probe's timeout).
    assert await engine._call(ITEM, plan.Fetch("cus_1")) == {"id": "cus_1"}
    assert breaker.state == "closed"


async def test_a_cancelled_probe_frees_the_next_probe() -> None:
    engine, breaker, _ = _engine(Answers(asyncio.CancelledError()))
    task = asyncio.create_task(engine._call(ITEM, plan.Fetch("cus_1")))
    await asyncio.sleep(0.05)
    assert breaker.state == "half_open" and not breaker.allow()  # the probe is out
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.allow()


async def test_probe_answers_with_a_verdict_decide_the_state() -> None:
    engine, breaker, _ = _engine(Answers(ConnectorError("stripe 503", transient=True, status=503)))
    with pytest.raises(ConnectorError):
        await engine._call(ITEM, plan.Fetch("cus_1"))
    assert breaker.state == "open" and not breaker.allow()
    engine, breaker, _ = _engine(Answers(ConnectorError("stripe 400", transient=False, status=400)))
    with pytest.raises(ConnectorError):
        await engine._call(ITEM, plan.Fetch("cus_1"))
    assert breaker.state == "closed"  # a record's own error: the system answered
