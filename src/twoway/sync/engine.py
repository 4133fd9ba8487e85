"""The engine, in batches: lock and read (short), plan and call (no transaction held), write back (one).

1. `prepare`: take the records' locks in bulk (session advisory locks on one connection) and read rows,
   links, pending inbox events and create traces set-based, in one short transaction.
2. `run`: drive each record's pure plan (`twoway.sync.plan`) through its calls, concurrently, bounded
   by the connector's in-flight limit and guarded by its circuit breaker, holding no connection.
3. `write_back`: every outcome in one transaction of bulk statements; then the locks go.

Handlers never trust a message body: a plan starts from what is read, so duplicates, replays and
reordering are harmless.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twoway.connectors.base import BatchWrites, Connector, ConnectorError, CreateItem, Unavailable, UpdateItem
from twoway.kit import metrics, outbox, ratelimit, records
from twoway.kit.backoff import backoff_seconds
from twoway.kit.db import RecordLocks
from twoway.kit.outbox import record_key
from twoway.logs import get_logger
from twoway.settings import Settings
from twoway.sync import plan, sql
from twoway.sync.breaker import Breaker
from twoway.sync.coalesce import Coalescer
from twoway.sync.quiet import Quiet
from twoway.syncstate.words import Direction, Operation, Result, Status

logger = get_logger(__name__)
quiet = Quiet(logger)
# How long a plan waits for a uid another record's sync holds (it is held until that write-back, briefly).
UID_PATIENCE = 10.0


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Item:
    """One record's work: outbound (make `system` hold our row) or inbound (take in their object)."""

    direction: Direction
    kind: str
    system: str
    internal_id: int | None = None
    external_id: str | None = None
    hint_only: bool = False
    hint: int | None = None  # inbound: a row of ours the object may claim

    @property
    def key(self) -> tuple[str, str, str, object]:
        return (self.direction, self.kind, self.system,
                self.internal_id if self.direction == Direction.OUTBOUND else self.external_id)


@dataclass
class Job:
    item: Item
    locks: list[str]
    snapshot: plan.Snapshot
    outcome: plan.Outcome | None = None
    error: BaseException | None = None
    attempts_seen: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> plan.Outcome:
        """The outcome: the write-back gives every job one (a crash is an outcome too)."""
        assert self.outcome is not None
        return self.outcome


class Busy(Exception):
    pass


