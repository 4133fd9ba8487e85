"""Issue 21: one write path. Every change to a synced row, of every kind and whatever its store, goes
through `records.write`: the version moves (a new row starts at 1), the row's outbound message is
queued in the same transaction, and a change to a row that moved meanwhile writes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

import twoway.models  # noqa: F401  (registers every kind)
from twoway.kit import records
from twoway.kit.db import unit_of_work

KINDS = {
    "customer": {"name": "Ada", "email": "ada@example.com"},
    "invoice": {"currency": "eur", "collection_method": "charge_automatically", "description": "first"},
}


async def _state(db: Any, kind: str, rid: int) -> tuple[int, bool, list[Any]]:
    """The row's version, whether it is deleted, and the outbox payloads queued for it."""
    table = records.kind(kind).table
    async with db() as s:
        row = (await s.execute(text(f"SELECT version, deleted_at IS NOT NULL AS gone FROM {table} WHERE id = :id"),
                               {"id": rid})).one()
        sent = (await s.execute(text("SELECT payload FROM outbox WHERE key = :k ORDER BY id"),
                                {"k": f"{kind}:{rid}"})).scalars().all()
    return int(row.version), bool(row.gone), list(sent)


async def _customer(db: Any) -> int:
    async with unit_of_work(db) as session:
        (cid,) = await records.write(session, "customer", [records.New(10_000, KINDS["customer"])])
    return cid


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_every_kind_bumps_and_queues_through_the_one_write(db, kind: str) -> None:  # type: ignore[no-untyped-def]
    fields = dict(KINDS[kind])
    if kind == "invoice":
        fields["customer_id"] = str(await _customer(db))
    change = {"customer": {"name": "Ada King"}, "invoice": {"description": "second"}}[kind]
    change_message = {"kind": kind, "id": 1, "reason": "change"}

    async with unit_of_work(db) as session:
        assert await records.write(session, kind, [records.New(1, fields)]) == [1]
    assert await _state(db, kind, 1) == (1, False, [change_message])

    async with unit_of_work(db) as session:
        assert await records.write(session, kind, [records.Edit(1, 1, change)]) == [1]
    assert await _state(db, kind, 1) == (2, False, [change_message] * 2)

    # Written meanwhile (the version read is 1, the row is at 2): nothing written, nothing queued.
    async with unit_of_work(db) as session:
        assert await records.write(session, kind, [records.Edit(1, 1, {}, delete=True)]) == []
    assert await _state(db, kind, 1) == (2, False, [change_message] * 2)

    async with unit_of_work(db) as session:
        assert await records.write(session, kind, [records.Edit(1, 2, {}, delete=True)]) == [1]
    assert await _state(db, kind, 1) == (3, True, [change_message] * 3)

    # An ORM object the caller changed itself (the API's writes): the same bump and message.
    async with unit_of_work(db) as session:
        row = await session.get(records.kind(kind).model, 1)
        row.deleted_at = None
        assert await records.write(session, kind, [row]) == [1]
    assert await _state(db, kind, 1) == (4, False, [change_message] * 4)

    # A tombstone is born deleted at version 1, in step with its link: nothing to announce.
    async with unit_of_work(db) as session:
        assert await records.write(session, kind, [records.New(2, fields, deleted=True)]) == []
    assert await _state(db, kind, 2) == (1, True, [])


async def test_a_caller_s_queue_takes_the_messages(db) -> None:  # type: ignore[no-untyped-def]
    """The sync engine sends all of a write-back's messages in one statement: the write path adds to it."""
    queue: list[Any] = []
    async with unit_of_work(db) as session:
        await records.write(session, "customer", [records.New(7, KINDS["customer"])], queue=queue)
    assert [(m.key, m.payload["reason"]) for m in queue] == [("customer:7", "change")]
    assert await _state(db, "customer", 7) == (1, False, [])
