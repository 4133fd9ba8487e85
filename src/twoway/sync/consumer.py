"""A Kafka consumer that keeps many records in flight and commits offsets only below the oldest unfinished.

Messages become items (one record each); messages about a record already in flight fold into one more
pass after it. Each loop turn: fetch what fits, lock+read+plan what is ready (records held elsewhere wait
a moment, in memory), and write back whatever finished, all in one transaction. A slow record never holds
up the next batch; its message simply keeps its partition's committed offset below it until it is done
(the bookkeeping is `sync/offsets.py`; everything aiokafka-specific is `kit/kafka.GroupMember`).

A liveness guard (`consume_forever`): a consumer that holds no partitions, or whose partitions get no
fetch answer while nothing else moves, for `stall_seconds` is closed and replaced by a new one (bench/README.md,
bug 6). Offsets are committed only below work written back, so the new consumer redoes at most what was in
flight (the handlers are idempotent) and skips nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from twoway.kit import metrics
from twoway.kit.kafka import (
    AIOKafkaConsumer,
    Batch,
    ConsumerRecord,
    ConsumerStoppedError,
    GroupMember,
    TopicPartition,
)
from twoway.logs import get_logger
from twoway.sync.engine import Item, Job, SyncEngine
from twoway.sync.offsets import OffsetLedger, Where
from twoway.sync.quiet import Quiet

log = get_logger(__name__)
quiet = Quiet(log)
BUSY_RETRY_SECONDS = 0.1
POLL_MS = 500  # an empty fetch returns after this long
MAX_RECORDS = 500  # one fetch's most messages


@dataclass
class _Entry:
    item: Item
    offsets: list[Where[TopicPartition]] = field(default_factory=list)
    again: list[Where[TopicPartition]] | None = None  # messages that came while in flight
    again_item: Item | None = None  # what those messages ask, folded (see _fold)
    not_before: float = 0.0


class Pipeline:
    def __init__(self, member: GroupMember, group: str, engine: SyncEngine,
                 to_items: Callable[[ConsumerRecord], list[Item]], stop: asyncio.Event, *,
                 max_in_flight: int = 256, on_assigned: Callable[[], None] | None = None,
                 linger_ms: int = 0, commit_every: float = 0.2, stall_seconds: float = 0.0) -> None:
        self.member = member
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
        self.offsets: OffsetLedger[TopicPartition] = OffsetLedger()
        self._checked_ends = 0.0
        self._wake = asyncio.Event()
        self._fetch: asyncio.Future[Batch] | None = None
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
        """Turn after turn until stopped or stuck; on the way out, finish and write back what is in flight."""
        loop = asyncio.get_running_loop()
        self._moved_at = loop.time()
        try:
            while not self.stop.is_set():
                await self._turn()
                if self._stuck(loop.time()):
                    self.stalled = True
                    self.stall_state = self._state()
                    break
        finally:
            await self._cancel_fetch()
            await self._drain()

    async def _turn(self) -> None:
        """Fetch what fits, wait for a fetch, a finished record or a due retry, then move everything on."""
        loop = asyncio.get_running_loop()
        if self._fetch is None and len(self.waiting) + len(self.flying) < self.max_in_flight:
            self._fetch = asyncio.ensure_future(self.member.fetch(POLL_MS, MAX_RECORDS))
        await self._wait(self._next_due(loop.time()))
        fetch = self._fetch
        if fetch is not None and fetch.done():
            self._fetch = None
            self._accept(await self._fetched(fetch))
        await self._flush()
        await self._admit(loop.time())
        await self._past_the_end(loop.time())
        await self._commit(loop.time())

    async def _wait(self, timeout: float) -> None:
        wakers = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self.stop.wait())]
        waits: set[asyncio.Future[Any]] = {*wakers}
        if self._fetch is not None:
            waits.add(self._fetch)
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waker in wakers:
            waker.cancel()
        self._wake.clear()

    async def _fetched(self, fetch: asyncio.Future[Batch]) -> Batch:
        """The finished fetch's messages, and (with a linger) those of the same burst."""
        batch = self._take(fetch)
        if batch and self.linger:
            # Let a burst finish arriving: ten changes to one record become one pass.
            await asyncio.sleep(self.linger)
            with contextlib.suppress(Exception):
                more = await self.member.fetch(0, MAX_RECORDS)
                for tp, msgs in more.items():
                    batch.setdefault(tp, []).extend(msgs)
        return batch

    async def _cancel_fetch(self) -> None:
        if self._fetch is not None:
            self._fetch.cancel()
            with contextlib.suppress(BaseException):
                await self._fetch
            self._fetch = None

    def _take(self, fetch: asyncio.Future[Batch]) -> Batch:
        try:
            batch = fetch.result()
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
        if self.on_assigned is not None and self.member.assignment():
            self.on_assigned()
            self.on_assigned = None
        return batch

    def restart_offsets(self, partitions: Iterable[TopicPartition]) -> None:
        """These partitions' positions start over from the group's committed offset (a rebalance) or from
        the beginning (a wiped log): forget what we saw and committed of them before (bug 6; see
        `sync/offsets.py`)."""
        self.offsets.restart(partitions)

    async def _past_the_end(self, now: float) -> None:
        """A position beyond the partition's end means its log was wiped (a broker that keeps topics in
        memory restarted). Kafka would answer OFFSET_OUT_OF_RANGE and reset the position; the dev broker
        answers nothing, forever. Start over from the beginning, as `auto_offset_reset` says."""
        if now - self._checked_ends < 1.0:
            return
        self._checked_ends = now
        for tp in self.member.assignment():
            try:
                await self._rewind_if_past_the_end(tp)
            except (TimeoutError, AssertionError):
                continue  # no valid position yet, or the assignment moved: next turn
            except Exception as exc:
                quiet.warning("consumer end check failed", key=self.group, group=self.group, error=repr(exc)[:200])

    async def _rewind_if_past_the_end(self, tp: TopicPartition) -> None:
        end = self.member.highwater(tp)
        if end is None:
            return
        position = await asyncio.wait_for(self.member.position(tp), 0.5)
        if position <= end:
            return
        log.warning("consumer position past the end of its partition; reading it from the beginning",
                    group=self.group, partition=tp.partition, position=position, end=end)
        self.restart_offsets([tp])
        await asyncio.wait_for(self.member.seek_to_beginning(tp), 5)
        metrics.CONSUMER_RESETS.labels(group=self.group).inc()

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
        if self.member.rejoin_pending():
            self._rejoin_since = self._rejoin_since or now
            if now - self._rejoin_since > self.stall_seconds:
                return True
        else:
            self._rejoin_since = 0.0
        if self._healthy_idle():
            self._moved_at = now
        return now - self._moved_at > self.stall_seconds

    def _healthy_idle(self) -> bool:
        # An empty assignment may mean "joined, no partition for us" (more members than partitions: healthy)
        # or "not joined" (stuck).
        assigned = self.member.assignment()
        if not assigned:
            return self.member.joined()
        return self.member.fetched_within(assigned, self.stall_seconds)

    def _state(self) -> dict[str, Any]:
        """What the stalled consumer looked like, for the log: enough to tell a stuck join from a dead fetch."""
        return {**self.member.state(), "waiting": len(self.waiting), "in_flight": len(self.flying)}

    def _next_due(self, now: float) -> float:
        if not self.waiting:
            return 1.0
        due = min(e.not_before for e in self.waiting.values())
        return max(0.0, min(1.0, due - now))

    def _accept(self, batch: Batch) -> None:
        for tp, msgs in batch.items():
            metrics.CONSUMED.labels(group=self.group, topic=tp.topic).inc(len(msgs))
            for msg in msgs:
                items = self.to_items(msg)
                where = self.offsets.accept(tp, msg.offset, len(items))
                for item in items:
                    self._queue(item, where)

    def _queue(self, item: Item, where: Where[TopicPartition]) -> None:
        """A record already in flight gets one more pass after it; one already waiting does both in one."""
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
        self.offsets.done(entry.offsets)
        entry.offsets = []

    async def _commit(self, now: float, force: bool = False) -> None:
        if not force and now - self._last_commit < self.commit_every:
            return
        self._last_commit = now
        assigned = self.member.assignment()
        offsets = self.offsets.committable(assigned)
        if not offsets:
            return
        try:
            await self.member.commit(offsets)
            self.offsets.commit_succeeded(offsets)
        except Exception as exc:
            # A rebalance took partitions away; their new owner handles the messages again, harmlessly.
            quiet.warning("offset commit failed", key=self.group, group=self.group, error=repr(exc)[:200])
        self.offsets.keep_only(assigned)

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
        member = GroupMember(make())
        pipeline = Pipeline(member, group, engine, to_items, stop, on_assigned=on_assigned,
                            stall_seconds=stall_seconds, **kw)
        member.resubscribe(pipeline.restart_offsets)
        if not await _start(member, group, stop):
            # A consumer whose start failed is stopped for good (aiokafka does not restart one): the next
            # try is a new consumer. Retrying the old one left a closed consumer polled in a loop.
            continue
        try:
            await pipeline.run()
        finally:
            # Leaving the group may hang on a coordinator in a bad state; the session timeout covers it.
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(member.stop(), 10)
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


async def _start(member: GroupMember, group: str, stop: asyncio.Event) -> bool:
    """Start the consumer; on failure close it and wait a second (or for the stop) before the next try."""
    try:
        await member.start()
        return True
    except Exception as exc:
        quiet.warning("consumer start failed; retrying", key=group, group=group, error=repr(exc)[:200])
        await member.discard()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)
    return False

