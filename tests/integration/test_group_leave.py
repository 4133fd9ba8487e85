"""A stopped consumer leaves its group at once, also from the group's first generation.

Tansu numbers generations from 0 and aiokafka leaves only from generation 1 up, so without
`stop_consumer` the member stayed in the group until its session expired, and the next worker of that
group waited for it (11 s instead of 3 s to get partitions). Read from the broker, not timed."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import wait_until
from twoway.kit.kafka import make_consumer, stop_consumer
from twoway.kit.outbox import OUTBOUND_TOPIC
from twoway.settings import Settings


async def _members(bootstrap: str, group: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    (described,) = response.groups  # (error_code, group, state, protocol_type, protocol, members)
    return [member[0] for member in described[5]]


async def test_a_stopped_consumer_leaves_its_group_from_generation_zero(settings: Settings) -> None:
    group = f"{settings.kafka_group_prefix}-leave"
    consumer = make_consumer(settings, OUTBOUND_TOPIC, group)
    await consumer.start()
    try:
        async def assigned() -> bool:
            await consumer.getmany(timeout_ms=100)
            return bool(consumer.assignment())

        assert await wait_until(assigned, timeout=30)
        assert consumer._coordinator.generation == 0, "the dev broker's first generation is 0: the case under test"
        members = await _members(settings.require_kafka(), group)
        assert len(members) == 1
    finally:
        await stop_consumer(consumer)
    assert await _members(settings.require_kafka(), group) == []
