"""Kinds of record are data: a table, its synced fields, its store. The engine works on any registered kind.

A synced record has `id`, `version`, `updated_at`, `deleted_at` and the kind's fields. Every change to
one goes through `write`: its version moves and its outbound message is queued, in the caller's
transaction, whoever writes (the API, the sync engine) and whatever the kind's storage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import func
from sqlalchemy import inspect as orm_state
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.kit import outbox
from twoway.kit.columns import COLUMNS
from twoway.kit.rules import DEFAULT, Rules


class SyncedRecord(Protocol):
    """An ORM object of a kind's model."""

    id: Any
    version: Any
    updated_at: Any
    deleted_at: Any


@dataclass(frozen=True)
class Edit:
    """Merged values (as text) for a row, a delete or an undelete (`restore`: our delete lost to the other
    side), written only if the row is still at `expected_version` (the API may have written meanwhile)."""

    id: int
    expected_version: int
    fields: Mapping[str, str] = field(default_factory=dict)
    delete: bool = False
    restore: bool = False


@dataclass(frozen=True)
class New:
    """A row imported from another system, at version 1, under an id we reserved. `deleted`: a tombstone
    (a parent deleted over there before we saw it), in step with the link made with it. `uid`: the
    identity the external object carried (a record of ours that a restore lost keeps its own); None: a
    fresh one (a kind with a `uid` column)."""

    id: int
    fields: Mapping[str, str]
    deleted: bool = False
    uid: str | None = None


# What `write` takes: a store's edit or new row, or an ORM object the caller changed (or made) itself.
Change = Edit | New | SyncedRecord


class RecordStore(Protocol):
    """How a kind's synced fields are read and written, as text, in the caller's transaction. Only `write`
    below calls `write` and `insert`."""

    async def read(self, session: AsyncSession, kind: Kind, ids: Sequence[int]) -> list[Any]:
        """Rows with `id`, `version`, `updated_at`, `deleted_at`, an attribute per synced field, and `uid`
        for a kind that has one (`Kind.has_uid`)."""
        ...

    async def write(self, session: AsyncSession, kind: Kind, edits: Sequence[Edit]) -> set[int]:
        """Apply each edit whose row is still at its expected version, moving the version on (`bump`, or
        `columns.BUMP` in SQL); the ids written."""
        ...

    async def insert(self, session: AsyncSession, kind: Kind, rows: Sequence[New]) -> None:
        ...


@dataclass(frozen=True)
class Kind:
    name: str
    model: type[Any]
    fields: tuple[str, ...]
    # How the fields merge (both-sides, owned, status ladder, deletion, parent): see kit/rules.py.
    rules: Rules = DEFAULT
    # The default: the `fields` are plain columns of the table, written set-based (kit/columns.py). A kind
    # whose synced fields are not (child rows, derived values) brings its own.
    store: RecordStore = COLUMNS

    @property
    def table(self) -> str:
        return str(self.model.__tablename__)

    @property
    def has_uid(self) -> bool:
        """The table keeps a `uid`, an identity a restored database cannot re-issue (its creates carry it)."""
        return "uid" in self.model.__table__.c


# Filled as each kind's models module is imported (`register` at module level). The kit never imports
# them itself (imports run downward): every entry point (API, worker, CLI) imports `twoway.models`,
# which imports every table and so registers every kind.
_KINDS: dict[str, Kind] = {}
_NOT_LOADED = "no kind of record is registered: the entry point must import twoway.models first"


def register(kind: Kind) -> Kind:
    _KINDS[kind.name] = kind
    return kind


def kind(name: str) -> Kind:
    if name not in _KINDS:
        raise KeyError(f"unknown kind {name!r}" if _KINDS else _NOT_LOADED)
    return _KINDS[name]


def all_kinds() -> list[Kind]:
    if not _KINDS:  # a worker that sweeps no kind would fail silently: fail loudly instead
        raise RuntimeError(_NOT_LOADED)
    return list(_KINDS.values())


async def write(session: AsyncSession, kind_name: str, changes: Sequence[Change], *,
                queue: list[outbox.Message] | None = None) -> list[int]:
    """The one way a synced row changes. Each change is written (an edit only if its row is still at the
    version read), its version moves (a new row starts at 1) and its `outbound` message is queued, all in
    the caller's transaction. Returns the ids announced, in the order of `changes`: every row written but
    a tombstone (its link already holds it).

    `queue`: add the messages there, for a caller that sends all of its messages in one statement;
    else they are enqueued here.
    """
    spec = kind(kind_name)
    new = [c for c in changes if isinstance(c, New)]
    edits = [c for c in changes if isinstance(c, Edit)]
    objects = [c for c in changes if not isinstance(c, Edit | New)]
    if new:
        await spec.store.insert(session, spec, new)
    done = await spec.store.write(session, spec, edits) if edits else set()
    if objects:
        for record in objects:
            if orm_state(record).persistent:
                bump(record)
            else:
                record.version = 1
                session.add(record)
        await session.flush()  # eager defaults: RETURNING brings ids, updated_at (and deleted_at) back

    def announced(change: Change) -> bool:
        if isinstance(change, Edit):
            return change.id in done
        return not (isinstance(change, New) and change.deleted)

    written = [int(c.id) for c in changes if announced(c)]
    messages = [outbox.outbound(kind_name, i) for i in written]
    if queue is None:
        await outbox.enqueue(session, messages)
    else:
        queue.extend(messages)
    return written


def bump(record: SyncedRecord) -> None:
    """An ORM object's next version (what `columns.BUMP` does in SQL); flushed by the caller."""
    record.version = record.version + 1
    record.updated_at = func.now()
