"""The engine's statements: set-based reads and bulk writes, a constant number per batch.

Kind tables and field names come from the kind registry, never from input.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.kit import records

OPEN = ("retry", "requeued", "started", "dead")


async def read_rows(session: AsyncSession, kind: records.Kind, ids: Sequence[int]) -> list[Any]:
    """A kind's rows by id, each with `id`, `version`, `updated_at`, `deleted_at` and its synced fields."""
    return await kind.store.read(session, kind, list(ids)) if ids else []


def field_values(kind: records.Kind, row: Any) -> dict[str, str]:
    """A row's synced fields as text, the form every comparison and merge works on."""
    return {f: "" if (v := getattr(row, f)) is None else str(v) for f in kind.fields}


@cache
def deleted_ids(kind_name: str) -> Any:
    table = records.kind(kind_name).table
    return text(f"SELECT id FROM {table} WHERE id = ANY(CAST(:ids AS bigint[])) AND deleted_at IS NOT NULL")


@cache
def find_uid(kind_name: str) -> Any:
    table = records.kind(kind_name).table
    return text(f"SELECT id FROM {table} WHERE uid = CAST(:uid AS uuid)")


@cache
def reserve_ids(kind_name: str) -> Any:
    table = records.kind(kind_name).table
    return text(f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, :n)")


# Lock keys of inbound work: the linked record, or the newest pending events (which may name our id).
INBOUND_KEYS = text("""
    SELECT x.xid, l.internal_id AS linked, p.payload
    FROM unnest(CAST(:xids AS text[])) AS x(xid)
    LEFT JOIN links l ON l.system = :system AND l.kind = :kind AND l.external_id = x.xid
    LEFT JOIN LATERAL (
        SELECT i.payload FROM inbox i
        WHERE l.internal_id IS NULL AND i.system = :system AND i.kind = :kind AND i.external_id = x.xid
          AND i.processed_at IS NULL
        ORDER BY i.id DESC LIMIT 20) p ON true""")
LINKS = text("""
    SELECT id, internal_id, external_id, base, last_pushed_version, updated_at FROM links
    WHERE kind = :kind AND system = :system
      AND (internal_id = ANY(CAST(:iids AS bigint[])) OR external_id = ANY(CAST(:xids AS text[])))""")
PENDING = text("""
    SELECT id, external_id, event_created, received_at, payload FROM inbox
    WHERE system = :system AND kind = :kind AND external_id = ANY(CAST(:xids AS text[])) AND processed_at IS NULL
    ORDER BY event_created, id""")
# The newest event of each object already handled (ix_inbox_object): a later-delivered older one is stale.
HANDLED = text("""
    SELECT external_id, max(event_created) AS created FROM inbox
    WHERE system = :system AND kind = :kind AND external_id = ANY(CAST(:xids AS text[])) AND processed_at IS NOT NULL
    GROUP BY external_id""")
TRACES = text("""
    SELECT internal_id, bool_or(status = 'ok') AS ok,
           COALESCE(jsonb_agg(jsonb_build_object('key', detail ->> 'key', 'fields', detail -> 'fields',
                                                 'at', created_at))
                    FILTER (WHERE status = 'started'), '[]'::jsonb) AS started
    FROM sync_events
    WHERE kind = :kind AND system = :system AND internal_id = ANY(CAST(:iids AS bigint[]))
      AND (status = 'ok' OR (status = 'started' AND operation = 'create'))
    GROUP BY internal_id""")
# Rows imported from an object that carried a uid we did not know (plan/inbound.py): a record a restore lost.
RESTORED = text("""
    SELECT DISTINCT internal_id FROM sync_events
    WHERE kind = :kind AND internal_id = ANY(CAST(:iids AS bigint[])) AND direction = 'inbound'
      AND operation = 'create' AND detail ? 'restored'""")
PARENT_LINKS = text("""
    SELECT internal_id, external_id, COALESCE(base ->> 'deleted', '') = 'true' AS gone FROM links
    WHERE kind = :kind AND system = :system AND internal_id = ANY(CAST(:iids AS bigint[]))""")
FIND_LINKS = text("""
    SELECT external_id, internal_id FROM links
    WHERE kind = :kind AND system = :system AND external_id = ANY(CAST(:xids AS text[]))""")

