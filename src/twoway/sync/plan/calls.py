"""What a plan may yield: the external system's calls, and three pseudo-calls that are the engine's.

The engine answers each (or throws the connector's error in). `MarkStarted`, `NewId`, `FindLink` and `FindUid` never
reach the external system: they read or write our own database, in their own short transactions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Fetch:
    external_id: str
    kind: str | None = None  # None: the record's own kind (another: its parent)


@dataclass(frozen=True)
class Search:
    """The object that carries our id or our uid (the connector's best match)."""

    internal_id: int
    uid: str | None = None


@dataclass(frozen=True)
class Create:
    internal_id: int
    fields: Mapping[str, str]
    key: str
    uid: str | None = None


@dataclass(frozen=True)
class Update:
    external_id: str
    changes: Mapping[str, str]
    key: str


@dataclass(frozen=True)
class Delete:
    external_id: str
    key: str


@dataclass(frozen=True)
class SetInternalId:
    external_id: str
    internal_id: int
    key: str
    uid: str | None = None


@dataclass(frozen=True)
class MarkStarted:
    """Engine: commit a `started` create trace (key and the fields sent) before the create is sent."""

    key: str
    fields: Mapping[str, str]


@dataclass(frozen=True)
class NewId:
    """Engine: reserve an id of our kind (or of `kind`) for an import."""

    kind: str | None = None


@dataclass(frozen=True)
class FindLink:
    """Engine: our internal id linked to (kind, external id) in this system, or None (a plain read)."""

    kind: str
    external_id: str


@dataclass(frozen=True)
class FindUid:
    """Engine: our row (id) of this kind that carries `uid`, or None; read under a lock on the uid, held
    until the write-back, so two objects that carry one uid (from two systems) are imported once."""

    uid: str


Call = Fetch | Search | Create | Update | Delete | SetInternalId | MarkStarted | NewId | FindLink | FindUid
EXTERNAL_CALLS = (Fetch, Search, Create, Update, Delete, SetInternalId)
