"""Kafka clients configured one way for the whole project."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.group import LeaveGroupRequest

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
