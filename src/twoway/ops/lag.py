"""Consumer-group lag, read over one broker connection kept across reads.

A group's lag on a topic is the sum over its partitions of (end of the partition - the group's committed
offset). The end is the high watermark that a Fetch answers with, not ListOffsets(latest) alone: the dev
broker (Tansu) answers ListOffsets with the newest batch's base offset + 1, short by n - 1 whenever that
batch holds n > 1 records (the relay hands the producer many records at once, and it packs them into one
batch per partition). The lag then read too low until the next write, and a metric or a test waiting for
the true number waited forever. ListOffsets only supplies a valid offset to fetch at; a Fetch that neither
waits nor asks for data answers with the true high watermark, on Tansu and on Kafka alike.

A read that fails gives that group no number (the caller shows it as unknown, never a remembered value).
A failed connection is dropped and made anew on the next read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.errors import OffsetOutOfRangeError, for_code
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.offset import OffsetRequest
from aiokafka.structs import TopicPartition

LATEST = -1
NO_COMMIT = -1
FETCH_WAIT_MS = 100  # bounds a fetch the broker has nothing for; it answers at once when there is a record


@dataclass(frozen=True)
class LagReading:
    """One consumer group's distance from the end of its topic; `behind` is None when it could not be read."""

    group: str
    topic: str
    behind: int | None
    error: str | None = None


class LagReader:
    """Kept by whoever reads lag repeatedly (the API process); `read_lag` makes a one-off one otherwise."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._bootstrap: str | None = None
        self._client: AIOKafkaClient | None = None
        self._coordinators: dict[str, int] = {}
        self._stale_metadata = False
        self._connecting = asyncio.Lock()

    async def read(self, bootstrap: str, pairs: Sequence[tuple[str, str]]) -> list[LagReading]:
        """Every (group, topic) at once, each on its own: one that cannot be read does not hide the others."""
        topics = sorted({topic for _, topic in pairs})
        try:
            async with asyncio.timeout(self.timeout):
                client = await self._connect(bootstrap, topics)
                found = await asyncio.gather(*(self._ends(client, t) for t in topics), return_exceptions=True)
        except Exception as exc:
            await self.close()  # the connection itself failed: start over next time
            return [LagReading(group, topic, None, _describe(exc)) for group, topic in pairs]
        ends = dict(zip(topics, found, strict=True))

        async def one(group: str, topic: str) -> int:
            topic_ends = ends[topic]
            if isinstance(topic_ends, BaseException):
                raise topic_ends
            async with asyncio.timeout(self.timeout):
                committed = await self._committed(client, group, topic, sorted(topic_ends))
            return sum(max(0, end - max(committed.get(p, NO_COMMIT), 0)) for p, end in topic_ends.items())

        results = await asyncio.gather(*(one(g, t) for g, t in pairs), return_exceptions=True)
        return [LagReading(g, t, None, _describe(r)) if isinstance(r, BaseException) else LagReading(g, t, r)
                for (g, t), r in zip(pairs, results, strict=True)]

    async def close(self) -> None:
        client, self._client = self._client, None
        self._coordinators.clear()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def _connect(self, bootstrap: str, topics: list[str]) -> AIOKafkaClient:
        async with self._connecting:
            if self._client is not None and bootstrap != self._bootstrap:
                await self.close()
            if self._client is None:
                client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(self.timeout * 1000))
                try:
                    await client.bootstrap()
                    await client.set_topics(topics)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await client.close()
                    raise
                self._client, self._bootstrap, self._stale_metadata = client, bootstrap, False
            elif self._stale_metadata or set(topics) - set(self._client.cluster.topics()):
                self._stale_metadata = False
                await self._client.set_topics(topics)
                await self._client.force_metadata_update()
            return self._client

    async def _ends(self, client: AIOKafkaClient, topic: str) -> dict[int, int]:
        """partition -> end offset (the high watermark)."""
        by_leader: dict[int, list[int]] = defaultdict(list)
        for p in sorted(client.cluster.partitions_for_topic(topic) or ()):
            leader = client.cluster.leader_for_partition(TopicPartition(topic, p))
            if leader is None or leader < 0:
                self._stale_metadata = True
                raise LookupError(f"no leader for {topic}/{p}")
            by_leader[leader].append(p)
        if not by_leader:
            self._stale_metadata = True  # a topic created a moment ago: ask for metadata next time
            raise LookupError(f"topic {topic} not found")
        ends: dict[int, int] = {}
        for part in await asyncio.gather(*(self._leader_ends(client, node, topic, ps)
                                           for node, ps in by_leader.items())):
            ends.update(part)
        return ends

    async def _leader_ends(self, client: AIOKafkaClient, node: int, topic: str,
                           partitions: list[int]) -> dict[int, int]:
        listed = await client.send(node, OffsetRequest(-1, 0, [(topic, [(p, LATEST) for p in partitions])]))
        latest: dict[int, int] = {}
        for _, parts in listed.topics:
            for p, error_code, *info in parts:
                self._check(error_code)
                offset = info[-1]
                latest[p] = (offset[0] if offset else 0) if isinstance(offset, list) else int(offset)
        # Fetch one byte at the last offset ListOffsets admits: there is always a record there, so the broker
        # answers at once (Tansu waits out max_wait at an offset with nothing after it), with the partition's
        # true high watermark in the header. An empty partition (latest 0) has nothing to correct.
        ask = [(p, latest[p] - 1, 1) for p in partitions if latest[p] > 0]
        ends = dict(latest)
        if not ask:
            return ends
        fetched = await client.send(node, FetchRequest(FETCH_WAIT_MS, 0, 1, 0, [(topic, ask)]))
        answered = set()
        for _, parts in fetched.topics:
            for p, error_code, highwater, *_ in parts:
                if error_code == OffsetOutOfRangeError.errno:
                    answered.add(p)  # Kafka, the log truncated up to its end: ListOffsets is right there
                    continue
                self._check(error_code)
                ends[p] = max(ends[p], int(highwater))
                answered.add(p)
        if unanswered := {p for p, _, _ in ask} - answered:
            raise LookupError(f"no high watermark for {topic}/{sorted(unanswered)}")
        return ends

    async def _committed(self, client: AIOKafkaClient, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
        node = self._coordinators.get(group)
        if node is None:
            node = await client.coordinator_lookup(CoordinationType.GROUP, group)
            self._coordinators[group] = node
        try:
            response = await client.send(node, OffsetFetchRequest(group, [(topic, partitions)]))
            _raise_for(getattr(response, "error_code", 0))
            committed = {}
            for _, parts in response.topics:
                for p, offset, _metadata, error_code in parts:
                    _raise_for(error_code)
                    committed[p] = int(offset)
            return committed
        except Exception:
            self._coordinators.pop(group, None)  # the coordinator may have moved: look it up again next time
            raise

    def _check(self, error_code: int) -> None:
        if error_code:
            self._stale_metadata = True
            _raise_for(error_code)


def _raise_for(error_code: int) -> None:
    if error_code:
        raise for_code(error_code)()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]
