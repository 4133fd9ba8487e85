"""The consumer's stall decision (`Pipeline._stuck`), case by case, on a stand-in for aiokafka's consumer
read through `kit.kafka.GroupMember` (which is where aiokafka's private attributes are read).

The guard's other paths run on the real broker (tests/integration/test_consumer_guard.py); these two are
hard to bring about there on purpose: a member asked to rejoin that never does, and assigned partitions
whose fetches no longer get answers. The stand-in has just what the guard reads of aiokafka.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from twoway.kit.kafka import GroupMember
from twoway.sync.consumer import Pipeline

TP = TopicPartition("sync.outbound", 0)


class Member:
    """What the guard reads of an aiokafka consumer: its assignment, when each partition last got a fetch
    answer, whether the coordinator wants a rejoin, whether the subscription has an assignment at all."""

    def __init__(self, assigned: set[TopicPartition], polled_ago: float | None = 0.0, joined: bool = True) -> None:
        self.assigned = assigned
        self.polled_ago = polled_ago
        self._coordinator = SimpleNamespace(_rejoin_needed_fut=asyncio.get_running_loop().create_future(),
                                            generation=3, coordinator_id=0, member_id="m-1")
        self._subscription = SimpleNamespace(subscription=SimpleNamespace(assignment={} if joined else None))

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def last_poll_timestamp(self, tp: TopicPartition) -> int | None:
        return None if self.polled_ago is None else int((time.time() - self.polled_ago) * 1000)

    def ask_rejoin(self) -> None:
        self._coordinator._rejoin_needed_fut.set_result(None)


def _pipeline(member: Member, stall: float = 10.0) -> Pipeline:
    consumer: Any = member
    pipe = Pipeline(GroupMember(consumer), "g", engine=None, to_items=lambda r: [], stop=asyncio.Event(),  # type: ignore[arg-type]
                    stall_seconds=stall)
    pipe._moved_at = 0.0
    return pipe


async def test_a_healthy_idle_member_is_never_stuck() -> None:
    pipe = _pipeline(Member({TP}))
    assert not any(pipe._stuck(now) for now in (5.0, 20.0, 100.0, 1000.0))


async def test_assigned_partitions_without_fetch_answers_are_stuck_after_the_bound() -> None:
    member = Member({TP}, polled_ago=60.0)
    pipe = _pipeline(member)
    assert not pipe._stuck(9.0)
    assert pipe._stuck(11.0)
    # Never answered at all reads the same.
    member.polled_ago = None
    assert _pipeline(member)._stuck(11.0)


async def test_a_rejoin_that_never_happens_is_stuck_though_its_partitions_still_answer() -> None:
    member = Member({TP})
    pipe = _pipeline(member)
    assert not pipe._stuck(50.0)
    member.ask_rejoin()
    assert not pipe._stuck(100.0)  # a rejoin takes time; the bound counts from when it was asked
    assert not pipe._stuck(109.0)
    assert pipe._stuck(111.0)
    assert pipe._state()["rejoin_pending"] is True


async def test_no_partitions_is_healthy_only_when_the_member_joined() -> None:
    assert not _pipeline(Member(set(), joined=True))._stuck(100.0)  # more members than partitions
    stuck = _pipeline(Member(set(), joined=False))
    assert not stuck._stuck(9.0)
    assert stuck._stuck(11.0)
    assert stuck._state()["joined"] is False


async def test_no_guard_when_no_bound_is_set() -> None:
    assert not _pipeline(Member(set(), joined=False), stall=0.0)._stuck(1e6)


async def test_a_consumer_stopped_under_the_pipeline_is_stuck_at_once() -> None:
    """Polling a stopped consumer fails at once, every time: waiting out the bound spun the loop."""
    from aiokafka.errors import ConsumerStoppedError

    pipe = _pipeline(Member({TP}))
    fetch: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fetch.set_exception(ConsumerStoppedError())
    assert pipe._take(fetch) == {}  # type: ignore[arg-type]
    assert pipe._stuck(0.1)
