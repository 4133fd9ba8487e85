"""The consumer's liveness guard (bench/README.md, bug 6): a consumer that holds no partitions for longer than
`stall_seconds` is closed and replaced, and the new one reads what comes next. On the real broker.
The bound is above the rebalance timeout (4 s here): a join in progress is not a stall."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from tests.conftest import wait_until
from twoway.kit import metrics
from twoway.kit.db import make_engine, make_sessionmaker
from twoway.kit.embedded import EmbeddedBroker
from twoway.kit.kafka import ensure_topics, make_consumer, stop_consumer
from twoway.kit.outbox import OUTBOUND_TOPIC
from twoway.settings import Settings
from twoway.sync.consumer import consume_forever
from twoway.sync.engine import Item, SyncEngine


def _rebuilds(group: str) -> float:
    return metrics.CONSUMER_REBUILDS.labels(group=group)._value.get()


def _recording(settings: Settings, group: str) -> tuple[list[AIOKafkaConsumer], list[str],
                                                       Callable[[], AIOKafkaConsumer],
                                                       Callable[[ConsumerRecord], list[Item]]]:
    """Consumers made for `consume_forever`, kept to look at, and the tags of the messages they read."""
    made: list[AIOKafkaConsumer] = []
    seen: list[str] = []

    def make() -> AIOKafkaConsumer:
        made.append(make_consumer(settings, OUTBOUND_TOPIC, group))
        return made[-1]

    def to_items(record: ConsumerRecord) -> list[Item]:
        seen.append(json.loads(record.value)["tag"])
        return []  # nothing for the engine: the tests watch the consumer only

    return made, seen, make, to_items


async def test_a_consumer_left_without_partitions_is_rebuilt_and_reads_again(settings: Settings) -> None:
    group = f"{settings.kafka_group_prefix}-guard"
    made, seen, make, to_items = _recording(settings, group)
    engine = make_engine(settings.require_database_url(), pool_size=1)
    sync = SyncEngine(make_sessionmaker(engine), {}, settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.require_kafka())
    await producer.start()
    stop = asyncio.Event()
    before = _rebuilds(group)
    task = asyncio.create_task(consume_forever(make, group, sync, to_items, stop, stall_seconds=8.0))
    try:
        await producer.send_and_wait(OUTBOUND_TOPIC, json.dumps({"tag": "first"}).encode())
        assert await wait_until(lambda: "first" in seen, timeout=30)
        # Force the stuck state: the member leaves its subscription and so holds nothing, for good.
        made[0].unsubscribe()
        assert await wait_until(lambda: _rebuilds(group) > before and len(made) > 1, timeout=30)
        await producer.send_and_wait(OUTBOUND_TOPIC, json.dumps({"tag": "second"}).encode())
        assert await wait_until(lambda: "second" in seen, timeout=30)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(task, 30)
        await producer.stop()
        await sync.close()
        await engine.dispose()


async def _committed(settings: Settings, group: str, tp: TopicPartition) -> int | None:
    reader = AIOKafkaConsumer(bootstrap_servers=settings.require_kafka(), group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        return await reader.committed(tp)
    finally:
        await reader.stop()


async def _send(producer: AIOKafkaProducer, tag: str) -> None:
    await producer.send_and_wait(OUTBOUND_TOPIC, json.dumps({"tag": tag}).encode(), partition=0)


async def test_a_position_past_the_end_is_read_from_the_beginning(settings: Settings) -> None:
    """The dev broker answers a fetch beyond a partition's end with nothing, forever (Kafka would say
    OFFSET_OUT_OF_RANGE): a group whose committed offset outlived the log must start over, not wait."""
    group = f"{settings.kafka_group_prefix}-past-end"
    tp = TopicPartition(OUTBOUND_TOPIC, 0)
    stale = make_consumer(settings, OUTBOUND_TOPIC, group)
    await stale.start()
    assert await wait_until(lambda: tp in stale.assignment(), timeout=30)
    await stale.commit({tp: OffsetAndMetadata(500, "")})  # an offset from before the broker lost its log
    await stop_consumer(stale)  # leaves: the next member need not wait out its session
    seen: list[str] = []
    async with _consuming(settings, group, seen) as producer:
        await _send(producer, "after the wipe")
        assert await wait_until(lambda: "after the wipe" in seen, timeout=40)
    assert (await _committed(settings, group, tp) or 0) <= 1


async def test_offsets_seen_before_a_broker_restart_are_not_committed_after_it(settings: Settings,
                                                                               broker: EmbeddedBroker) -> None:
    group = f"{settings.kafka_group_prefix}-restart"
    tp = TopicPartition(OUTBOUND_TOPIC, 0)
    seen: list[str] = []
    async with _consuming(settings, group, seen) as producer:
        for i in range(20):
            await _send(producer, f"before {i}")
        assert await wait_until(lambda: "before 19" in seen, timeout=30)
        broker.stop(hard=True)
        broker.start()  # same port, empty memory
        await ensure_topics(broker.bootstrap, settings.kafka_topic_partitions)
        for i in range(3):
            await _send(producer, f"after {i}")
        assert await wait_until(lambda: "after 2" in seen, timeout=60)
    # The group's offset on the new log is its end (3). Before the fix the pipeline went on from what it had
    # seen before the restart (20): it committed nothing, or, when its commit lagged, that stale offset,
    # and a next owner reading from there waited for good.
    assert await _committed(settings, group, tp) == 3


@contextlib.asynccontextmanager
async def _consuming(settings: Settings, group: str, seen: list[str]) -> AsyncIterator[AIOKafkaProducer]:
    def to_items(record: ConsumerRecord) -> list[Item]:
        seen.append(json.loads(record.value)["tag"])
        return []

    engine = make_engine(settings.require_database_url(), pool_size=1)
    sync = SyncEngine(make_sessionmaker(engine), {}, settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.require_kafka())
    await producer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(consume_forever(lambda: make_consumer(settings, OUTBOUND_TOPIC, group), group, sync,
                                               to_items, stop, stall_seconds=30.0))
    try:
        yield producer
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(task, 30)
        await producer.stop()
        await sync.close()
        await engine.dispose()


async def test_a_consumer_whose_start_failed_is_replaced_by_a_new_one(settings: Settings,
                                                                     broker: EmbeddedBroker) -> None:
    """aiokafka does not restart a stopped consumer: one whose start failed (the broker was away) and was
    started again reported ConsumerStoppedError on every poll, for good (seen in a chaos run: a worker
    restarted into a broker restart). Each try must be a new consumer, and it must then read."""
    group = f"{settings.kafka_group_prefix}-start"
    made, seen, make, to_items = _recording(settings, group)
    engine = make_engine(settings.require_database_url(), pool_size=1)
    sync = SyncEngine(make_sessionmaker(engine), {}, settings)
    stop = asyncio.Event()
    broker.stop(hard=True)
    task = asyncio.create_task(consume_forever(make, group, sync, to_items, stop, stall_seconds=30.0))
    try:
        assert await wait_until(lambda: len(made) >= 2, timeout=30), "a failed start was retried on the same consumer"
        broker.start()  # same port, empty memory
        await ensure_topics(broker.bootstrap, settings.kafka_topic_partitions)
        producer = AIOKafkaProducer(bootstrap_servers=settings.require_kafka())
        await producer.start()
        try:
            await _send(producer, "after the start failed")
            assert await wait_until(lambda: "after the start failed" in seen, timeout=60)
        finally:
            await producer.stop()
    finally:
        if broker.proc is None or broker.proc.poll() is not None:
            broker.start()  # the next tests need it
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(task, 30)
        await sync.close()
        await engine.dispose()