class SyncEngine:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], connectors: Mapping[str, Connector],
                 settings: Settings, *, locks: RecordLocks | None = None,
                 breakers: Mapping[str, Breaker] | None = None) -> None:
        self.sessions = sessions
        self.connectors = connectors
        self.settings = settings
        self._own_locks = locks is None
        self.locks = locks or RecordLocks(_url(sessions), application_name="twoway-locks")
        self.breakers: dict[str, Breaker] = dict(breakers or {})
        for system in connectors:
            self.breakers.setdefault(system, Breaker.from_settings(system, settings))
        self._in_flight = {s: asyncio.Semaphore(c.max_in_flight or settings.sync_max_in_flight)
                           for s, c in connectors.items()}
        self._marks = Coalescer(self._mark_started_many)
        self._ids: dict[str, list[int]] = defaultdict(list)
        self._id_lock = asyncio.Lock()
        self._find = Coalescer(self._find_links_many)
        self._batches: dict[tuple[str, str, str], Coalescer] = {}

    # -- the one-record entry points (tests, tools) -------------------------------------------

    async def outbound(self, kind: str, internal_id: int, system: str) -> str:
        """Make `system` hold what our row holds. Returns the outcome, for logs and tests."""
        if kind not in self.connectors[system].kinds:
            return Result.UNSUPPORTED
        return await self.one(Item(Direction.OUTBOUND, kind, system, internal_id=internal_id))

    async def inbound(self, system: str, kind: str, external_id: str, *, hint_only: bool = False) -> str:
        return await self.one(Item(Direction.INBOUND, kind, system, external_id=external_id, hint_only=hint_only))

    async def one(self, item: Item, patience: float = 30.0) -> str:
        """One record through the whole batch path, waiting while another holds it."""
        deadline = asyncio.get_running_loop().time() + patience
        try:
            while True:
                jobs, _busy = await self.prepare([item])
                if jobs:
                    break
                if asyncio.get_running_loop().time() > deadline:
                    raise Busy(f"{item} is locked elsewhere")
                await asyncio.sleep(0.05)
            job = jobs[0]
            await self.run(job)
            if job.error is not None:
                await self.locks.unlock(job.locks)
                raise job.error  # a crash before the write-back: nothing of ours commits
            await self.write_back(jobs)
            return Result.FAILED if job.done.failure else job.done.result
        finally:
            if self._own_locks:
                await self.locks.close()

    # -- 1. lock and read ------------------------------------------------------------------------

    async def prepare(self, items: Sequence[Item]) -> tuple[list[Job], list[Item]]:
        """Lock what can be locked and read it all. Returns the jobs, and the items held elsewhere."""
        items = [i for i in items if i.system in self.connectors and i.kind in self.connectors[i.system].kinds]
        wanted = await self._lock_keys(items)
        granted = await self.locks.try_lock(k for keys in wanted.values() for k in keys)
        ready, busy = [], []
        taken: set[str] = set()  # a key goes to one item only, even when two items of this batch want it
        for item in items:
            keys = wanted[item]
            if all(k in granted and k not in taken for k in keys):
                ready.append(item)
                taken.update(keys)
            else:
                busy.append(item)
        await self.locks.unlock(granted - taken)
        if not ready:
            return [], busy
        try:
            jobs = await self._read(ready, wanted)
        except BaseException:
            await self.locks.unlock(k for i in ready for k in wanted[i])
            raise
        # A link may have appeared since the keys were chosen: never run without its record's lock.
        late = [j for j in jobs if j.snapshot.link is not None
                and record_key(j.item.kind, j.snapshot.link.internal_id) not in j.locks]
        if late:
            await self.locks.unlock(k for j in late for k in j.locks)
            busy += [j.item for j in late]
            jobs = [j for j in jobs if j not in late]
        return jobs, busy

    async def _lock_keys(self, items: Sequence[Item]) -> dict[Item, list[str]]:
        out: dict[Item, list[str]] = {}
        inbound: dict[tuple[str, str], list[Item]] = defaultdict(list)
        for item in items:
            if item.direction == Direction.OUTBOUND:
                assert item.internal_id is not None
                out[item] = [record_key(item.kind, item.internal_id)]
            else:
                inbound[(item.system, item.kind)].append(item)
        if not inbound:
            return out
        async with self.sessions() as session:
            for (system, kind), group in inbound.items():
                rows = (await session.execute(sql.INBOUND_KEYS, {
                    "system": system, "kind": kind, "xids": list({i.external_id for i in group})})).all()
                linked: dict[str, int] = {}
                named: dict[str, int] = {}
                for r in rows:
                    if r.linked is not None:
                        linked[r.xid] = int(r.linked)
                    elif r.payload is not None and r.xid not in named:
                        seen = self.connectors[system].snapshot(kind, r.payload)
                        if seen is not None and seen.internal_id is not None:
                            named[r.xid] = seen.internal_id
                for item in group:
                    assert item.external_id is not None
                    keys = [f"{system}:{kind}:{item.external_id}"]
                    rid = linked.get(item.external_id)
                    # Unlinked: the rows it may claim (what its events said; what a fetch said, the hint).
                    for claim in ([rid] if rid is not None else [named.get(item.external_id), item.hint]):
                        if claim is not None and record_key(kind, claim) not in keys:
                            keys.append(record_key(kind, claim))
                    out[item] = keys
            await session.rollback()
        return out

    async def _read(self, items: Sequence[Item], keys: Mapping[Item, list[str]]) -> list[Job]:
        now = _now()
        groups: dict[tuple[str, str], list[Item]] = defaultdict(list)
        for item in items:
            groups[(item.kind, item.system)].append(item)
        jobs: list[Job] = []
        async with self.sessions() as session:
            for (kind_name, system), group in groups.items():
                kind = records.kind(kind_name)
                connector = self.connectors[system]
                claims = {int(k.split(":", 1)[1]): i for i in group if i.direction == Direction.INBOUND
                          for k in keys[i][1:]}
                iids = {i.internal_id for i in group if i.internal_id is not None} | set(claims)
                xids = {i.external_id for i in group if i.external_id is not None}
                params = {"kind": kind_name, "system": system}
                links = (await session.execute(sql.LINKS, {**params, "iids": list(iids), "xids": list(xids)})).all()
                by_iid = {r.internal_id: r for r in links}
                by_xid = {r.external_id: r for r in links}
                iids |= {r.internal_id for r in links}
                found = await sql.read_rows(session, kind, list(iids))
                rows = {r.id: r for r in found}
                xids |= {r.external_id for r in links}
                pending: dict[str, list[plan.Pending]] = defaultdict(list)
                for e in (await session.execute(sql.PENDING, {**params, "xids": list(xids)})).all():
                    pending[e.external_id].append(plan.Pending(e.id, connector.snapshot(kind_name, e.payload),
                                                               e.event_created, e.received_at))
                handled: dict[str, datetime] = {}
                if pending:
                    handled = {r.external_id: r.created for r in (await session.execute(
                        sql.HANDLED, {**params, "xids": list(pending)})).all() if r.created is not None}
                unlinked = [i.internal_id for i in group
                            if i.direction == Direction.OUTBOUND and i.internal_id not in by_iid]
                traces: dict[int, plan.Trace] = {}
                if unlinked:
                    for t in (await session.execute(sql.TRACES, {**params, "iids": unlinked})).all():
                        traces[t.internal_id] = _trace(t.ok, t.started)
                    if kind.has_uid:
                        for r in (await session.execute(sql.RESTORED, {"kind": kind_name, "iids": unlinked})).all():
                            traces[r.internal_id] = replace(traces.get(r.internal_id, plan.Trace()), restored=True)
                parent_links: dict[int, str] = {}
                parents_gone: frozenset[int] = frozenset()
                if kind.rules.parent is not None:
                    pids = {int(v) for r in rows.values() if (v := getattr(r, kind.rules.parent.field, None))}
                    if pids:
                        found_parents = (await session.execute(sql.PARENT_LINKS, {
                            "kind": kind.rules.parent.kind, "system": system, "iids": list(pids)})).all()
                        parent_links = {r.internal_id: r.external_id for r in found_parents}
                        # Gone over there, or deleted here before it ever got there: it never will.
                        unlinked = [p for p in pids if p not in parent_links]
                        never = {int(r.id) for r in (await session.execute(
                            sql.deleted_ids(kind.rules.parent.kind), {"ids": unlinked})).all()} if unlinked else set()
                        parents_gone = frozenset({r.internal_id for r in found_parents if r.gone} | never)
                for item in group:
                    link_row = by_iid.get(item.internal_id) if item.direction == Direction.OUTBOUND \
                        else by_xid.get(item.external_id)
                    link = _link(link_row)
                    rid = item.internal_id if item.direction == Direction.OUTBOUND \
                        else (link.internal_id if link else None)
                    ours = _ours(kind, rows.get(rid)) if rid is not None else None
                    item_claims = {}
                    if item.direction == Direction.INBOUND and link is None:
                        for k in keys[item][1:]:
                            cid = int(k.split(":", 1)[1])
                            item_claims[cid] = plan.Claim(_ours(kind, rows.get(cid)), cid in by_iid)
                    xid = link.external_id if link else item.external_id
                    snap = plan.Snapshot(
                        kind=kind_name, system=system, now=now, ours=ours, link=link,
                        pending=tuple(pending.get(xid, ())) if xid else (),
                        trace=traces.get(rid, plan.Trace()) if rid is not None else plan.Trace(),
                        rules=kind.rules, policy=self.settings.sync_conflict_policy, uids=kind.has_uid,
                        claims=item_claims,
                        parent_links=parent_links, parents_gone=parents_gone,
                        idempotency_window=connector.idempotency_window,
                        event_objects=kind_name in connector.event_objects,
                        seen=plan.seen_until(link_row.updated_at if link_row else None, handled.get(xid or "")))
                    jobs.append(Job(item, keys[item], snap))
            await session.rollback()
        return jobs

    # -- 2. plan and call ----------------------------------------------------------------------

    async def run(self, job: Job) -> None:
        """Drive the record's plan through its calls. No connection or transaction is held here."""
        s, item = job.snapshot, job.item
        steps = plan.outbound(s) if item.direction == Direction.OUTBOUND else \
            plan.inbound(s, item.external_id or "", hint_only=item.hint_only)
        value: Any = None
        error: ConnectorError | None = None
        # Every call of this pass waits for the rate limit as old as the pass: a record's next step goes
        # before later records' first steps, so records finish while the limit stays full (ratelimit.py).
        priority = ratelimit.PRIORITY.set(asyncio.get_running_loop().time())
        try:
            while True:
                try:
                    call = steps.send(value) if error is None else steps.throw(error)
                except StopIteration as done:
                    job.outcome = done.value
                    return
                value, error = None, None
                try:
                    value = await self._call(item, call, job.locks)
                except ConnectorError as exc:
                    error = exc
        except Exception as exc:  # a bug or a crash in a connector: this record is retried, the batch goes on
            job.error = exc
        finally:
            ratelimit.PRIORITY.reset(priority)

    async def _call(self, item: Item, call: plan.Call, locks: list[str] | None = None) -> Any:
        """One call of a plan; `locks`: the record's, which a lock the call takes joins (FindUid)."""
        if isinstance(call, plan.MarkStarted):
            assert item.internal_id is not None
            return await self._marks.submit((item.kind, item.system, item.internal_id, call.key, dict(call.fields)))
        if isinstance(call, plan.NewId):
            return await self._new_id(call.kind or item.kind)
        if isinstance(call, plan.FindLink):
            return await self._find.submit((call.kind, item.system, call.external_id))
        if isinstance(call, plan.FindUid):
            assert locks is not None
            return await self._find_uid(item.kind, call.uid, locks)
        connector = self.connectors[item.system]
        breaker = self.breakers[item.system]
        if not breaker.allow():
            raise Unavailable(item.system, breaker.retry_after())
        probe = breaker.state == "half_open"  # allow() let this call through as the one probe
        try:
            async with self._in_flight[item.system]:
                result = await self._external(connector, item.kind, call)
        except ConnectorError as exc:
            if exc.outage:
                breaker.record_failure()
            elif not exc.rate_limited:
                breaker.record_success()  # the system answered: it is up
            elif probe:
                breaker.release_probe()  # a 429 says nothing about an outage: the next call probes
            raise
        except BaseException:
            if probe:
                breaker.release_probe()  # a cancel or a bug in a connector says nothing either
            raise
        breaker.record_success()
        return result

    async def _external(self, connector: Connector, kind: str, call: plan.Call) -> Any:
        if isinstance(call, plan.Fetch):
            return await connector.fetch(call.kind or kind, call.external_id)
        if isinstance(call, plan.Search):
            return await connector.find_by_internal_id(kind, call.internal_id, call.uid)
        if isinstance(call, plan.Create | plan.Update):
            one = CreateItem(call.internal_id, call.fields, call.key, call.uid) if isinstance(call, plan.Create) \
                else UpdateItem(call.external_id, call.changes, call.key)
            if connector.batch_writes:  # declared; tests/unit/test_connector_tables.py checks it has the calls
                return await self._batched(cast(BatchWrites, connector), connector.system, kind, one)
            if isinstance(one, CreateItem):
                return await connector.create(kind, one.internal_id, one.fields, one.idempotency_key, one.uid)
            return await connector.update(kind, one.external_id, one.changes, one.idempotency_key)
        if isinstance(call, plan.Delete):
            return await connector.delete(kind, call.external_id, call.key)
        if isinstance(call, plan.SetInternalId):
            return await connector.set_internal_id(kind, call.external_id, call.internal_id, call.key, call.uid)
        raise TypeError(f"unknown call {call!r}")

    async def _batched(self, connector: BatchWrites, system: str, kind: str, one: CreateItem | UpdateItem) -> Any:
        """Creates / updates of one kind that are ready together go as one batch call."""
        create = isinstance(one, CreateItem)
        key = (system, kind, "create" if create else "update")
        if key not in self._batches:
            async def many(items: list[Any], c: BatchWrites = connector, k: str = kind) -> list[Any]:
                return list(await (c.create_many(k, items) if create else c.update_many(k, items)))
            self._batches[key] = Coalescer(many, raise_errors=True)
        return await self._batches[key].submit(one)

    async def _mark_started_many(self, marks: list[tuple[str, str, int, str, dict[str, str]]]) -> list[None]:
        """Committed before the creates go: a crash after the call leaves a trace that a create may exist."""
        async with self.sessions() as session:
            await session.execute(sql.INSERT_EVENTS, _events_params([
                dict(kind=k, system=s, dir=Direction.OUTBOUND, op=Operation.CREATE, status=Status.STARTED, iid=i,
                     xid=None, attempts=1, error=None, delay=0.0, detail={"key": key, "fields": fields})
                for k, s, i, key, fields in marks]))
            await session.commit()
        return [None] * len(marks)

    async def _new_id(self, kind: str) -> int:
        async with self._id_lock:
            if not self._ids[kind]:
                async with self.sessions() as session:
                    self._ids[kind] = [int(r[0]) for r in (await session.execute(sql.reserve_ids(kind), {"n": 20}))]
                    await session.commit()
            return self._ids[kind].pop(0)

    async def _find_uid(self, kind: str, uid: str, locks: list[str]) -> int | None:
        """The row that carries `uid`, read once its lock is held (kept with the record's locks until the
        write-back): two objects with one uid (a lost record back from two systems at once) import it once."""
        key = f"{kind}:uid:{uid}"
        if key not in locks:
            deadline = asyncio.get_running_loop().time() + UID_PATIENCE
            while not await self.locks.try_lock([key]):
                if asyncio.get_running_loop().time() > deadline:
                    raise ConnectorError(f"uid {uid} is being synced elsewhere", transient=True, outage=False)
                await asyncio.sleep(0.05)
            locks.append(key)
        async with self.sessions() as session:
            found = (await session.execute(sql.find_uid(kind), {"uid": uid})).first()
            await session.rollback()
        return int(found.id) if found is not None else None

    async def _find_links_many(self, asks: list[tuple[str, str, str]]) -> list[int | None]:
        found: dict[tuple[str, str, str], int] = {}
        async with self.sessions() as session:
            for (kind, system), xids in _group(asks).items():
                for r in (await session.execute(sql.FIND_LINKS, {"kind": kind, "system": system, "xids": xids})):
                    found[(kind, system, r.external_id)] = int(r.internal_id)
            await session.rollback()
        return [found.get(a) for a in asks]

    # -- 3. write back ---------------------------------------------------------------------------

    async def write_back(self, jobs: Sequence[Job]) -> None:
        """All outcomes in one transaction (a constant number of statements), then release the locks."""
        try:
            for job in jobs:
                if job.outcome is None:
                    job.outcome = _crashed(job)
            async with self.sessions() as session:
                written = await _WriteBack(self, session, jobs).apply()
                await session.commit()
        finally:
            await self.locks.unlock(k for j in jobs for k in j.locks)
        for job in jobs:
            self._count(job, written)

    def _count(self, job: Job, written: set[int]) -> None:
        out = job.done
        item = job.item
        if out.failure is not None:
            metrics.SYNC_RESULTS.labels(system=item.system, direction=item.direction, kind=item.kind,
                                        status=job.attempts_seen.get("status", Status.RETRY)).inc()
            return
        if not out.synced or id(job) not in written:
            return
        metrics.SYNC_RESULTS.labels(system=item.system, direction=out.direction, kind=item.kind, status=Status.OK).inc()
        now = _now()
        if out.direction == Direction.OUTBOUND and job.snapshot.ours and job.snapshot.ours.changed_at:
            metrics.SYNC_LATENCY.labels(system=item.system, direction=Direction.OUTBOUND, kind=item.kind).observe(
                max(0.0, (now - job.snapshot.ours.changed_at).total_seconds()))
        for e in job.snapshot.pending:
            if e.id in out.processed and e.received_at:
                metrics.SYNC_LATENCY.labels(system=item.system, direction=Direction.INBOUND, kind=item.kind).observe(
                    max(0.0, (now - e.received_at).total_seconds()))

    # -- breaker ---------------------------------------------------------------------------------

    async def wake(self, system: str) -> None:
        """The system is back: everything held for it goes now, not at its backoff time."""
        async with self.sessions() as session:
            await session.execute(sql.WAKE_SYSTEM, {"system": system})
            await session.commit()

    async def close(self) -> None:
        await self.locks.close()


