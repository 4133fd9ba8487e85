"""Customer writes in plain SQL on the hot path.

Creates go through a group commit: many clients' rows, their outbox rows, one NOTIFY and their
idempotency keys share one transaction; each client is answered after the commit holding its row.
Updates run one transaction each: each locks its row (`FOR UPDATE`), so in a shared transaction one
contended row would hold up the whole group. (Deletes stay on the
ORM path in routes.py: they are rare and must check the customer's invoices.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from twoway.customers.schemas import CustomerOut
from twoway.kit import idempotency
from twoway.kit.columns import BUMP
from twoway.kit.groupcommit import GroupCommit
from twoway.kit.outbox import NOTIFY, queue_outbound

KIND = "customer"
COLUMNS = "id, name, email, version, created_at, updated_at, deleted_at"

# Ordered by the input's ordinality, so identity values (and RETURNING, sorted by id) follow the input.
# The same change as `records.write` (version 1, or `BUMP`, and the row's outbound message) in one round trip.
CREATE_GROUP = f"""
WITH ins AS (
  INSERT INTO customers (name, email, version)
  SELECT name, email, 1 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS b(name, email, ord) ORDER BY ord
  RETURNING {COLUMNS}
), queued AS ({queue_outbound(KIND, "ins ORDER BY id")})
SELECT {COLUMNS} FROM ins
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM (SELECT {NOTIFY} FROM (SELECT 1 FROM queued LIMIT 1) one) n
"""
GET_FOR_UPDATE = f"SELECT {COLUMNS} FROM customers WHERE id = $1 FOR UPDATE"
GET = f"SELECT {COLUMNS} FROM customers WHERE id = $1"
UPDATE = f"""
WITH up AS (
  UPDATE customers SET name = $2, email = $3, {BUMP} WHERE id = $1 RETURNING {COLUMNS}
), queued AS ({queue_outbound(KIND, "up")})
SELECT {COLUMNS}, (SELECT {NOTIFY} FROM queued) IS NULL AS notified FROM up
"""


@dataclass(frozen=True)
class Create:
    name: str
    email: str
    key: str | None = None
    request_hash: str = ""


@dataclass(frozen=True)
class Created:
    """`body` is the 201 answer; None when the key was used before (the caller replays what it stored)."""

    body: str | None


def render(row: Any) -> str:
    return CustomerOut(**dict(row)).model_dump_json()


async def create_group(conn: asyncpg.Connection, items: Sequence[Create]) -> list[Created]:
    owned = await idempotency.claim(conn, [(i.key, i.request_hash) for i in items if i.key], 201)
    writes: list[int] = []  # positions of the items that create a row
    seen: set[str] = set()
    for n, item in enumerate(items):
        if item.key is None or (item.key in owned and item.key not in seen):
            writes.append(n)
        if item.key is not None:
            seen.add(item.key)
    results: list[Created] = [Created(None)] * len(items)
    if not writes:
        return results
    rows = [r for r in await conn.fetch(CREATE_GROUP, [items[n].name for n in writes],
                                        [items[n].email for n in writes]) if r["id"] is not None]
    rows.sort(key=lambda r: r["id"])
    answers = []
    for n, row in zip(writes, rows, strict=True):
        results[n] = Created(render(row))
        key = items[n].key
        if key is not None:
            answers.append((key, results[n].body or ""))
    await idempotency.answer(conn, answers)
    return results


def customer_writer(pool: asyncpg.Pool, *, max_batch: int, max_wait: float,
                 max_inflight: int = 4) -> GroupCommit[Create, Created]:
    return GroupCommit(pool, create_group, name="customers", max_batch=max_batch, max_wait=max_wait,
                       max_inflight=max_inflight)


async def update(pool: asyncpg.Pool, customer_id: int, changes: dict[str, str]) -> str | None:
    """The answer body, or None when there is no live customer. A change to nothing bumps nothing."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(GET_FOR_UPDATE, customer_id)
        if row is None or row["deleted_at"] is not None:
            return None
        changed = {k: v for k, v in changes.items() if row[k] != v}
        if not changed:
            return render(row)
        new = await conn.fetchrow(UPDATE, customer_id, changed.get("name", row["name"]),
                                  changed.get("email", row["email"]))
        return render(new)
