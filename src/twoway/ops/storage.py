"""What each table holds and how old its oldest kept row is, with the retention window that bounds it.

Read cheaply, as `twoway status` and the dashboard refresh every few seconds: the size is
`pg_total_relation_size` (indexes and TOAST included); the rows are the planner's estimate
(`pg_class.reltuples`, as of the last ANALYZE; before the first, the statistics' live-row count), as a
`count(*)` would read all of `inbox` or `sync_events`; the oldest row is found through an index: the
column retention purges by where it has one, else the first row by id (ids are handed out in the order
rows are made, so its `created_at` is about the oldest).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.kit.retention import Windows


def _first_by_id(table: str) -> str:
    return f"SELECT created_at FROM {table} ORDER BY id LIMIT 1"


@dataclass(frozen=True)
class Watched:
    """A table, how to find its oldest kept row, and the window (a `Windows` field) that bounds it."""

    table: str
    column: str
    oldest: str  # SQL for the oldest kept row's `column`, through an index
    window: str | None = None  # None: kept for as long as the record lives (the data itself)
    setting: str | None = None


# The oldest processed inbox event, by processed_at: retention's clock (events still to be handled are
# never purged; they are the inbox backlog). The ones still holding a payload are a window of their own.
INBOX_PAYLOADS = Watched("inbox", "processed_at", "SELECT min(processed_at) FROM inbox "
                         "WHERE processed_at IS NOT NULL AND payload <> '{}'::jsonb",  # ix_inbox_payload_kept
                         "inbox_payload", "INBOX_PAYLOAD_RETENTION_HOURS")
WATCHED = (
    Watched("customers", "created_at", _first_by_id("customers")),
    Watched("invoices", "created_at", _first_by_id("invoices")),
    Watched("invoice_lines", "created_at", _first_by_id("invoice_lines")),
    Watched("links", "created_at", _first_by_id("links")),
    Watched("inbox", "processed_at", "SELECT min(processed_at) FROM inbox WHERE processed_at IS NOT NULL",
            "inbox_dedup", "INBOX_DEDUP_RETENTION_DAYS"),  # ix_inbox_processed
    Watched("outbox", "created_at", _first_by_id("outbox"), "outbox", "OUTBOX_RETENTION_SECONDS"),
    Watched("sync_events", "created_at", _first_by_id("sync_events"), "sync_events", "SYNC_EVENTS_RETENTION_DAYS"),
    Watched("idempotency_keys", "created_at", "SELECT min(created_at) FROM idempotency_keys",
            "idempotency_keys", "IDEMPOTENCY_KEY_RETENTION_HOURS"),  # ix_idempotency_keys_created_at
)

# to_regclass: a table this database lacks is left out, not an error.
_SIZES = text("""
    SELECT t.name, pg_total_relation_size(c.oid) AS bytes,
           CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint ELSE s.n_live_tup END AS rows
    FROM unnest(CAST(:names AS text[])) AS t(name)
    JOIN pg_class c ON c.oid = to_regclass(t.name)
    LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid""")


async def read_tables(session: AsyncSession, windows: Windows) -> dict[str, dict[str, Any]]:
    """{table: {bytes, rows_estimate, oldest: {column, at, age_seconds}, retention: {seconds, setting}}};
    `inbox` also has `payloads`: the oldest processed event still holding its JSON, and that window."""
    now = (await session.execute(text("SELECT now()"))).scalar_one()
    sizes = {r.name: r for r in await session.execute(_SIZES, {"names": [w.table for w in WATCHED]})}
    tables: dict[str, dict[str, Any]] = {}
    for watched in WATCHED:
        if watched.table not in sizes:
            continue
        size = sizes[watched.table]
        tables[watched.table] = {"bytes": int(size.bytes),
                                 "rows_estimate": int(size.rows) if size.rows is not None else None,
                                 **await _oldest(session, watched, windows, now)}
    if "inbox" in tables:
        tables["inbox"]["payloads"] = await _oldest(session, INBOX_PAYLOADS, windows, now)
    return tables


async def _oldest(session: AsyncSession, watched: Watched, windows: Windows, now: datetime) -> dict[str, Any]:
    at = (await session.execute(text(watched.oldest))).scalar()
    retention = ({"seconds": getattr(windows, watched.window), "setting": watched.setting}
                 if watched.window else None)
    return {"oldest": {"column": watched.column, "at": at.isoformat() if at else None,
                       "age_seconds": round((now - at).total_seconds(), 1) if at else None},
            "retention": retention}
