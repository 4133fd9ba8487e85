"""Kafka clients configured one way for the whole project, and the one place that knows aiokafka's insides.

`GroupMember` is what the sync consumer talks to: fetch, commit, seek, and the inputs of its stall guard.
aiokafka does not say publicly whether a member has joined or was asked to rejoin, so those are read from
its private attributes here, each read guarded (a missing attribute reads as "no"), and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection
from typing import Any

from aiokafka import AIOKafkaConsumer as AIOKafkaConsumer  # re-exported: the types a GroupMember speaks
from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import ConsumerRecord as ConsumerRecord
from aiokafka import TopicPartition as TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import ConsumerStoppedError as ConsumerStoppedError
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.structs import OffsetAndMetadata

from twoway.kit.outbox import INBOUND_TOPIC, OUTBOUND_TOPIC
from twoway.logs import get_logger
from twoway.settings import Settings

log = get_logger(__name__)

TOPICS = (OUTBOUND_TOPIC, INBOUND_TOPIC)


def make_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.require_kafka(),
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=2,
        request_timeout_ms=15_000,
    )


def make_consumer(settings: Settings, topic: str, group_id: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.require_kafka(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
        max_poll_interval_ms=300_000,
        # A fetch returns as soon as there is data; the wait only bounds an empty poll. The default
        # (500 ms) showed as latency on the dev broker.
        fetch_max_wait_ms=50,
        metadata_max_age_ms=5_000,
    )


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer and leave its group, also from a group's first generation.

    aiokafka sends LeaveGroup only from a generation above 0: Kafka numbers generations from 1, Tansu
    (the dev broker) from 0. A member of generation 0 left silently, so the next member of that group
    waited out its session before it got partitions: 11.1 s instead of 3.0 s with a 6 s session
    (measured on Tansu; a restarted worker, and each test that starts a worker twice, paid it). On
    Kafka a generation is never 0 and this changes nothing."""
    coord = getattr(consumer, "_coordinator", None)
    if coord is not None and coord.generation == 0 and coord.member_id:
        async def leave() -> None:
            # Called by aiokafka's own close, after its heartbeats stopped: the same best effort.
            try:
                await coord._send_req(LeaveGroupRequest(coord.group_id, coord.member_id))
            except KafkaError as exc:
                log.info("leaving the group failed; the session timeout covers it", error=repr(exc)[:200])
            coord.reset_generation()

        coord._maybe_leave_group = leave
    await consumer.stop()


Batch = dict[TopicPartition, list[ConsumerRecord]]


class GroupMember:
    """One consumer in its group, as the sync consumer sees it. Made per try: aiokafka does not restart a
    stopped consumer, so a failed start or a stall means a new member (sync/consumer.py)."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer

    def resubscribe(self, restart: Callable[[set[TopicPartition]], None]) -> None:
        """Subscribe again to the same topics, calling `restart` with each new assignment."""
        self.consumer.subscribe(topics=sorted(self.consumer.subscription()), listener=_Assigned(restart))

    async def start(self) -> None:
        await self.consumer.start()

    async def discard(self) -> None:
        """Close a consumer whose start failed (best effort: it may never have connected)."""
        with contextlib.suppress(Exception):
            await self.consumer.stop()

    async def stop(self) -> None:
        await stop_consumer(self.consumer)

    async def fetch(self, timeout_ms: int, max_records: int) -> Batch:
        """Raises ConsumerStoppedError, every time, once the consumer was stopped."""
        batch: Batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return batch

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self.consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()})

    def assignment(self) -> set[TopicPartition]:
        assigned: set[TopicPartition] = self.consumer.assignment()
        return assigned

    def highwater(self, tp: TopicPartition) -> int | None:
        end: int | None = self.consumer.highwater(tp)
        return end

    async def position(self, tp: TopicPartition) -> int:
        position: int = await self.consumer.position(tp)
        return position

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        await self.consumer.seek_to_beginning(tp)

    def fetched_within(self, partitions: Collection[TopicPartition], seconds: float) -> bool:
        """Every one of these partitions got a fetch answer in the last `seconds`; False if the assignment
        changed under us (aiokafka asserts it)."""
        recent = time.time() * 1000 - seconds * 1000
        try:
            return all((self.consumer.last_poll_timestamp(tp) or 0) > recent for tp in partitions)
        except AssertionError:
            return False

    def rejoin_pending(self) -> bool:
        """The coordinator asked this member to rejoin the group, and it has not yet."""
        wanted = getattr(self._coordinator(), "_rejoin_needed_fut", None)
        return isinstance(wanted, asyncio.Future) and wanted.done()

    def joined(self) -> bool:
        """The member has joined (it may hold no partition: more members than partitions). An empty
        assignment alone cannot tell "joined, nothing for us" from "not joined"."""
        subscription = getattr(getattr(self.consumer, "_subscription", None), "subscription", None)
        return subscription is not None and getattr(subscription, "assignment", None) is not None

    def state(self) -> dict[str, Any]:
        """What the member looks like, for a log: enough to tell a stuck join from a dead fetch."""
        coordinator = self._coordinator()
        return {"assigned": sorted(tp.partition for tp in self.assignment()),
                "joined": self.joined(), "rejoin_pending": self.rejoin_pending(),
                "generation": getattr(coordinator, "generation", None),
                "coordinator": getattr(coordinator, "coordinator_id", None),
                "member": str(getattr(coordinator, "member_id", ""))[-12:]}

    def _coordinator(self) -> Any:
        return getattr(self.consumer, "_coordinator", None)


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, restart: Callable[[set[TopicPartition]], None]) -> None:
        self.restart = restart

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.restart(assigned)


async def ensure_topics(bootstrap: str, partitions: int, timeout: float = 30) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, partitions, 1) for t in TOPICS if t not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def broker_reachable(bootstrap: str, timeout: float = 3.0) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        await asyncio.wait_for(admin.list_topics(), timeout)
        return True
    except Exception:
        return False
    finally:
        try:
            await admin.close()
        except Exception:
            pass
