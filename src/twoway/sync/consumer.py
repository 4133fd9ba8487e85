"""A Kafka consumer loop that commits offsets only after the batch's work has committed in PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from twoway.kit import metrics
from twoway.logs import get_logger

log = get_logger(__name__)
BatchHandler = Callable[[Sequence[ConsumerRecord]], Awaitable[None]]


async def consume(consumer: AIOKafkaConsumer, group: str, handle: BatchHandler, stop: asyncio.Event,
                  *, max_records: int = 500, on_assigned: Callable[[], None] | None = None,
                  linger_ms: int = 0) -> None:
    while not stop.is_set():
        try:
            batch = await consumer.getmany(timeout_ms=500, max_records=max_records)
        except Exception as exc:
            log.warning("consumer poll failed", group=group, error=repr(exc)[:200])
            await _pause(stop, 1.0)
            continue
        if on_assigned is not None and consumer.assignment():
            on_assigned()
            on_assigned = None
        if not batch:
            continue
        if linger_ms:
            # Let a burst finish arriving: ten changes to one record become one unit of work.
            await asyncio.sleep(linger_ms / 1000)
            more = await consumer.getmany(timeout_ms=0, max_records=max_records)
            for tp, msgs in more.items():
                batch.setdefault(tp, []).extend(msgs)
        records = [r for msgs in batch.values() for r in msgs]
        try:
            await handle(records)
        except Exception as exc:
            # The work did not commit: rewind, so the same messages are handled again.
            log.error("batch failed; rewinding", group=group, error=repr(exc)[:300])
            for tp, msgs in batch.items():
                with contextlib.suppress(Exception):
                    consumer.seek(tp, msgs[0].offset)
            await _pause(stop, 1.0)
            continue
        offsets = {tp: OffsetAndMetadata(msgs[-1].offset + 1, "") for tp, msgs in batch.items()}
        for tp, msgs in batch.items():
            metrics.CONSUMED.labels(group=group, topic=tp.topic).inc(len(msgs))
        try:
            await consumer.commit(offsets)
        except Exception as exc:
            # A rebalance took the partitions away; the new owner re-handles them, harmlessly.
            log.warning("offset commit failed", group=group, error=repr(exc)[:200])


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def partitions_of(batch: dict[TopicPartition, list[ConsumerRecord]]) -> list[TopicPartition]:
    return list(batch)