INSERT_LINKS = text("""
    INSERT INTO links (kind, internal_id, system, external_id, base, last_pushed_version, last_synced_at)
    SELECT v.kind, v.iid, v.system, v.xid, CAST(v.base AS jsonb), v.lpv, now()
    FROM unnest(CAST(:kinds AS text[]), CAST(:iids AS bigint[]), CAST(:systems AS text[]), CAST(:xids AS text[]),
                CAST(:bases AS text[]), CAST(:lpvs AS int[])) AS v(kind, iid, system, xid, base, lpv)
    ON CONFLICT DO NOTHING
    RETURNING kind, internal_id, system""")
UPDATE_LINKS = text("""
    UPDATE links AS l SET base = CAST(v.base AS jsonb), last_pushed_version = v.lpv,
        last_synced_at = now(), updated_at = now()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:bases AS text[]), CAST(:lpvs AS int[])) AS v(id, base, lpv)
    WHERE l.id = v.id""")
MARK_PROCESSED = text(
    "UPDATE inbox SET processed_at = now() WHERE id = ANY(CAST(:ids AS bigint[])) AND processed_at IS NULL")
# By internal id, or by external id when there is none: two equality joins, not one OR, so each can use
# an index (with the OR every open row met every record of the batch: 41 ms a batch at 5,000 open rows).
CLOSE_OPEN = text("""
    WITH v AS (SELECT * FROM unnest(CAST(:kinds AS text[]), CAST(:systems AS text[]), CAST(:dirs AS text[]),
                                    CAST(:iids AS bigint[]), CAST(:xids AS text[]), CAST(:keep AS boolean[]),
                                    CAST(:keep_dead AS boolean[]))
                             AS v(kind, system, dir, iid, xid, keep, keep_dead))
    UPDATE sync_events AS s SET status = 'superseded', updated_at = now()
    WHERE s.status IN ('retry', 'requeued', 'started', 'dead') AND s.id IN (
        SELECT e.id FROM v JOIN sync_events e ON e.kind = v.kind AND e.system = v.system AND e.direction = v.dir
                                              AND e.internal_id = v.iid
        WHERE v.iid IS NOT NULL AND e.status IN ('retry', 'requeued', 'started', 'dead')
          AND NOT (v.keep AND e.status = 'started') AND NOT (v.keep_dead AND e.status = 'dead')
        UNION ALL
        SELECT e.id FROM v JOIN sync_events e ON e.kind = v.kind AND e.system = v.system AND e.direction = v.dir
                                              AND e.external_id = v.xid
        WHERE v.iid IS NULL AND e.status IN ('retry', 'requeued', 'started', 'dead')
          AND NOT (v.keep AND e.status = 'started') AND NOT (v.keep_dead AND e.status = 'dead'))""")
# A failing record's dead letter (left standing by CLOSE_OPEN): failing for good again at the same version, it
# stays the same row, refreshed (an operator's or a test's id still names it); anything else supersedes it.
SETTLE_DEAD = text("""
    WITH v AS (SELECT * FROM unnest(CAST(:ns AS int[]), CAST(:kinds AS text[]), CAST(:systems AS text[]),
                                    CAST(:dirs AS text[]), CAST(:iids AS bigint[]), CAST(:xids AS text[]),
                                    CAST(:statuses AS text[]), CAST(:versions AS text[]), CAST(:errors AS text[]),
                                    CAST(:details AS text[]))
                             AS v(n, kind, system, dir, iid, xid, status, version, error, detail)),
    hit AS (
        SELECT e.id, v.n, v.status = 'dead' AND e.detail ->> 'version' IS NOT DISTINCT FROM v.version AS same,
               v.error, v.detail
        FROM v JOIN sync_events e ON e.kind = v.kind AND e.system = v.system AND e.direction = v.dir
                                 AND e.internal_id = v.iid
        WHERE v.iid IS NOT NULL AND e.status = 'dead'
        UNION ALL
        SELECT e.id, v.n, v.status = 'dead' AND e.detail ->> 'version' IS NOT DISTINCT FROM v.version,
               v.error, v.detail
        FROM v JOIN sync_events e ON e.kind = v.kind AND e.system = v.system AND e.direction = v.dir
                                 AND e.external_id = v.xid
        WHERE v.iid IS NULL AND e.status = 'dead')
    UPDATE sync_events AS s SET
        status = CASE WHEN hit.same THEN 'dead' ELSE 'superseded' END,
        attempts = CASE WHEN hit.same THEN s.attempts + 1 ELSE s.attempts END,
        error = CASE WHEN hit.same THEN hit.error ELSE s.error END,
        detail = CASE WHEN hit.same
                      THEN CAST(hit.detail AS jsonb) || jsonb_build_object('since', s.detail -> 'since')
                      ELSE s.detail END,
        updated_at = now()
    FROM hit WHERE s.id = hit.id AND s.status = 'dead'  -- rechecked under the row lock: a replay won the race
    RETURNING hit.n, hit.same""")
