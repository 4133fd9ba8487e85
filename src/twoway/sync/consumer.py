"""A Kafka consumer that keeps many records in flight and commits offsets only below the oldest unfinished.

Messages become items (one record each); messages about a record already in flight fold into one more
pass after it. Each loop turn: fetch what fits, lock+read+plan what is ready (records held elsewhere wait
a moment, in memory), and write back whatever finished, all in one transaction. A slow record never holds
up the next batch; its message simply keeps its partition's committed offset below it until it is done.

A liveness guard (`consume_forever`): a consumer that holds no partitions, or whose partitions get no
fetch answer while nothing else moves, for `stall_seconds` is closed and replaced by a new one (bench/README.md,
bug 6). Offsets are committed only below work written back, so the new consumer redoes at most what was in
flight (the handlers are idempotent) and skips nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import ConsumerStoppedError
from aiokafka.structs import OffsetAndMetadata

from twoway.kit import metrics
from twoway.kit.kafka import stop_consumer
from twoway.logs import get_logger
from twoway.sync.engine import Item, Job, SyncEngine
from twoway.sync.quiet import Quiet

log = get_logger(__name__)
quiet = Quiet(log)
BUSY_RETRY_SECONDS = 0.1
Where = tuple[TopicPartition, int, int]  # partition, offset, the partition's epoch when the message came


@dataclass
class _Entry:
    item: Item
    offsets: list[Where] = field(default_factory=list)
    again: list[Where] | None = None  # messages that came while in flight
    again_item: Item | None = None  # what those messages ask, folded (see _fold)
    not_before: float = 0.0


class Pipeline:
    def __init__(self, consumer: AIOKafkaConsumer, group: str, engine: SyncEngine,
                 to_items: Callable[[ConsumerRecord], list[Item]], stop: asyncio.Event, *,
                 max_in_flight: int = 256, on_assigned: Callable[[], None] | None = None,
                 linger_ms: int = 0, commit_every: float = 0.2, stall_seconds: float = 0.0) -> None:
        self.consumer = consumer
        self.group = group
        self.engine = engine
        self.to_items = to_items
        self.stop = stop
        self.max_in_flight = max_in_flight
        self.on_assigned = on_assigned
        self.linger = linger_ms / 1000
        self.commit_every = commit_every
        self.waiting: dict[Any, _Entry] = {}
        self.flying: dict[Any, _Entry] = {}
        self.finished: list[tuple[_Entry, Job]] = []
        self.outstanding: dict[TopicPartition, dict[int, int]] = {}  # offset -> items not yet done
        self.seen: dict[TopicPartition, int] = {}  # next offset after the last message seen
        self.committed: dict[TopicPartition, int] = {}
        # Bumped when a partition's offsets start over (assigned anew, or its log was wiped): work accepted
        # under an older epoch no longer counts towards what is committed.
        self.epochs: dict[TopicPartition, int] = {}
        self._checked_ends = 0.0
        self._wake = asyncio.Event()
        self._writing: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_commit = 0.0
        self.stall_seconds = stall_seconds  # 0: no guard
        self.stalled = False
        self.closed = False  # the consumer was stopped under us: rebuild it
        self.stall_state: dict[str, Any] = {}
        self._moved_at = 0.0
        self._rejoin_since = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        fetch: asyncio.Task[Any] | None = None
        self._moved_at = loop.time()
        try:
            while not self.stop.is_set():
                if fetch is None and len(self.waiting) + len(self.flying) < self.max_in_flight:
                    fetch = asyncio.ensure_future(self.consumer.getmany(timeout_ms=500, max_records=500))
                waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._wake.wait()),
                                                   asyncio.ensure_future(self.stop.wait())}
                if fetch is not None:
                    waits.add(fetch)
                timeout = self._next_due(loop.time())
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    if w is not fetch:
                        w.cancel()
                self._wake.clear()
                if fetch is not None and fetch.done():
                    batch = self._take(fetch)
                    fetch = None
                    if batch and self.linger:
                        # Let a burst finish arriving: ten changes to one record become one pass.
                        await asyncio.sleep(self.linger)
                        with contextlib.suppress(Exception):
                            more = await self.consumer.getmany(timeout_ms=0, max_records=500)
                            for tp, msgs in more.items():
                                batch.setdefault(tp, []).extend(msgs)
                    self._accept(batch)
                await self._flush()
                await self._admit(loop.time())
                await self._past_the_end(loop.time())
                await self._commit(loop.time())
                if self._stuck(loop.time()):
                    self.stalled = True
                    self.stall_state = self._state()
                    break
        finally:
            if fetch is not None:
                fetch.cancel()
                with contextlib.suppress(BaseException):
                    await fetch
            await self._drain()

    def _take(self, fetch: asyncio.Task[Any]) -> dict[TopicPartition, list[ConsumerRecord]]:
        try:
            batch: dict[TopicPartition, list[ConsumerRecord]] = fetch.result()
        except ConsumerStoppedError:
            # Closed for good (a stop we did not make): no poll will ever answer. Rebuilt at once, where
            # polling it again spun the loop (200,000 failed polls in 30 s, seen in a chaos run).
            self.closed = True
            return {}
        except Exception as exc:
            quiet.warning("consumer poll failed", key=self.group, group=self.group, error=repr(exc)[:200])
            return {}
        if batch:
            self._moved_at = asyncio.get_running_loop().time()
        if self.on_assigned is not None and self.consumer.assignment():
            self.on_assigned()
            self.on_assigned = None
        return batch

    def restart_offsets(self, partitions: Sequence[TopicPartition] | set[TopicPartition]) -> None:
        """These partitions' positions start over from the group's committed offset (a rebalance) or from
        the beginning (a wiped log): forget what we saw and committed of them before.

        Why: after the broker lost its memory the group rejoined and got the same partitions back, and we
        committed the offset we had seen before the restart (say 500) to a topic that holds 10 messages.
        The broker accepted it, and the next owner waited at 500 for good (bug 6)."""
        for tp in partitions:
            self.epochs[tp] = self.epochs.get(tp, 0) + 1
            self.seen.pop(tp, None)
            self.outstanding.pop(tp, None)
            self.committed.pop(tp, None)

    async def _past_the_end(self, now: float) -> None:
        """A position beyond the partition's end means its log was wiped (a broker that keeps topics in
        memory restarted). Kafka would answer OFFSET_OUT_OF_RANGE and reset the position; the dev broker
        answers nothing, forever. Start over from the beginning, as `auto_offset_reset` says."""
        if now - self._checked_ends < 1.0:
            return
        self._checked_ends = now
        for tp in self.consumer.assignment():
            try:
                end = self.consumer.highwater(tp)
                if end is None:
                    continue
                position = await asyncio.wait_for(self.consumer.position(tp), 0.5)
                if position <= end:
                    continue
                log.warning("consumer position past the end of its partition; reading it from the beginning",
                            group=self.group, partition=tp.partition, position=position, end=end)
                self.restart_offsets([tp])
                await asyncio.wait_for(self.consumer.seek_to_beginning(tp), 5)
                metrics.CONSUMER_RESETS.labels(group=self.group).inc()
            except (TimeoutError, AssertionError):
                continue  # no valid position yet, or the assignment moved: next turn
            except Exception as exc:
                quiet.warning("consumer end check failed", key=self.group, group=self.group, error=repr(exc)[:200])

    def _stuck(self, now: float) -> bool:
        """True once nothing has moved for `stall_seconds`: no message, no write-back, and the consumer is
        not a healthy idle member (in the group, every partition of its own answered by a recent fetch)."""
        if self.closed:
            return True
        if not self.stall_seconds:
            return False
        # A member asked to rejoin that never does keeps its old partitions (and may well read them) while
        # the group waits for it: the "rebalancing" heartbeats of bug 6. A healthy rejoin takes at most the
        # rebalance timeout.
        if self._rejoin_pending():
            self._rejoin_since = self._rejoin_since or now
            if now - self._rejoin_since > self.stall_seconds:
                return True
        else:
            self._rejoin_since = 0.0
        if self._healthy_idle():
            self._moved_at = now
        return now - self._moved_at > self.stall_seconds

    def _rejoin_pending(self) -> bool:
        wanted = getattr(getattr(self.consumer, "_coordinator", None), "_rejoin_needed_fut", None)
        return isinstance(wanted, asyncio.Future) and wanted.done()

    def _healthy_idle(self) -> bool:
        # aiokafka does not say publicly whether the member has joined: an empty assignment may mean
        # "joined, no partition for us" (more members than partitions: healthy) or "not joined" (stuck).
        assigned = self.consumer.assignment()
        if not assigned:
            return self._joined()
        recent = time.time() * 1000 - self.stall_seconds * 1000
        try:
            return all((self.consumer.last_poll_timestamp(tp) or 0) > recent for tp in assigned)
        except AssertionError:  # the assignment changed under us (aiokafka asserts it)
            return False

    def _joined(self) -> bool:
        subscription = getattr(getattr(self.consumer, "_subscription", None), "subscription", None)
        return subscription is not None and getattr(subscription, "assignment", None) is not None

    def _state(self) -> dict[str, Any]:
        """What the stalled consumer looked like, for the log: enough to tell a stuck join from a dead fetch."""
        coordinator = getattr(self.consumer, "_coordinator", None)
        return {"assigned": sorted(tp.partition for tp in self.consumer.assignment()),
                "joined": self._joined(), "rejoin_pending": self._rejoin_pending(),
                "waiting": len(self.waiting), "in_flight": len(self.flying),
                "generation": getattr(coordinator, "generation", None),
                "coordinator": getattr(coordinator, "coordinator_id", None),
                "member": str(getattr(coordinator, "member_id", ""))[-12:]}

    def _next_due(self, now: float) -> float:
        if not self.waiting:
            return 1.0
        due = min(e.not_before for e in self.waiting.values())
        return max(0.0, min(1.0, due - now))

    def _accept(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for tp, msgs in batch.items():
            metrics.CONSUMED.labels(group=self.group, topic=tp.topic).inc(len(msgs))
            pending = self.outstanding.setdefault(tp, {})
            for msg in msgs:
                self.seen[tp] = max(self.seen.get(tp, 0), msg.offset + 1)
                items = self.to_items(msg)
                if not items:
                    continue
                pending[msg.offset] = len(items)
                for item in items:
                    where = (tp, msg.offset, self.epochs.get(tp, 0))
                    if item.key in self.flying:
                        entry = self.flying[item.key]
                        entry.again = (entry.again or []) + [where]
                        entry.again_item = item if entry.again_item is None else _fold(entry.again_item, item)
                    elif item.key in self.waiting:
                        waiting = self.waiting[item.key]
                        waiting.offsets.append(where)
                        waiting.item = _fold(waiting.item, item)
                    else:
                        self.waiting[item.key] = _Entry(item, [where])

    async def _admit(self, now: float) -> None:
        room = self.max_in_flight - len(self.flying)
        ready = [e for e in self.waiting.values() if e.not_before <= now][:max(0, room)]
        if not ready:
            return
        try:
            jobs, busy = await self.engine.prepare([e.item for e in ready])
        except Exception as exc:
            quiet.warning("batch read failed; will retry", key=self.group, group=self.group, error=repr(exc)[:300])
            for e in ready:
                e.not_before = now + 1.0
            return
        by_item = {e.item: e for e in ready}
        for item in busy:
            # Held by another worker (or the API): try again in a moment; its offsets wait for it.
            by_item[item].not_before = now + BUSY_RETRY_SECONDS
        started = {j.item for j in jobs}
        for e in ready:
            if e.item not in started and e.item not in busy:
                self._done(e)  # not ours to do (a system or kind this connector does not sync)
                self.waiting.pop(e.item.key, None)
        for job in jobs:
            entry = self.waiting.pop(job.item.key)
            self.flying[job.item.key] = entry
            task = asyncio.create_task(self._run(entry, job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, entry: _Entry, job: Job) -> None:
        await self.engine.run(job)
        self.finished.append((entry, job))
        self._wake.set()

    async def _flush(self, wait: bool = False) -> None:
        """Write back what finished, in the background: while one write-back runs, the next fills up."""
        if self._writing is not None and (wait or self._writing.done()):
            await asyncio.shield(self._writing) if not self._writing.done() else None
            self._writing = None
        if self._writing is None and self.finished:
            done, self.finished = self.finished, []
            self._writing = asyncio.ensure_future(self._write(done))
            if wait:
                await self._writing
                self._writing = None

    async def _write(self, done: list[tuple[_Entry, Job]]) -> None:
        try:
            await self.engine.write_back([job for _, job in done])
        except asyncio.CancelledError:
            self.finished = done + self.finished  # stopping: the drain writes them back
            raise
        except Exception as exc:
            # Nothing committed; the locks are released. Do these records again.
            quiet.warning("write-back failed; redoing the records", key=self.group, group=self.group,
                          error=repr(exc)[:300])
            for entry, _job in done:
                self.flying.pop(entry.item.key, None)
                entry.offsets += entry.again or []
                if entry.again_item is not None:
                    entry.item = _fold(entry.item, entry.again_item)
                entry.again, entry.again_item = None, None
                entry.not_before = asyncio.get_running_loop().time() + 1.0
                self.waiting[entry.item.key] = entry
            return
        finally:
            self._wake.set()
        self._moved_at = asyncio.get_running_loop().time()
        for entry, _job in done:
            self.flying.pop(entry.item.key, None)
            self._done(entry)
            if entry.again:
                # Changed again while we worked: one more pass over the new state.
                self.waiting[entry.item.key] = _Entry(entry.again_item or entry.item, entry.again)

    def _done(self, entry: _Entry) -> None:
        for tp, offset, epoch in entry.offsets:
            if epoch != self.epochs.get(tp, 0):
                continue
            pending = self.outstanding.get(tp, {})
            if offset in pending:
                pending[offset] -= 1
                if pending[offset] <= 0:
                    del pending[offset]
        entry.offsets = []

    async def _commit(self, now: float, force: bool = False) -> None:
        if not force and now - self._last_commit < self.commit_every:
            return
        self._last_commit = now
        assigned = self.consumer.assignment()
        offsets = {}
        for tp, nxt in self.seen.items():
            if tp not in assigned:
                continue
            pending = self.outstanding.get(tp)
            upto = min(pending) if pending else nxt
            if self.committed.get(tp) != upto:
                offsets[tp] = OffsetAndMetadata(upto, "")
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
            for tp, meta in offsets.items():
                self.committed[tp] = meta.offset
        except Exception as exc:
            # A rebalance took partitions away; their new owner handles the messages again, harmlessly.
            quiet.warning("offset commit failed", key=self.group, group=self.group, error=repr(exc)[:200])
        for tp in list(self.seen):
            if tp not in assigned:
                self.seen.pop(tp, None)
                self.outstanding.pop(tp, None)
                self.committed.pop(tp, None)

    async def _drain(self, patience: float = 10.0) -> None:
        """On stop: let calls in flight finish and write them back, so little is done twice."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=patience)
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self._flush(wait=True)
            await self._flush(wait=True)
        with contextlib.suppress(Exception):
            await self._commit(0.0, force=True)


