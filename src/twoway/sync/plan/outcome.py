"""What a plan returns: everything the engine writes back for one record, in one transaction with the rest."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from twoway.connectors.base import ConnectorError
from twoway.sync.plan.calls import Call
from twoway.sync.plan.snapshot import LinkState
from twoway.syncstate.words import Direction, Operation, Result, Status


@dataclass
class LogRow:
    direction: Direction
    operation: Operation
    status: Status
    internal_id: int | None
    external_id: str | None
    detail: dict[str, Any] | None = None


@dataclass
class Close:
    """Mark owed work of one record superseded. A failure keeps `started` traces; a success clears them."""

    direction: Direction
    internal_id: int | None
    external_id: str | None
    keep_started: bool = False


@dataclass
class Follow:
    """A message to queue in the write-back's transaction."""

    direction: Direction
    kind: str
    internal_id: int | None = None
    external_id: str | None = None
    reason: str = "change"
    hint: int | None = None


@dataclass
class RowWrite:
    """Our row, changed only if still at `expected_version` (the API may have written meanwhile)."""

    expected_version: int
    changes: dict[str, str] = field(default_factory=dict)
    delete: bool = False
    restore: bool = False  # undelete (our delete lost: the other side kept the record)


@dataclass
class Tombstone:
    """A parent deleted over there before we saw it: a deleted row of `kind` with these fields, linked to
    `external_id` (the engine hangs the record on the existing row instead if one got linked first)."""

    kind: str
    internal_id: int
    external_id: str
    fields: dict[str, str]


@dataclass
class Outcome:
    result: Result
    direction: Direction
    internal_id: int | None = None
    external_id: str | None = None
    link: LinkState | None = None
    link_dirty: bool = False
    row: RowWrite | None = None
    insert: tuple[int, dict[str, str]] | None = None
    insert_uid: str | None = None  # the uid the imported object carried (None: a new one)
    tombstone: Tombstone | None = None
    processed: list[int] = field(default_factory=list)
    logs: list[LogRow] = field(default_factory=list)
    close: list[Close] = field(default_factory=list)
    follow: list[Follow] = field(default_factory=list)
    failure: ConnectorError | None = None
    # not a failure: retry soon, attempts untouched (waiting for a parent, a claim to read, ...)
    defer_seconds: float | None = None
    waiting_for: tuple[str, int] | None = None  # (parent kind, parent id)
    synced: bool = False  # a successful sync in `direction` (for metrics)


Plan = Generator[Call, Any, Outcome]