class _WriteBack:
    """The bulk statements of one write-back, in one transaction."""

    def __init__(self, engine: SyncEngine, session: AsyncSession, jobs: Sequence[Job]) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.session = session
        self.jobs = jobs
        self.events: list[dict[str, Any]] = []
        self.messages: list[outbox.Message] = []
        self.queued: list[outbox.Message] = []  # by the write path (records.write): each row written

    async def apply(self) -> set[int]:
        # New links and new waits for a parent meet under the parent's lock (taken once, in order): see
        # sql.LOCK_PARENTS.
        parents = sorted({f"{j.item.kind}:{j.done.link.internal_id}" for j in self.jobs
                          if j.done.link is not None and j.done.link.id is None}
                         | {f"{w[0]}:{w[1]}" for j in self.jobs if (w := j.done.waiting_for)})
        if parents:
            await self.session.execute(sql.LOCK_PARENTS, {"parents": parents})
        await self._tombstones()
        conflicted = await self._rows()
        written = {id(j) for j in self.jobs if id(j) not in conflicted}
        await self._links(conflicted)
        processed = [e for j in self.jobs if id(j) not in conflicted for e in j.done.processed]
        if processed:
            await self.session.execute(sql.MARK_PROCESSED, {"ids": processed})
        # The history a failure builds on (attempts, first failure, tries) is read before _close supersedes
        # the open retry rows it lives in: read after, every failure would count as the first one.
        owing = [j for j in self.jobs if id(j) not in conflicted and _owes(j)]
        previous = await self._previous(owing)
        await self._close(conflicted)
        await self._failures(owing, previous)
        for job in self.jobs:
            out = job.done
            if id(job) in conflicted:
                # Our row moved while we worked (an API write): do it again from the new state.
                self._message(job.item, "conflict")
                continue
            for log in out.logs:
                self.events.append(dict(kind=job.item.kind, system=job.item.system, dir=log.direction, op=log.operation,
                                        status=log.status, iid=log.internal_id, xid=log.external_id, attempts=1,
                                        error=None, delay=None, detail=log.detail))
            for f in out.follow:
                self._follow(job.item.system, f)
        if self.events:
            await self.session.execute(sql.INSERT_EVENTS, _events_params(self.events))
            waits = sorted({e["detail"]["parent"] for e in self.events
                            if e["op"] == Operation.WAIT_PARENT and isinstance(e.get("detail"), dict)})
            if waits:
                await self.session.execute(sql.WAKE_LINKED_CHILDREN, {"parents": waits})
        await outbox.enqueue(self.session, self._outbox(conflicted))
        return written

    def _outbox(self, conflicted: set[int]) -> list[outbox.Message]:
        """The write path's messages, but none for the rows of a job that goes round again (its conflict
        message stands for it); then the rest. A plan notes its row's change message too: it goes once."""
        again = {key for j in self.jobs if id(j) in conflicted for key in _row_keys(j)}
        queued = [m for m in self.queued if m.key not in again]
        sent = {_same(m) for m in queued}
        return queued + [m for m in self.messages if _same(m) not in sent]

    async def _rows(self) -> set[int]:
        """Every row the batch changes, through the one write path (a call per kind, whatever its store);
        the jobs whose row moved meanwhile (an API write): they go round again."""
        changes: dict[str, list[records.Change]] = defaultdict(list)
        for job in self.jobs:
            out, ours = job.done, job.snapshot.ours
            if out.row is not None and ours is not None:
                changes[job.item.kind].append(records.Edit(ours.id, out.row.expected_version, out.row.changes,
                                                           out.row.delete, out.row.restore))
            if out.insert is not None:
                changes[job.item.kind].append(records.New(*out.insert, uid=out.insert_uid))
        written: set[tuple[str, int]] = set()
        for kind_name, group in changes.items():
            ids = await records.write(self.session, kind_name, group, queue=self.queued)
            written |= {(kind_name, i) for i in ids}
        return {id(j) for j in self.jobs if j.done.row is not None and j.snapshot.ours is not None
                and (j.item.kind, j.snapshot.ours.id) not in written}

    async def _tombstones(self) -> None:
        """Parents deleted over there before we saw them: one deleted row and its link per external object.
        A parent another transaction (or job) linked first is used instead: the child is hung on it."""
        made: dict[tuple[str, str, str], int] = {}
        for job in self.jobs:
            out = job.done
            t = out.tombstone
            if t is None or out.insert is None:
                continue
            system = job.item.system
            pid = made.get((t.kind, system, t.external_id))
            if pid is None:
                linked = (await self.session.execute(sql.INSERT_LINKS, {
                    "kinds": [t.kind], "iids": [t.internal_id], "systems": [system], "xids": [t.external_id],
                    "bases": [json.dumps(plan.DELETED)], "lpvs": [1]})).first()  # born deleted, at version 1
                if linked is not None:
                    pid = t.internal_id
                    await records.write(self.session, t.kind, [records.New(pid, t.fields, deleted=True)])
                else:
                    pid = int((await self.session.execute(sql.FIND_LINKS, {
                        "kind": t.kind, "system": system, "xids": [t.external_id]})).one().internal_id)
                made[(t.kind, system, t.external_id)] = pid
            parent = records.kind(job.item.kind).rules.parent
            if parent is not None:
                out.insert[1][parent.field] = str(pid)

    async def _links(self, conflicted: set[int]) -> None:
        new: list[tuple[Job, plan.LinkState]] = []
        old: list[plan.LinkState] = []
        for job in self.jobs:
            out = job.done
            if not out.link_dirty or out.link is None:
                continue
            if out.link.id is None:
                new.append((job, out.link))  # a created object is linked even when the rest is redone
            elif id(job) not in conflicted:
                old.append(out.link)
        if old:
            await self.session.execute(sql.UPDATE_LINKS, {
                "ids": [link.id for link in old], "bases": [json.dumps(dict(link.base)) for link in old],
                "lpvs": [link.last_pushed_version for link in old]})
        if new:
            made = {(r.kind, r.internal_id, r.system) for r in await self.session.execute(sql.INSERT_LINKS, {
                "kinds": [j.item.kind for j, _ in new], "iids": [link.internal_id for _, link in new],
                "systems": [j.item.system for j, _ in new], "xids": [link.external_id for _, link in new],
                "bases": [json.dumps(dict(link.base)) for _, link in new],
                "lpvs": [link.last_pushed_version for _, link in new]})}
            for job, link in new:
                if (job.item.kind, link.internal_id, job.item.system) not in made:
                    logger.error("link already taken; record goes round again", kind=job.item.kind,
                                 internal_id=link.internal_id, external_id=link.external_id)
                    conflicted.add(id(job))
            if made:
                await self.session.execute(sql.WAKE_CHILDREN, {"parents": sorted({f"{k}:{i}" for k, i, _ in made})})

    async def _close(self, conflicted: set[int]) -> None:
        closes = [(j, c, False) for j in self.jobs if id(j) not in conflicted for c in j.done.close]
        # A failure leaves the dead letter for _failures to settle (kept as it is, or superseded).
        closes += [(j, plan.Close(j.item.direction,
                                  j.done.internal_id if j.item.direction == plan.Direction.OUTBOUND
                                  else None, j.item.external_id, keep_started=True), True)
                   for j in self.jobs if id(j) not in conflicted and _owes(j)]
        if closes:
            await self.session.execute(sql.CLOSE_OPEN, {
                "kinds": [j.item.kind for j, _, _ in closes], "systems": [j.item.system for j, _, _ in closes],
                "dirs": [c.direction for _, c, _ in closes], "iids": [c.internal_id for _, c, _ in closes],
                "xids": [c.external_id for _, c, _ in closes], "keep": [c.keep_started for _, c, _ in closes],
                "keep_dead": [k for _, _, k in closes]})

    async def _previous(self, owing: list[Job]) -> dict[int, Any]:
        """The open retry history of each owing job, by its number in `owing`."""
        if not owing:
            return {}
        rows = await self.session.execute(sql.PREVIOUS, {
            "ns": list(range(len(owing))), "kinds": [j.item.kind for j in owing],
            "systems": [j.item.system for j in owing], "dirs": [j.item.direction for j in owing],
            "iids": [_iid(j) for j in owing], "xids": [_xid(j) for j in owing]})
        return {r.n: r for r in rows}

    async def _failures(self, owing: list[Job], previous: dict[int, Any]) -> None:
        if not owing:
            return
        now = _now()
        judged: list[dict[str, Any]] = []
        for n, job in enumerate(owing):
            out = job.done
            prev = previous.get(n)
            attempts, tries = (int(prev.attempts or 0), int(prev.tries or 0)) if prev else (0, 0)
            since: datetime = prev.since if prev and prev.since else now
            status, delay, operation, detail = self._judge(job, attempts, tries, since, now)
            job.attempts_seen["status"] = status
            judged.append(dict(kind=job.item.kind, system=job.item.system, dir=job.item.direction,
                               op=operation, status=status, iid=_iid(job), xid=_xid(job),
                               attempts=detail.pop("attempts"), error=str(out.failure)[:1000] if out.failure
                               else None, delay=delay, detail=detail))
            if out.failure is not None:
                quiet.warning("sync failed", key=(job.item.system, job.item.direction, type(out.failure).__name__,
                                                  out.failure.status, status),
                              kind=job.item.kind, system=job.item.system, direction=job.item.direction,
                              internal_id=_iid(job), external_id=_xid(job), status=status,
                              error=str(out.failure)[:300])
        kept = await self._settle_dead(owing, judged)
        self.events.extend(e for n, e in enumerate(judged) if n not in kept)

    async def _settle_dead(self, owing: list[Job], judged: list[dict[str, Any]]) -> set[int]:
        """Settle the dead letters that _close left standing; the numbers (in `owing`) whose row was kept."""
        rows = await self.session.execute(sql.SETTLE_DEAD, {
            "ns": list(range(len(owing))), "kinds": [j.item.kind for j in owing],
            "systems": [j.item.system for j in owing], "dirs": [j.item.direction for j in owing],
            "iids": [j.done.internal_id if j.item.direction == Direction.OUTBOUND else None
                     for j in owing],
            "xids": [j.item.external_id for j in owing], "statuses": [e["status"] for e in judged],
            "versions": [None if (v := e["detail"].get("version")) is None else str(v) for e in judged],
            "errors": [e["error"] for e in judged], "details": [json.dumps(e["detail"]) for e in judged]})
        return {int(r.n) for r in rows if r.same}

    def _judge(self, job: Job, attempts: int, tries: int, since: datetime, now: datetime
               ) -> tuple[Status, float | None, Operation, dict[str, Any]]:
        """Retry or dead, and when. Outages and waits never use up attempts; nothing transient dies early."""
        out = job.done
        s = self.settings
        version = job.snapshot.ours.version if job.snapshot.ours else None
        detail: dict[str, Any] = {"since": since.isoformat(), "tries": tries + 1, "version": version}
        exc = out.failure
        unused = max(1, attempts)  # what a wait or an outage leaves the count at: no attempt used
        if exc is None:  # deferred or waiting: not a failure
            if out.waiting_for is not None:
                detail["parent"] = f"{out.waiting_for[0]}:{out.waiting_for[1]}"
                return Status.RETRY, s.sync_parent_wait_seconds, Operation.WAIT_PARENT, {**detail, "attempts": unused}
            return Status.RETRY, out.defer_seconds or 1.0, Operation.DEFER, {**detail, "attempts": unused}
        if isinstance(exc, Unavailable) or exc.outage or exc.rate_limited:
            delay = max(exc.retry_after or 0.0, backoff_seconds(tries + 1, s.sync_backoff_base_seconds,
                                                                 s.sync_outage_retry_max_seconds))
            return Status.RETRY, delay * random.uniform(1.0, 1.2), Operation.SYNC, {**detail, "attempts": unused}
        if not exc.transient:
            return Status.DEAD, None, Operation.SYNC, {**detail, "attempts": attempts + 1}
        attempts += 1
        expired = (now - since).total_seconds() >= s.sync_dead_after_seconds
        if attempts >= s.sync_max_attempts and expired:
            return Status.DEAD, None, Operation.SYNC, {**detail, "attempts": attempts}
        delay = backoff_seconds(attempts, s.sync_backoff_base_seconds, s.sync_backoff_max_seconds)
        return Status.RETRY, delay, Operation.SYNC, {**detail, "attempts": attempts}

    def _follow(self, system: str, f: plan.Follow) -> None:
        if f.direction == Direction.OUTBOUND:
            assert f.internal_id is not None
            self.messages.append(outbox.outbound(f.kind, f.internal_id, f.reason))
        else:
            assert f.external_id is not None
            extra: dict[str, Any] = {"reason": f.reason}
            if f.hint is not None:
                extra["hint"] = f.hint
            self.messages.append(outbox.inbound(system, f.kind, f.external_id, None, **extra))

    def _message(self, item: Item, reason: str) -> None:
        if item.direction == Direction.OUTBOUND:
            self._follow(item.system, plan.Follow(plan.Direction.OUTBOUND, item.kind, item.internal_id, reason=reason))
        else:
            self._follow(item.system, plan.Follow(plan.Direction.INBOUND, item.kind, external_id=item.external_id,
                                                  reason=reason, hint=item.hint))


