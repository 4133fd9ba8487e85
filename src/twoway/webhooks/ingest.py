"""Verified events into `inbox` (+ their outbox rows, + one NOTIFY) by group commit: one transaction per group.

A duplicate event id, in the same group or an earlier one, is stored once and answered as a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from twoway.kit.groupcommit import GroupCommit
from twoway.kit.outbox import NOTIFY, queue_inbound

# One round trip for the whole group: inbox rows, outbox rows for the new ones, and a NOTIFY
# (transactional: heard only if the group commits) when anything was queued.
STORE_GROUP = f"""
WITH batch AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::timestamptz[], $8::text[])
    AS b(system, event_id, event_type, kind, external_id, source, event_created, payload)
), ins AS (
  INSERT INTO inbox (system, event_id, event_type, kind, external_id, source, event_created, payload)
  SELECT system, event_id, event_type, kind, external_id, source, event_created, payload::jsonb FROM batch
  ON CONFLICT (system, event_id) DO NOTHING
  RETURNING system, event_id, kind, external_id
), queued AS ({queue_inbound("ins")})
SELECT system, event_id FROM ins
UNION ALL
SELECT NULL, NULL FROM (SELECT {NOTIFY} FROM (SELECT 1 FROM queued LIMIT 1) one) n
"""


@dataclass(frozen=True)
class Event:
    system: str
    event_id: str
    type: str
    kind: str
    external_id: str
    created: datetime | None
    payload: str  # the JSON text as received: stored as is, never re-serialized
    source: str = "webhook"


async def store_group(conn: asyncpg.Connection, events: Sequence[Event]) -> list[bool]:
    """True for each event stored by this group; False for a duplicate (earlier, or earlier in the group)."""
    unique: dict[tuple[str, str], Event] = {}
    for event in events:
        unique.setdefault((event.system, event.event_id), event)
    # Sorted: two groups inserting overlapping ids take their locks in the same order (no deadlock).
    rows = sorted(unique.values(), key=lambda e: (e.system, e.event_id))
    columns = list(zip(*[(e.system, e.event_id, e.type, e.kind, e.external_id, e.source, e.created, e.payload)
                         for e in rows], strict=True))
    inserted = {(r["system"], r["event_id"]) for r in await conn.fetch(STORE_GROUP, *columns)
                if r["event_id"] is not None}
    answered: set[tuple[str, str]] = set()
    results = []
    for event in events:
        key = (event.system, event.event_id)
        results.append(key in inserted and key not in answered)
        answered.add(key)
    return results


def inbox_writer(pool: asyncpg.Pool, *, max_batch: int, max_wait: float,
                 max_inflight: int = 4) -> GroupCommit[Event, bool]:
    return GroupCommit(pool, store_group, name="inbox", max_batch=max_batch, max_wait=max_wait,
                       max_inflight=max_inflight, one_statement=True)
