"""The consumer's liveness guard (bench/README.md, bug 6): a consumer that holds no partitions for longer than
`stall_seconds` is closed and replaced, and the new one reads what comes next. On the real broker.
The bound is above the rebalance timeout (6 s here): a join in progress is not a stall."""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from tests.conftest import wait_until
from twoway.kit import metrics
from twoway.kit.db import make_engine, make_sessionmaker
from twoway.kit.kafka import make_consumer
from twoway.kit.outbox import OUTBOUND_TOPIC
from twoway.settings import Settings
from twoway.sync.consumer import consume_forever
from twoway.sync.engine import Item, SyncEngine


def _rebuilds(group: str) -> float:
    return metrics.CONSUMER_REBUILDS.labels(group=group)._value.get()


async def test_a_consumer_left_without_partitions_is_rebuilt_and_reads_again(settings: Settings) -> None:
    group = f"{settings.kafka_group_prefix}-guard"
    made: list[AIOKafkaConsumer] = []
    seen: list[str] = []

    def make() -> AIOKafkaConsumer:
        made.append(make_consumer(settings, OUTBOUND_TOPIC, group))
        return made[-1]

    def to_items(record: ConsumerRecord) -> list[Item]:
        seen.append(json.loads(record.value)["tag"])
        return []  # nothing for the engine: the test watches the consumer only

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