def _owes(job: Job) -> bool:
    out = job.done
    return out.failure is not None or out.waiting_for is not None or \
        (out.defer_seconds is not None and out.defer_seconds > 0)


def _row_keys(job: Job) -> list[str]:
    """The outbox keys of the rows the job writes."""
    out, ours = job.done, job.snapshot.ours
    ids = ([ours.id] if out.row is not None and ours is not None else []) + ([out.insert[0]] if out.insert else [])
    return [record_key(job.item.kind, i) for i in ids]


def _same(message: outbox.Message) -> tuple[str, str, str]:
    return message.topic, message.key, json.dumps(message.payload, sort_keys=True)


def _iid(job: Job) -> int | None:
    return job.item.internal_id if job.item.direction == Direction.OUTBOUND else (
        job.outcome.internal_id if job.outcome else None)


def _xid(job: Job) -> str | None:
    if job.item.direction == Direction.INBOUND:
        return job.item.external_id
    return job.outcome.external_id if job.outcome else None


def _crashed(job: Job) -> plan.Outcome:
    """A plan that raised something other than a connector error: retried like a transient failure."""
    error = ConnectorError(f"internal error: {type(job.error).__name__}: {str(job.error)[:200]}", transient=True)
    return plan.Outcome(result=plan.Result.FAILED, direction=job.item.direction,
                        internal_id=job.item.internal_id, external_id=job.item.external_id, failure=error)


