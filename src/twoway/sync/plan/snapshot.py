"""What a plan reads: one record's state on both sides, read by the engine in one short transaction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from twoway.connectors.base import ExternalRecord
from twoway.kit.rules import DEFAULT, Rules
from twoway.sync.merge import Policy

DELETED: dict[str, Any] = {"deleted": True}  # a link's base once the object is deleted over there
# A snapshot's window when its maker names none (tests, models): a day, less a margin. The engine passes
# the connector's own (`Connector.idempotency_window`).
IDEMPOTENCY_WINDOW = timedelta(hours=23)
# How far the external system's clock (its events' `created`) may be ahead of ours (a link's write time):
# a link written at t holds a state no newer than their t + this.
CLOCK_SKEW = timedelta(seconds=1)


@dataclass(frozen=True)
class Ours:
    id: int
    version: int
    fields: Mapping[str, str]
    deleted: bool = False
    changed_at: datetime | None = None
    uid: str | None = None  # an identity a restore cannot re-issue (None: a kind without one)


@dataclass(frozen=True)
class LinkState:
    internal_id: int
    external_id: str
    base: Mapping[str, Any]
    last_pushed_version: int = 0
    id: int | None = None  # None: a link this plan made


@dataclass(frozen=True)
class Pending:
    """An unprocessed inbox event: what it carried, and when."""

    id: int
    record: ExternalRecord | None
    created: datetime | None = None
    received_at: datetime | None = None


@dataclass(frozen=True)
class Started:
    key: str
    fields: Mapping[str, str] | None
    at: datetime


@dataclass(frozen=True)
class Trace:
    """What the sync log says about earlier creates of this record in this system."""

    had_success: bool = False
    started: tuple[Started, ...] = ()
    # The row was imported from an object that carried a uid we did not know (a record our catalog lost in
    # a restore): the other systems may hold it too, so a create here looks for it by uid first.
    restored: bool = False

    @property
    def exists(self) -> bool:
        return self.had_success or bool(self.started) or self.restored

    def replayable(self, now: datetime, window: timedelta | None) -> Started | None:
        """The earliest create we sent, if re-sending it (same key, same fields) is a safe replay.

        Safe while the system still remembers the key (for `window`; None: for ever) and nothing else may
        have created the object: then retries of a create (even after our row moved on) replay it instead
        of searching first.
        """
        if self.had_success or not self.started:
            return None
        first = min(self.started, key=lambda s: s.at)
        if first.fields is None or (window is not None and now - first.at >= window):
            return None
        return first


@dataclass(frozen=True)
class Claim:
    """A row an external object names as ours (by our id, or by its uid), read under its lock."""

    row: Ours | None
    linked: bool


@dataclass(frozen=True)
class Snapshot:
    """Everything a plan may look at, read in the batch's one short read transaction."""

    kind: str
    system: str
    now: datetime
    ours: Ours | None = None
    link: LinkState | None = None
    pending: tuple[Pending, ...] = ()
    trace: Trace = Trace()
    rules: Rules = DEFAULT
    policy: Policy = "newer_wins"
    uids: bool = False  # the kind's rows keep a uid (`Kind.has_uid`): imports keep or make one
    # how long the system keeps an idempotency key (None: for ever): how long a create can be replayed
    idempotency_window: timedelta | None = IDEMPOTENCY_WINDOW
    # inbound, unlinked: rows the external object may claim (by id), read under their lock
    claims: Mapping[int, Claim] = field(default_factory=dict)
    # parent: our parent id -> its external id in this system (only the linked ones)
    parent_links: Mapping[int, str] = field(default_factory=dict)
    # parents whose link says they are deleted over there, or deleted here and never linked
    parents_gone: frozenset[int] = frozenset()
    # The system's events carry the object as it was at the event (Stripe's): the newest may stand for a read.
    event_objects: bool = False
    # The newest moment (in their clock) of a state of the object we hold or have seen: `seen_until`.
    seen: datetime | None = None


def seen_until(link_written: datetime | None, handled: datetime | None) -> datetime | None:
    """How new (in their clock) the state we know of an object may be: the link's last write (ours, plus
    the clocks' skew) and the newest event of it already handled. None: we know of none."""
    times = [t for t in (link_written + CLOCK_SKEW if link_written else None, handled) if t is not None]
    return max(times, default=None)