async def consume(consumer: AIOKafkaConsumer, group: str, engine: SyncEngine,
                  to_items: Callable[[ConsumerRecord], list[Item]], stop: asyncio.Event, **kw: Any) -> None:
    await Pipeline(consumer, group, engine, to_items, stop, **kw).run()


async def consume_forever(make: Callable[[], AIOKafkaConsumer], group: str, engine: SyncEngine,
                          to_items: Callable[[ConsumerRecord], list[Item]], stop: asyncio.Event, *,
                          stall_seconds: float, on_assigned: Callable[[], None] | None = None,
                          **kw: Any) -> None:
    """Run a pipeline on a fresh consumer; if it stalls, close it and start over with a new one.

    Why: after the broker restarted with its memory wiped, a group could stay "rebalancing" for good
    (bench/README.md, bug 6): the members heartbeat, nobody reads, nothing says so. A new consumer is a
    new member with no stale generation, coordinator or fetch state.
    """
    while not stop.is_set():
        consumer = make()
        pipeline = Pipeline(consumer, group, engine, to_items, stop, on_assigned=on_assigned,
                            stall_seconds=stall_seconds, **kw)
        consumer.subscribe(topics=sorted(consumer.subscription()), listener=_Rebalance(pipeline))
        if not await _start(consumer, group, stop):
            # A consumer whose start failed is stopped for good (aiokafka does not restart one): the next
            # try is a new consumer. Retrying the old one left a closed consumer polled in a loop.
            continue
        try:
            await pipeline.run()
        finally:
            # Leaving the group may hang on a coordinator in a bad state; the session timeout covers it.
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(stop_consumer(consumer), 10)
        if not pipeline.stalled:
            return
        on_assigned = pipeline.on_assigned
        metrics.CONSUMER_REBUILDS.labels(group=group).inc()
        log.warning("consumer stalled; rebuilding it", group=group, stalled_seconds=stall_seconds,
                    **pipeline.stall_state)


def _fold(a: Item, b: Item) -> Item:
    """Two messages for one record, done in one pass: the pass must do what either asks. A message that
    names an event someone already handled may cost nothing (`hint_only`); one without an event (a
    reconcile's repair, a retry, a sweep) must read the object. Kept as the first message's item alone,
    a repair folded behind a redelivered event was dropped: the pass saw only "handled"."""
    return replace(a, hint_only=a.hint_only and b.hint_only, hint=a.hint if a.hint is not None else b.hint)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.pipeline.restart_offsets(assigned)


async def _start(consumer: AIOKafkaConsumer, group: str, stop: asyncio.Event) -> bool:
    """Start the consumer; on failure close it and wait a second (or for the stop) before the next try."""
    try:
        await consumer.start()
        return True
    except Exception as exc:
        quiet.warning("consumer start failed; retrying", key=group, group=group, error=repr(exc)[:200])
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)
    return False


def partitions_of(batch: dict[TopicPartition, Sequence[ConsumerRecord]]) -> list[TopicPartition]:
    return list(batch)