def _events_params(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"kinds": [e["kind"] for e in events], "systems": [e["system"] for e in events],
            "dirs": [e["dir"] for e in events], "ops": [e["op"] for e in events],
            "statuses": [e["status"] for e in events], "iids": [e["iid"] for e in events],
            "xids": [e["xid"] for e in events], "attempts": [e["attempts"] for e in events],
            "errors": [e["error"] for e in events], "delays": [e["delay"] for e in events],
            "details": [json.dumps(e["detail"]) if e["detail"] is not None else None for e in events]}


def _group(asks: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for kind, system, xid in asks:
        out[(kind, system)].append(xid)
    return out


def _link(row: Any) -> plan.LinkState | None:
    if row is None:
        return None
    return plan.LinkState(int(row.internal_id), row.external_id, dict(row.base or {}), int(row.last_pushed_version),
                          id=int(row.id))


def _ours(kind: records.Kind, row: Any) -> plan.Ours | None:
    if row is None:
        return None
    return plan.Ours(int(row.id), int(row.version), sql.field_values(kind, row), row.deleted_at is not None,
                     row.updated_at, str(row.uid) if kind.has_uid and row.uid is not None else None)


def _trace(ok: bool, started: Any) -> plan.Trace:
    items = json.loads(started) if isinstance(started, str) else (started or [])
    return plan.Trace(had_success=bool(ok), started=tuple(
        plan.Started(s.get("key") or "", s.get("fields"), datetime.fromisoformat(s["at"])) for s in items))


def _url(sessions: async_sessionmaker[AsyncSession]) -> str:
    bind = sessions.kw["bind"]
    return str(bind.url.render_as_string(hide_password=False))

