"""Retention: how long each table keeps what, purged in small batches by the worker.

Without it `inbox` and `sync_events` grow with every change for ever (about 2.5 kB a change). The windows
are settings; the defaults and why:

- `INBOX_PAYLOAD_RETENTION_HOURS` (1): an event's JSON is read only while the event is pending (the
  engine plans from it); once processed it is only for a person looking into something just after.
  The row stays, with `{}` for a payload, which every reader takes as "no snapshot".
- `INBOX_DEDUP_RETENTION_DAYS` (31): the row's id is what makes a second copy of an event a no-op, so
  it is kept as long as a copy can still arrive: Stripe retries a webhook for up to 3 days, and its
  Events API serves events for 30 days (a poller whose cursor is that old reads them all again); the
  Salesforce poller's overlap is a minute. 31 days is the longest of these plus a day for clocks,
  counted from processing, which comes after the event was made. Unprocessed events are never touched.
- `SYNC_EVENTS_RETENTION_DAYS` (7): the log is history for a person (the timeline, `GET .../{id}/sync`).
  Kept whatever their age: open rows (`retry`, `requeued`, `started`: work owed, a create's trace),
  dead letters (they wait for a replay), conflicts (decisions a person may review), and per record and
  system its newest row and its newest `ok` per direction (the record's state, the planner's "this
  record was synced once" before a create, the status's age of the last success).
- `OUTBOX_RETENTION_SECONDS` (3600): sent rows, only for looking into a delivery just made.
- `IDEMPOTENCY_KEY_RETENTION_HOURS` (24): as Stripe keeps its keys.

Every statement handles at most `RETENTION_BATCH_SIZE` rows in its own short transaction, locks rows
with `SKIP LOCKED` (never waits on the sync's locks), and takes a transaction-level advisory lock, so
several workers never purge at once (one that finds it held leaves the round to the other). Plain SQL
on table names: the kit knows no domain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twoway.kit.db import unit_of_work
from twoway.logs import get_logger
from twoway.settings import Settings

log = get_logger(__name__)

# Rows of these statuses are never pruned: work owed, dead letters, conflicts.
KEPT_STATUSES = ("retry", "requeued", "started", "dead", "conflict")
_KEPT = ", ".join(f"'{s}'" for s in KEPT_STATUSES)
EMPTY_PAYLOAD = "{}"
# Two int keys: a lock space apart from the records' (one bigint key each).
_ONE_AT_A_TIME = text("SELECT pg_try_advisory_xact_lock(hashtext('twoway'), hashtext('retention'))")
_CURSOR = "retention:sync_events"


@dataclass(frozen=True)
class Windows:
    """How long each thing is kept, in seconds."""

    inbox_payload: float
    inbox_dedup: float
    sync_events: float
    outbox: float
    idempotency_keys: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Windows:
        return cls(inbox_payload=settings.inbox_payload_retention_hours * 3600,
                   inbox_dedup=settings.inbox_dedup_retention_days * 86400,
                   sync_events=settings.sync_events_retention_days * 86400,
                   outbox=settings.outbox_retention_seconds,
                   idempotency_keys=settings.idempotency_key_retention_hours * 3600)


# Each statement: at most :n rows, locked with SKIP LOCKED, found through an index (migration 0007). `id =
# ANY(ARRAY(...))` looks the rows up by key: with `id IN (...)` the planner may hash-join a scan of the table.
STRIP_PAYLOADS = text(f"""
    UPDATE inbox SET payload = '{EMPTY_PAYLOAD}'::jsonb WHERE id = ANY(ARRAY(
        SELECT id FROM inbox
        WHERE processed_at IS NOT NULL AND payload <> '{EMPTY_PAYLOAD}'::jsonb
          AND processed_at < now() - make_interval(secs => :age)
        ORDER BY processed_at LIMIT :n FOR UPDATE SKIP LOCKED))""")
DELETE_INBOX = text("""
    DELETE FROM inbox WHERE id = ANY(ARRAY(
        SELECT id FROM inbox WHERE processed_at IS NOT NULL AND processed_at < now() - make_interval(secs => :age)
        ORDER BY processed_at LIMIT :n FOR UPDATE SKIP LOCKED))""")
# The relay sends in id order, so the oldest rows are first by id: only the :n first are looked at (a
# scan for "sent long ago" would read past every row sent within the window, at each batch).
DELETE_OUTBOX = text("""
    DELETE FROM outbox WHERE id = ANY(ARRAY(
        SELECT id FROM outbox
        WHERE id = ANY(ARRAY(SELECT id FROM outbox ORDER BY id LIMIT :n))
          AND sent_at < now() - make_interval(secs => :age)
        FOR UPDATE SKIP LOCKED))""")
DELETE_IDEMPOTENCY_KEYS = text("""
    DELETE FROM idempotency_keys WHERE key = ANY(ARRAY(
        SELECT key FROM idempotency_keys WHERE created_at < now() - make_interval(secs => :age)
        ORDER BY created_at LIMIT :n FOR UPDATE SKIP LOCKED))""")

# sync_events is walked once, in id order, behind a cursor: a span of up to :n rows past it, all older
# than the window. Each record (or, for rows naming no record, each external object) met in the span
# loses its older rows that nothing needs; its newest row in the span stays until a newer one is met in
# a later span. A scan for prunable rows instead would read every record's kept newest row at each batch.
SPAN_END = text("""
    WITH span AS (SELECT id, created_at FROM sync_events WHERE id > :after ORDER BY id LIMIT :n)
    SELECT max(id) FROM span WHERE id < COALESCE(
        (SELECT min(id) FROM span WHERE created_at >= now() - make_interval(secs => :age)), 9223372036854775807)""")


def _older_rows(keys: str, match: str) -> str:
    """Rows of the span's keys older than the key's newest there, less what is kept whatever its age.

    Read key by key through an index: the window function keeps the planner from flattening the lateral
    subquery into a join, which it may answer with a scan of the whole table.
    """
    return f"""(SELECT r.id FROM {keys} t CROSS JOIN LATERAL (
            SELECT s.id, s.status, s.updated_at, s.id < t.top AS older,
                   s.id = max(s.id) FILTER (WHERE s.status = 'ok') OVER (PARTITION BY s.direction) AS newest_ok
            FROM sync_events s WHERE s.kind = t.kind AND s.system = t.system AND {match}) r
        WHERE r.older AND r.newest_ok IS NOT TRUE AND r.status NOT IN ({_KEPT})
          AND r.updated_at < now() - make_interval(secs => :age)
        LIMIT :most)"""


PRUNE_SYNC_EVENTS = text(f"""
    WITH span AS MATERIALIZED (  -- read once, by id: not through an index of every loose row
        SELECT id, kind, system, internal_id, external_id FROM sync_events WHERE id > :after AND id <= :upto),
    records AS (
        SELECT kind, system, internal_id, max(id) AS top FROM span WHERE internal_id IS NOT NULL
        GROUP BY kind, system, internal_id),
    objects AS (
        SELECT kind, system, external_id, max(id) AS top FROM span WHERE internal_id IS NULL AND external_id IS NOT NULL
        GROUP BY kind, system, external_id),
    doomed AS (
        {_older_rows("records", "s.internal_id = t.internal_id")}
        UNION ALL
        {_older_rows("objects", "s.internal_id IS NULL AND s.external_id = t.external_id")})
    DELETE FROM sync_events WHERE id = ANY(ARRAY(
        SELECT id FROM sync_events WHERE id = ANY(ARRAY(SELECT id FROM doomed)) FOR UPDATE SKIP LOCKED))""")
READ_CURSOR = text("SELECT value FROM cursors WHERE name = :name")
WRITE_CURSOR = text("""
    INSERT INTO cursors (name, value) VALUES (:name, :value)
    ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()""")

Step = Callable[[AsyncSession], Awaitable[tuple[int, bool]]]


class Retention:
    """One round purges every table until it is within its window (or `stop` is set)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], windows: Windows, *, batch: int = 2000,
                 stop: asyncio.Event | None = None) -> None:
        self.sessions = sessions
        self.windows = windows
        self.batch = batch
        self.stop = stop or asyncio.Event()

    @classmethod
    def from_settings(cls, sessions: async_sessionmaker[AsyncSession], settings: Settings,
                      stop: asyncio.Event | None = None) -> Retention:
        return cls(sessions, Windows.from_settings(settings), batch=settings.retention_batch_size, stop=stop)

    async def run(self) -> dict[str, int]:
        """Rows changed per purge this round; empty when another worker holds the round."""
        w = self.windows
        steps: dict[str, Step] = {
            "inbox": self._statement(DELETE_INBOX, w.inbox_dedup),
            "inbox_payloads": self._statement(STRIP_PAYLOADS, w.inbox_payload),
            "sync_events": self._sync_events,
            "outbox": self._statement(DELETE_OUTBOX, w.outbox),
            "idempotency_keys": self._statement(DELETE_IDEMPOTENCY_KEYS, w.idempotency_keys),
        }
        done: dict[str, int] = {}
        for name, step in steps.items():
            count = await self._drain(step)
            if count is None:
                return done
            done[name] = count
        if any(done.values()):
            log.info("retention purged", **done)
        return done

    async def _drain(self, step: Step) -> int | None:
        """Batches, each its own transaction, while a batch found more; None if another worker purges."""
        total = 0
        while not self.stop.is_set():
            async with unit_of_work(self.sessions) as session:
                if not (await session.execute(_ONE_AT_A_TIME)).scalar():
                    return None
                count, more = await step(session)
            total += count
            if not more:
                break
            await asyncio.sleep(0)  # let the sync's own work in between batches
        return total

    def _statement(self, statement: TextClause, age: float) -> Step:
        async def step(session: AsyncSession) -> tuple[int, bool]:
            count = await _rowcount(session, statement, {"age": age, "n": self.batch})
            return count, count >= self.batch
        return step

    async def _sync_events(self, session: AsyncSession) -> tuple[int, bool]:
        after = int((await session.execute(READ_CURSOR, {"name": _CURSOR})).scalar() or 0)
        age = self.windows.sync_events
        upto = (await session.execute(SPAN_END, {"after": after, "n": self.batch, "age": age})).scalar()
        if upto is None:
            return 0, False
        count = await _rowcount(session, PRUNE_SYNC_EVENTS,
                                {"after": after, "upto": upto, "age": age, "most": self.batch})
        if count >= self.batch:
            return count, True  # the same span again: its records had more than one batch to lose
        await session.execute(WRITE_CURSOR, {"name": _CURSOR, "value": str(upto)})
        return count, True


async def _rowcount(session: AsyncSession, statement: TextClause, params: dict[str, Any]) -> int:
    result = await session.execute(statement, params)
    return int(cast(CursorResult[Any], result).rowcount)
