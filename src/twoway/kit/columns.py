"""The default record store: a kind whose synced fields are plain columns of its table.

Set-based: one statement per batch, whatever its size. Table and column names come from the kind
registry, never from input; values travel as text arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import TextClause, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from twoway.kit.records import Edit, Kind, New

# How a row's version moves on every change (in SQL; `records.bump` on an ORM object).
BUMP = "version = version + 1, updated_at = now()"


class ColumnStore:
    """The `RecordStore` of a kind of plain columns (see `twoway.kit.records`)."""

    async def read(self, session: AsyncSession, kind: Kind, ids: Sequence[int]) -> list[Any]:
        return list((await session.execute(_statement(kind, _select), {"ids": list(ids)})).all())

    async def write(self, session: AsyncSession, kind: Kind, edits: Sequence[Edit]) -> set[int]:
        params: dict[str, Any] = {"ids": [e.id for e in edits], "expected": [e.expected_version for e in edits],
                                  "del": [e.delete for e in edits], "restore": [e.restore for e in edits]}
        for f in kind.fields:
            params[f"v_{f}"] = [e.fields.get(f) for e in edits]
            params[f"s_{f}"] = [f in e.fields for e in edits]
        return {int(r[0]) for r in await session.execute(_statement(kind, _update), params)}

    async def insert(self, session: AsyncSession, kind: Kind, rows: Sequence[New]) -> None:
        params: dict[str, Any] = {"ids": [r.id for r in rows], "del": [r.deleted for r in rows]}
        if kind.has_uid:
            params["uids"] = [r.uid for r in rows]
        for f in kind.fields:
            params[f"v_{f}"] = [r.fields.get(f, "") for r in rows]
        await session.execute(_statement(kind, _insert), params)


COLUMNS = ColumnStore()

_STATEMENTS: dict[tuple[str, str], TextClause] = {}


def _statement(kind: Kind, build: Callable[[Kind], TextClause]) -> TextClause:
    key = (kind.name, build.__name__)
    if key not in _STATEMENTS:
        _STATEMENTS[key] = build(kind)
    return _STATEMENTS[key]


def _value(kind: Kind, name: str, expr: str) -> str:
    """Synced values travel as text; an empty one is NULL in a column that is not text."""
    column_type = str(kind.model.__table__.c[name].type.compile(dialect=postgresql.dialect()))
    if column_type.startswith(("VARCHAR", "TEXT", "CHAR")):
        return f"CAST({expr} AS {column_type})"
    return f"CAST(NULLIF({expr}, '') AS {column_type})"


def _select(kind: Kind) -> TextClause:
    uid = "CAST(uid AS text) AS uid, " if kind.has_uid else ""
    return text(f"SELECT id, version, updated_at, deleted_at, {uid}{', '.join(kind.fields)} FROM {kind.table} "
                f"WHERE id = ANY(CAST(:ids AS bigint[]))")


def _update(kind: Kind) -> TextClause:
    """Conditional on the version read: a row the API wrote meanwhile is left alone (and retried)."""
    sets = ", ".join(f"{f} = CASE WHEN v.s_{f} THEN {_value(kind, f, 'v.v_' + f)} ELSE t.{f} END"
                     for f in kind.fields)
    arrays = ", ".join(f"CAST(:v_{f} AS text[]), CAST(:s_{f} AS boolean[])" for f in kind.fields)
    names = ", ".join(f"v_{f}, s_{f}" for f in kind.fields)
    return text(f"""
        UPDATE {kind.table} AS t SET {sets},
            deleted_at = CASE WHEN v.del AND t.deleted_at IS NULL THEN now() WHEN v.restore THEN NULL
                              ELSE t.deleted_at END,
            {BUMP}
        FROM unnest(CAST(:ids AS bigint[]), CAST(:expected AS int[]), CAST(:del AS boolean[]),
                    CAST(:restore AS boolean[]), {arrays})
             AS v(id, expected, del, restore, {names})
        WHERE t.id = v.id AND t.version = v.expected
        RETURNING t.id""")


def _insert(kind: Kind) -> TextClause:
    cols = ", ".join(kind.fields)
    values = ", ".join(_value(kind, f, f"v.v_{f}") for f in kind.fields)
    arrays = ", ".join(f"CAST(:v_{f} AS text[])" for f in kind.fields)
    names = ", ".join(f"v_{f}" for f in kind.fields)
    # An import keeps the uid its object carried (a record a restore lost); without one, a fresh one.
    uid = ("uid, ", "COALESCE(CAST(v.uid AS uuid), gen_random_uuid()), ", "CAST(:uids AS text[]), ", "uid, ") \
        if kind.has_uid else ("", "", "", "")
    return text(f"""
        INSERT INTO {kind.table} (id, {uid[0]}{cols}, version, deleted_at)
        SELECT v.id, {uid[1]}{values}, 1, CASE WHEN v.del THEN now() END
        FROM unnest(CAST(:ids AS bigint[]), {uid[2]}CAST(:del AS boolean[]), {arrays})
             AS v(id, {uid[3]}del, {names})""")
