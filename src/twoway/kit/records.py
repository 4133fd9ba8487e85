"""Kinds of record are data: a table, its synced fields. The engine works on any registered kind.

A synced record has `id`, `version`, `updated_at`, `deleted_at` and the kind's fields; every write
bumps the version and queues its outbox message in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.kit.outbox import enqueue_outbound
from twoway.kit.rules import DEFAULT, Rules


class SyncedRecord(Protocol):
    id: Any
    version: Any
    updated_at: Any
    deleted_at: Any

    def fields(self) -> dict[str, str]: ...


class RecordStore(Protocol):
    """How the sync engine reads and writes a kind's synced fields, as text, in the caller's transaction."""

    async def read(self, session: AsyncSession, ids: Sequence[int]) -> list[Any]:
        """Rows with `id`, `version`, `updated_at`, `deleted_at` and an attribute per synced field."""
        ...

    async def write(self, session: AsyncSession, record_id: int, expected_version: int,
                    changes: Mapping[str, str], delete: bool, *, restore: bool = False) -> bool:
        """Apply merged values and bump the version, only if the row is still at `expected_version`.
        `restore`: undelete it (our delete lost to the other side)."""
        ...

    async def insert(self, session: AsyncSession, record_id: int, fields: Mapping[str, str]) -> None:
        """A record imported from another system, at version 1."""
        ...


@dataclass(frozen=True)
class Kind:
    name: str
    model: type[Any]
    fields: tuple[str, ...]
    # How the fields merge (both-sides, owned, status ladder, deletion, parent): see kit/rules.py.
    rules: Rules = DEFAULT
    # A kind whose synced fields are not plain columns of its table (child rows, derived values) reads
    # and writes them itself: a `RecordStore`. None: the engine's set-based SQL on the `fields` columns.
    store: RecordStore | None = None

    @property
    def table(self) -> str:
        return str(self.model.__tablename__)


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


async def get(session: AsyncSession, kind_name: str, record_id: int, *, for_update: bool = False) -> Any:
    model = kind(kind_name).model
    stmt = select(model).where(model.id == record_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def create(session: AsyncSession, kind_name: str, values: dict[str, str]) -> Any:
    spec = kind(kind_name)
    record = spec.model(**{f: values.get(f, "") for f in spec.fields}, version=1)
    session.add(record)
    await session.flush()
    await enqueue_outbound(session, kind_name, record.id)
    return record


async def update(session: AsyncSession, kind_name: str, record: SyncedRecord, changes: dict[str, str]) -> bool:
    """Apply the changes that differ; returns False (and writes nothing) when none do."""
    changed = {k: v for k, v in changes.items() if getattr(record, k) != v}
    if not changed:
        return False
    for key, value in changed.items():
        setattr(record, key, value)
    await _bump(session, kind_name, record)
    return True


async def soft_delete(session: AsyncSession, kind_name: str, record: SyncedRecord) -> bool:
    if record.deleted_at is not None:
        return False
    record.deleted_at = func.now()
    await _bump(session, kind_name, record)
    return True


async def _bump(session: AsyncSession, kind_name: str, record: SyncedRecord) -> None:
    record.version = record.version + 1
    record.updated_at = func.now()
    await session.flush()  # eager defaults: RETURNING brings updated_at (and deleted_at) back
    await enqueue_outbound(session, kind_name, record.id)


def changed_at(record: SyncedRecord) -> datetime | None:
    value = record.updated_at
    return value if isinstance(value, datetime) else None