# What earlier failures of these records left: attempts used, when the streak began, tries made.
PREVIOUS = text("""
    WITH v AS (SELECT * FROM unnest(CAST(:ns AS int[]), CAST(:kinds AS text[]), CAST(:systems AS text[]),
                                    CAST(:dirs AS text[]), CAST(:iids AS bigint[]), CAST(:xids AS text[]))
                             AS v(n, kind, system, dir, iid, xid))
    SELECT v.n, max(s.attempts) AS attempts,
           min(COALESCE(CAST(s.detail ->> 'since' AS timestamptz), s.created_at)) AS since,
           max(COALESCE(CAST(s.detail ->> 'tries' AS int), s.attempts)) AS tries
    FROM v JOIN sync_events s ON s.status IN ('retry', 'requeued')
      AND s.kind = v.kind AND s.system = v.system AND s.direction = v.dir AND s.internal_id = v.iid
    WHERE v.iid IS NOT NULL
    GROUP BY v.n
    UNION ALL
    SELECT v.n, max(s.attempts) AS attempts,
           min(COALESCE(CAST(s.detail ->> 'since' AS timestamptz), s.created_at)) AS since,
           max(COALESCE(CAST(s.detail ->> 'tries' AS int), s.attempts)) AS tries
    FROM v JOIN sync_events s ON s.status IN ('retry', 'requeued')
      AND s.kind = v.kind AND s.system = v.system AND s.direction = v.dir AND s.external_id = v.xid
    WHERE v.iid IS NULL
    GROUP BY v.n""")
INSERT_EVENTS = text("""
    INSERT INTO sync_events (kind, system, direction, operation, status, internal_id, external_id, attempts,
                             error, next_attempt_at, detail)
    SELECT v.kind, v.system, v.dir, v.op, v.status, v.iid, v.xid, v.attempts, v.error,
           now() + make_interval(secs => v.delay), CAST(v.detail AS jsonb)
    FROM unnest(CAST(:kinds AS text[]), CAST(:systems AS text[]), CAST(:dirs AS text[]), CAST(:ops AS text[]),
                CAST(:statuses AS text[]), CAST(:iids AS bigint[]), CAST(:xids AS text[]), CAST(:attempts AS int[]),
                CAST(:errors AS text[]), CAST(:delays AS float8[]), CAST(:details AS text[]))
         AS v(kind, system, dir, op, status, iid, xid, attempts, error, delay, detail)""")
# Children waiting for a parent's link go now, not at their fallback time.
WAKE_CHILDREN = text("""
    UPDATE sync_events SET next_attempt_at = now(), updated_at = now()
    WHERE status = 'retry' AND operation = 'wait_parent' AND detail ->> 'parent' = ANY(CAST(:parents AS text[]))""")
# Parent links and children's waits meet under one lock per parent, so a wake is never lost: a child
# that started waiting while its parent was being linked in another transaction either is seen by that
# transaction's WAKE_CHILDREN or sees the link here (WAKE_LINKED_CHILDREN).
LOCK_PARENTS = text("""
    SELECT pg_advisory_xact_lock(hashtextextended('wake:' || p, 0))
    FROM (SELECT DISTINCT p FROM unnest(CAST(:parents AS text[])) AS p ORDER BY p) AS ordered""")
WAKE_LINKED_CHILDREN = text("""
    UPDATE sync_events AS s SET next_attempt_at = now(), updated_at = now()
    WHERE s.status = 'retry' AND s.operation = 'wait_parent' AND s.detail ->> 'parent' = ANY(CAST(:parents AS text[]))
      AND EXISTS (SELECT 1 FROM links l WHERE l.system = s.system
                  AND l.kind = split_part(s.detail ->> 'parent', ':', 1)
                  AND l.internal_id = CAST(split_part(s.detail ->> 'parent', ':', 2) AS bigint))""")
# Everything held back while a system was down goes as soon as it is back.
WAKE_SYSTEM = text("""
    UPDATE sync_events SET next_attempt_at = now(), updated_at = now()
    WHERE status = 'retry' AND system = :system AND next_attempt_at > now()""")
