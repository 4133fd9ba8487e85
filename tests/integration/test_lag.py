"""Consumer lag against the real dev broker, where the end of a partition is not what ListOffsets says.

Tansu answers ListOffsets(latest) with the newest batch's base offset + 1, so two records published in one
batch to one partition read as one: the cause of issue 10's "lag never reached 2" (1 in ~4 runs of the
metrics test, whenever both customers' keys hashed to the same partition).
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from twoway.ops.lag import LagReader


async def _topic(bootstrap: str) -> str:
    name = f"lag-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1)])
    finally:
        await admin.close()
    return name


async def _one_batch(bootstrap: str, topic: str, partition: int, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, enable_idempotence=False)
    await producer.start()
    try:
        acks = [await producer.send(topic, b"x", partition=partition) for _ in range(n)]
        assert [m.offset for m in await asyncio.gather(*acks)] == list(range(n))  # one batch, n records
    finally:
        await producer.stop()


async def _commit(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


async def test_lag_counts_every_record_of_a_batch(kafka: str) -> None:
    topic = await _topic(kafka)
    fresh, partway = f"g-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await _one_batch(kafka, topic, partition=1, n=3)
    await _commit(kafka, partway, TopicPartition(topic, 1), 1)
    reader = LagReader()
    try:
        readings = await reader.read(kafka, [(fresh, topic), (partway, topic)])
        assert [(r.group, r.behind, r.error) for r in readings] == [(fresh, 3, None), (partway, 2, None)]
        await _one_batch(kafka, topic, partition=0, n=2)  # the same connection sees new writes
        assert [r.behind for r in await reader.read(kafka, [(fresh, topic), (partway, topic)])] == [5, 4]
    finally:
        await reader.close()


async def test_a_failed_read_has_no_number_and_the_next_one_reconnects(kafka: str) -> None:
    topic = await _topic(kafka)
    group = f"g-{uuid.uuid4().hex[:8]}"
    await _one_batch(kafka, topic, partition=0, n=2)
    reader = LagReader(timeout=3)
    try:
        assert [r.behind for r in await reader.read(kafka, [(group, topic)])] == [2]
        failed = await reader.read("127.0.0.1:9", [(group, topic)])
        assert failed[0].behind is None and failed[0].error
        assert [r.behind for r in await reader.read(kafka, [(group, topic)])] == [2]
    finally:
        await reader.close()
