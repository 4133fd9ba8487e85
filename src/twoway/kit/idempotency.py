"""`Idempotency-Key` on our own POSTs, as Stripe does: the first answer is stored durably with the write,
in the same transaction, and a retry with the same key gets that answer again instead of a second write.

A key reused with different parameters is refused (400). Keys are kept IDEMPOTENCY_KEY_RETENTION_HOURS
(24 h by default), then purged by the worker's retention round (kit/retention.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from sqlalchemy import DateTime, Index, Integer, String, Text, func, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from twoway.kit.db import Base

KEY_MAX = 255


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(KEY_MAX), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    response: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    # Retention (kit/retention.py) purges by age.
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)


@dataclass(frozen=True)
class Stored:
    request_hash: str
    status: int
    response: str


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


async def lookup(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> Stored | None:
    row = await conn.fetchrow("SELECT request_hash, status, response FROM idempotency_keys WHERE key = $1", key)
    return Stored(row["request_hash"], row["status"], row["response"]) if row else None


# Claimed with a placeholder answer in the writer's transaction; filled in before that transaction commits.
CLAIM = """
INSERT INTO idempotency_keys (key, request_hash, status, response)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[])
ON CONFLICT (key) DO NOTHING RETURNING key
"""
ANSWER = """
UPDATE idempotency_keys AS k SET response = a.response
FROM unnest($1::text[], $2::text[]) AS a(key, response) WHERE k.key = a.key
"""


async def claim(conn: asyncpg.Connection, keys: list[tuple[str, str]], status: int) -> set[str]:
    """The keys (key, request hash) this transaction now owns; the others were used before."""
    if not keys:
        return set()
    ordered = sorted(dict(keys).items())  # one lock order for every transaction
    rows = await conn.fetch(CLAIM, [k for k, _ in ordered], [h for _, h in ordered], [status] * len(ordered),
                            [""] * len(ordered))
    return {r["key"] for r in rows}


async def answer(conn: asyncpg.Connection, answers: list[tuple[str, str]]) -> None:
    if answers:
        await conn.execute(ANSWER, [k for k, _ in answers], [r for _, r in answers])


# The same, in an ORM session's transaction (for writes that go through a session, not a group commit).
_CLAIM_ONE = text("INSERT INTO idempotency_keys (key, request_hash, status, response) "
                  "VALUES (:key, :hash, :status, '') ON CONFLICT (key) DO NOTHING RETURNING key")
_ANSWER_ONE = text("UPDATE idempotency_keys SET response = :response WHERE key = :key")
_LOOKUP_ONE = text("SELECT request_hash, status, response FROM idempotency_keys WHERE key = :key")


async def claim_in(session: AsyncSession, key: str, fingerprint: str, status: int) -> bool:
    """Own `key` in this transaction (True), or find it used before (False). A concurrent claim of the same
    key waits here until that transaction ends, so a False is followed by a lookup that sees its answer."""
    return (await session.execute(_CLAIM_ONE, {"key": key, "hash": fingerprint, "status": status})).first() \
        is not None


async def answer_in(session: AsyncSession, key: str, response: str) -> None:
    await session.execute(_ANSWER_ONE, {"key": key, "response": response})


async def lookup_in(session: AsyncSession, key: str) -> Stored | None:
    row = (await session.execute(_LOOKUP_ONE, {"key": key})).first()
    return Stored(row.request_hash, row.status, row.response) if row else None
