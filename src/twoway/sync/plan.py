"""The planner: what to do for one record, as a pure state machine. This is where correctness lives.

A plan is a generator: it yields the calls it needs (`Fetch`, `Create`, ...) and receives their
results (or has the connector's error thrown in), and returns an `Outcome`: everything to write back.
It reads nothing and writes nothing itself, so the engine can run hundreds of plans concurrently with
no transaction held, write every outcome in one transaction, and the property model can drive the very
same code against a model of Stripe (tests/unit/test_sync_model.py).

Two pseudo-calls are the engine's, not the external system's: `MarkStarted` (commit a create trace
before the create, so a crash leaves a trace that a create may exist) and `NewId` (reserve our id for
an import, so the external object can carry it before our row is written).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from twoway.connectors.base import ConnectorError, ExternalRecord, NotFound, ParentMissing, Refused
from twoway.kit.rules import DEFAULT, Ladder, Rules
from twoway.sync.merge import Conflict, Policy, merge

DELETED: dict[str, Any] = {"deleted": True}
# Stripe keeps idempotency keys for 24 hours; stay clear of the edge.
IDEMPOTENCY_WINDOW = timedelta(hours=23)


# -- calls a plan may yield ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fetch:
    external_id: str
    kind: str | None = None  # None: the record's own kind (another: its parent)


@dataclass(frozen=True)
class Search:
    internal_id: int


@dataclass(frozen=True)
class Create:
    internal_id: int
    fields: Mapping[str, str]
    key: str


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


Call = Fetch | Search | Create | Update | Delete | SetInternalId | MarkStarted | NewId | FindLink
EXTERNAL_CALLS = (Fetch, Search, Create, Update, Delete, SetInternalId)


# -- what a plan reads ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ours:
    id: int
    version: int
    fields: Mapping[str, str]
    deleted: bool = False
    changed_at: datetime | None = None


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

    @property
    def exists(self) -> bool:
        return self.had_success or bool(self.started)

    def replayable(self, now: datetime, window: timedelta = IDEMPOTENCY_WINDOW) -> Started | None:
        """The earliest create we sent, if re-sending it (same key, same fields) is a safe replay.

        Safe while the system still remembers the key and nothing else may have created the object:
        then retries of a create (even after our row moved on) replay it instead of searching first.
        """
        if self.had_success or not self.started:
            return None
        first = min(self.started, key=lambda s: s.at)
        if first.fields is None or now - first.at >= window:
            return None
        return first


@dataclass(frozen=True)
class Claim:
    """A row an external object names as ours (metadata.internal_id), read under its lock."""

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
    # inbound, unlinked: rows the external object may claim (by id), read under their lock
    claims: Mapping[int, Claim] = field(default_factory=dict)
    # parent: our parent id -> its external id in this system (only the linked ones)
    parent_links: Mapping[int, str] = field(default_factory=dict)
    # parents whose link says they are deleted over there, or deleted here and never linked
    parents_gone: frozenset[int] = frozenset()


# -- what a plan returns ------------------------------------------------------------------------


@dataclass
class LogRow:
    direction: str
    operation: str
    status: str
    internal_id: int | None
    external_id: str | None
    detail: dict[str, Any] | None = None


@dataclass
class Close:
    """Mark owed work of one record superseded. A failure keeps `started` traces; a success clears them."""

    direction: str
    internal_id: int | None
    external_id: str | None
    keep_started: bool = False


@dataclass
class Follow:
    """A message to queue in the write-back's transaction."""

    direction: str
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
    result: str
    direction: str
    internal_id: int | None = None
    external_id: str | None = None
    link: LinkState | None = None
    link_dirty: bool = False
    row: RowWrite | None = None
    insert: tuple[int, dict[str, str]] | None = None
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


# -- the work of one record in memory -------------------------------------------------------


class _Work:
    def __init__(self, s: Snapshot, direction: str, external_id: str | None) -> None:
        self.s = s
        self.row = s.ours
        self.link = s.link
        self.out = Outcome(result="", direction=direction,
                           internal_id=s.ours.id if s.ours else (s.link.internal_id if s.link else None),
                           external_id=external_id or (s.link.external_id if s.link else None))

    # our row: one write per pass, bumping the version once
    def _bumped(self) -> Ours:
        assert self.row is not None and self.s.ours is not None
        if self.out.row is None:
            self.out.row = RowWrite(expected_version=self.s.ours.version)
            self.out.follow.append(Follow("outbound", self.s.kind, self.row.id, reason="change"))
            return replace(self.row, version=self.s.ours.version + 1, changed_at=self.s.now)
        return self.row

    def update_row(self, changes: dict[str, str]) -> None:
        assert self.row is not None
        row = self._bumped()
        assert self.out.row is not None
        self.out.row.changes.update(changes)
        self.row = replace(row, fields={**row.fields, **changes})

    def soft_delete(self) -> None:
        assert self.row is not None
        if self.row.deleted:
            return
        row = self._bumped()
        assert self.out.row is not None
        self.out.row.delete = True
        self.row = replace(row, deleted=True)

    def restore_row(self, changes: dict[str, str]) -> None:
        assert self.row is not None
        row = self._bumped()
        assert self.out.row is not None
        self.out.row.changes.update(changes)
        self.out.row.delete, self.out.row.restore = False, True
        self.row = replace(row, fields={**row.fields, **changes}, deleted=False)

    def set_link(self, link: LinkState) -> None:
        self.link = link
        self.out.link = link
        self.out.link_dirty = True
        self.out.internal_id = link.internal_id
        self.out.external_id = link.external_id

    def patch_link(self, **changes: Any) -> None:
        assert self.link is not None
        self.set_link(replace(self.link, **changes))

    def log(self, direction: str, operation: str, status: str = "ok", detail: dict[str, Any] | None = None) -> None:
        iid = self.link.internal_id if self.link else (self.row.id if self.row else None)
        xid = self.link.external_id if self.link else self.out.external_id
        self.out.logs.append(LogRow(direction, operation, status, iid, xid, detail))

    def close(self, direction: str, *, keep_started: bool = False) -> None:
        if direction == "outbound":
            iid = self.row.id if self.row else (self.link.internal_id if self.link else None)
            self.out.close.append(Close(direction, iid, None, keep_started))
        else:
            xid = self.link.external_id if self.link else self.out.external_id
            self.out.close.append(Close(direction, None, xid, keep_started))

    def key(self, *parts: object) -> str:
        return "twoway:" + ":".join(str(p) for p in (self.s.system, self.s.kind, *parts))

    def finish(self, result: str) -> Outcome:
        self.out.result = result
        return self.out

    def fail(self, exc: ConnectorError) -> Outcome:
        self.out.result = "failed"
        self.out.failure = exc
        return self.out


def digest(values: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


# -- field rules ------------------------------------------------------------------------------


def pushable(rules: Rules, ours: Mapping[str, str], base: Mapping[str, Any]) -> dict[str, str]:
    """Our values the other side should hold: never a field they own, never a lower rung of the ladder."""
    out = {k: v for k, v in ours.items() if rules.owned.get(k) != "theirs"}
    ladder = rules.ladder
    if ladder is not None and ladder.field in out:
        was = base.get(ladder.field)
        if ladder.rank(out[ladder.field]) < ladder.rank(was) or (was in ladder.terminal and out[ladder.field] != was):
            del out[ladder.field]
    return out


@dataclass
class Merged:
    merged: dict[str, str]
    conflicts: list[Conflict]

    def changes_for_ours(self, ours: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in self.merged.items() if ours.get(k) != v}


def merge_fields(rules: Rules, base: Mapping[str, Any], ours: Mapping[str, str], theirs: Mapping[str, str], *,
                 ours_changed_at: datetime | None, theirs_changed_at: datetime | None, policy: Policy) -> Merged:
    """3-way merge of the fields both sides edit; owned fields from their owner; the ladder monotonic."""
    special = set(rules.owned) | ({rules.ladder.field} if rules.ladder else set())
    plain = merge({k: v for k, v in base.items() if k not in special},
                  {k: v for k, v in ours.items() if k not in special},
                  {k: v for k, v in theirs.items() if k not in special},
                  ours_changed_at=ours_changed_at, theirs_changed_at=theirs_changed_at, policy=policy)
    merged, conflicts = dict(plain.merged), list(plain.conflicts)
    for name, owner in rules.owned.items():
        source = theirs if owner == "theirs" else ours
        if name in source:
            merged[name] = source[name]
        elif name in ours or name in theirs:
            merged[name] = ours.get(name, theirs.get(name, ""))
    ladder = rules.ladder
    if ladder is not None and (ladder.field in ours or ladder.field in theirs):
        b, o, t = base.get(ladder.field), ours.get(ladder.field, ""), theirs.get(ladder.field, "")
        merged[ladder.field] = _ladder(ladder, b, o, t, conflicts)
    return Merged(merged, conflicts)


# -- outbound ---------------------------------------------------------------------------------


def outbound(s: Snapshot) -> Plan:
    """Make the system hold what our row holds (merging their pending changes first)."""
    w = _Work(s, "outbound", None)
    if s.ours is None:
        return w.finish("missing")
    try:
        if w.link is not None and s.pending:
            # Their change is waiting: merge it first, so a both-sides edit is resolved, not overwritten.
            yield from _inbound_locked(w, w.link.external_id)
            if w.out.defer_seconds is not None:
                return w.finish("deferred")
        result = yield from _push(w)
    except ConnectorError as exc:
        return w.fail(exc)
    return w.finish(result)


def _push(w: _Work) -> Generator[Call, Any, str]:
    row = w.row
    assert row is not None
    if row.deleted:
        return (yield from _push_delete(w))
    parent = w.s.rules.parent
    if parent is not None:
        pid = row.fields.get(parent.field, "")
        if pid and w.link is None and int(pid) in w.s.parents_gone and parent.orphans == "delete":
            return _orphaned(w, f"{parent.kind}:{pid}")
        if pid and int(pid) not in w.s.parent_links:
            # Not a failure and no attempt used: the parent goes first; its link wakes this record.
            w.out.follow.append(Follow("outbound", parent.kind, int(pid), reason="parent"))
            w.out.waiting_for = (parent.kind, int(pid))
            return "waiting"
    operation = "update"
    if w.link is None:
        try:
            yield from _create_or_adopt(w)
        except ParentMissing:
            pid = row.fields.get(parent.field, "") if parent is not None else ""
            if not pid or int(pid) in w.s.parents_gone or int(pid) not in w.s.parent_links:
                raise
            return _parent_missing(w)
        operation = "create"
    assert w.link is not None
    if w.link.base.get("deleted"):
        return _gone(w)
    ours = _outgoing(w, pushable(w.s.rules, row.fields, w.link.base))
    changes = {k: v for k, v in ours.items() if w.link.base.get(k) != v}
    if changes:
        key = w.key(row.id, f"v{row.version}", digest(changes))
        try:
            yield Update(w.link.external_id, changes, key)
        except NotFound:
            return _gone(w)
        except Refused as exc:
            return _refused(w, exc)
        w.patch_link(base={**w.link.base, **changes})
    elif operation == "update":
        if w.link.last_pushed_version < row.version:
            w.patch_link(last_pushed_version=row.version)
        w.close("outbound")
        return "noop"
    _succeeded(w, operation)
    return operation


def _parent_missing(w: _Work) -> str:
    """The system says our parent is gone while its link here says it is not (its delete has not reached
    us yet): not a failure. Read the parent now, and come back; once its delete lands, `_orphaned`."""
    parent = w.s.rules.parent
    assert parent is not None and w.row is not None
    pid = int(w.row.fields[parent.field])
    w.out.follow.append(Follow("inbound", parent.kind, external_id=w.s.parent_links[pid], reason="parent"))
    w.out.defer_seconds = 1.0
    return "waiting"


def _orphaned(w: _Work, parent: str) -> str:
    """Its parent was deleted over there (or here, never having got there) before this record got there: it
    never can. Ours goes (recorded); a create that may have landed meanwhile is found and deleted by the
    delete's own pass."""
    w.soft_delete()
    w.log("outbound", "create", "conflict", {"parent": parent, "resolution": "parent deleted before this record "
                                              "got to the external system; deleted here"})
    w.close("outbound")
    return "orphaned"


def _ladder(ladder: Ladder, b: str | None, o: str, t: str, conflicts: list[Conflict]) -> str:
    """Monotonic: the higher rung wins; a terminal value stays; two different terminals: theirs, recorded."""
    if o == t:
        return o
    if o in ladder.terminal and t in ladder.terminal:
        if o != b and t != b:
            conflicts.append(Conflict(ladder.field, b, o, t, "theirs"))
            return t
        return o if t == b else t
    if o in ladder.terminal:
        return o
    if t in ladder.terminal:
        return t
    return o if ladder.rank(o) >= ladder.rank(t) else t


def _outgoing(w: _Work, fields: dict[str, str]) -> dict[str, str]:
    """The parent field carries the parent's external id over there."""
    parent = w.s.rules.parent
    if parent is not None and fields.get(parent.field):
        fields[parent.field] = w.s.parent_links[int(fields[parent.field])]
    return fields


def _create_or_adopt(w: _Work) -> Generator[Call, Any, None]:
    row = w.row
    assert row is not None
    fields = _outgoing(w, pushable(w.s.rules, row.fields, {}))
    key = w.key(row.id, "create", f"v{row.version}")
    record: ExternalRecord | None = None
    again = w.s.trace.replayable(w.s.now)
    if again is not None and again.fields is not None:
        # A create we sent may or may not have landed: send the very same request; it replays or creates.
        key, fields = again.key, dict(again.fields)
    elif w.s.trace.exists:
        # An earlier create (too long ago to replay, or a link lost after a success) may exist: look first.
        # Not before every create: search is slow, eventually consistent and rate limited.
        record = yield Search(row.id)
    if record is None:
        if again is None:
            yield MarkStarted(key, fields)
        try:
            record = yield Create(row.id, fields, key)
        except ConnectorError as exc:
            if exc.code != "idempotency_error":
                raise
            record = yield Search(row.id)
            if record is None:
                raise ConnectorError("create key reused but no record found yet", transient=True) from exc
        assert record is not None
        if record.replayed:
            # A replay answers with the object as first created; it may have been deleted since.
            current = yield Fetch(record.external_id)
            record = current if current.deleted else record
    assert record is not None
    w.set_link(LinkState(row.id, record.external_id, dict(DELETED) if record.deleted else dict(record.fields)))


def _push_delete(w: _Work) -> Generator[Call, Any, str]:
    row = w.row
    assert row is not None
    if w.link is None:
        found: ExternalRecord | None = None
        again = w.s.trace.replayable(w.s.now)
        try:
            if again is not None and again.fields is not None:
                # A create we sent may have landed: re-send it to learn its id (search may lag behind).
                found = yield Create(row.id, dict(again.fields), again.key)
                if found is not None and found.deleted:
                    found = None
            elif w.s.trace.exists:
                found = yield Search(row.id)
        except NotFound:
            found = None  # the create never landed (its parent is gone over there)
        if found is None:
            w.close("outbound")
            return "noop"
        w.set_link(LinkState(row.id, found.external_id, dict(found.fields)))
    assert w.link is not None
    if w.link.base.get("deleted"):
        w.patch_link(last_pushed_version=max(w.link.last_pushed_version, row.version))
        return "noop"
    deletion = w.s.rules.deletion
    ladder = w.s.rules.ladder
    state = w.link.base.get(ladder.field) if ladder else None
    current: ExternalRecord | None = None
    if deletion.end_state and state not in deletion.deletable_in:
        # The system cannot delete it in this state: its end state instead (a finalized invoice is voided).
        current = yield from _undeletable(w, state, None)
    else:
        try:
            yield Delete(w.link.external_id, w.key(row.id, "delete"))
        except Refused as exc:
            # It moved on over there first (a draft finalized or paid meanwhile).
            if not deletion.end_state:
                raise
            current = yield from _undeletable(w, exc.current.fields.get(ladder.field) if ladder else None,
                                              exc.current)
    if current is not None and deletion.restore:
        return _restore(w, current)
    w.patch_link(base=dict(DELETED))
    _succeeded(w, "delete")
    return "delete"


def _undeletable(w: _Work, state: str | None, current: ExternalRecord | None
                 ) -> Generator[Call, Any, ExternalRecord | None]:
    """Our delete where the system cannot delete: the end state, from where it is reachable; from elsewhere
    (money moved) their state stands. Returns their record as it stands after (None: gone over there)."""
    assert w.row is not None and w.link is not None
    deletion = w.s.rules.deletion
    if deletion.end_from is None or state in deletion.end_from:
        end = dict(deletion.end_state)
        basis = current.fields if current is not None else w.link.base
        if any(basis.get(k) != v for k, v in end.items()):
            try:
                yield Update(w.link.external_id, end, w.key(w.row.id, "end", digest(end)))
                current = None  # moved: read it whole below, when it is wanted
            except Refused as exc:
                current = exc.current  # it moved on meanwhile (paid): theirs stands
            except NotFound:
                return None
    if deletion.restore and current is None:
        current = yield Fetch(w.link.external_id)
        if current.deleted:
            return None
    return current


def _restore(w: _Work, current: ExternalRecord) -> str:
    """Our delete lost: the system keeps the record in a state it cannot leave (money moved, or voided as
    the end state of our delete). Our row comes back with their values, recorded; both sides hold one."""
    assert w.row is not None and w.link is not None
    theirs = dict(current.fields)
    parent = w.s.rules.parent
    if parent is not None:
        theirs.pop(parent.field, None)  # the parent does not change; ours names it in our terms
    ladder = w.s.rules.ladder
    w.restore_row({k: v for k, v in theirs.items() if w.row.fields.get(k) != v})
    w.patch_link(base=dict(current.fields))
    w.log("outbound", "delete", "conflict", {
        "ours": "deleted", "theirs": current.fields.get(ladder.field) if ladder else None, "winner": "theirs",
        "resolution": "the external system kept it (it cannot delete it in this state): restored here"})
    assert w.row is not None
    w.patch_link(last_pushed_version=w.row.version)
    w.close("outbound")
    w.out.synced = True
    return "restored"


def _refused(w: _Work, exc: Refused) -> str:
    """The system kept its own values of some fields (its state froze them): theirs stand, recorded.
    Our row takes them; what else differs goes in the next pass (the row change queues one)."""
    assert w.row is not None and w.link is not None
    current = exc.current
    kept = {k: current.fields[k] for k in exc.fields if k in current.fields}
    for name, value in kept.items():
        if w.row.fields.get(name) != value:
            w.log("outbound", "update", "conflict", {"field": name, "ours": w.row.fields.get(name), "theirs": value,
                                                     "winner": "theirs", "resolution": "kept by the external system"})
    # What they own comes along (the answer is theirs too: a status they confirmed, their totals).
    kept.update({k: current.fields[k] for k, owner in w.s.rules.owned.items()
                 if owner == "theirs" and k in current.fields})
    changes = {k: v for k, v in kept.items() if w.row.fields.get(k) != v}
    if changes:
        w.update_row(changes)
    else:
        w.out.follow.append(Follow("outbound", w.s.kind, w.row.id, reason="refused"))
    w.patch_link(base=dict(current.fields))
    return "refused"


def _gone(w: _Work) -> str:
    """Deleted on their side while we edited: deletion wins (a recorded policy)."""
    w.patch_link(base=dict(DELETED))
    w.soft_delete()
    w.log("outbound", "update", "conflict", {"resolution": "deleted in external system; delete wins over edit"})
    _succeeded(w, "delete")
    return "gone"


def _succeeded(w: _Work, operation: str) -> None:
    assert w.row is not None and w.link is not None
    w.patch_link(last_pushed_version=w.row.version)
    w.close("outbound")
    w.log("outbound", operation)
    w.out.synced = True


# -- inbound ----------------------------------------------------------------------------------


def inbound(s: Snapshot, external_id: str, *, hint_only: bool = False) -> Plan:
    """Make our catalog agree with the external object, merging both sides' changes.

    `hint_only`: the message named events someone already handled; with none pending, nothing to do.
    """
    w = _Work(s, "inbound", external_id)
    if hint_only and not s.pending:
        return w.finish("handled")
    try:
        result = yield from _inbound_locked(w, external_id)
    except ConnectorError as exc:
        return w.fail(exc)
    return w.finish(result)


def events_match_base(events: tuple[Pending, ...], link: LinkState) -> bool:
    """Our own write coming back (or an old state we already hold): no fetch needed."""
    if not events:
        return False
    for event in events:
        seen = event.record
        if seen is None or seen.deleted != bool(link.base.get("deleted")):
            return False
        if not seen.deleted and seen.internal_id != link.internal_id:
            return False  # our id is missing over there: worth a look (and a write-back)
        if not seen.deleted and any(link.base.get(k) != v for k, v in seen.fields.items()):
            return False
    return True


def _inbound_locked(w: _Work, external_id: str) -> Generator[Call, Any, str]:
    events = tuple(sorted(w.s.pending, key=lambda e: (e.created is None, e.created or w.s.now, e.id)))
    if w.link is not None and events_match_base(events, w.link):
        w.out.processed.extend(e.id for e in events)
        w.close("inbound")
        return "echo"
    theirs: ExternalRecord = yield Fetch(external_id)
    theirs_at = max((e.created for e in events if e.created), default=None)
    if w.link is None:
        result = yield from _inbound_unlinked(w, theirs)
    else:
        result = yield from _inbound_linked(w, theirs, theirs_at)
    if w.out.defer_seconds is None:
        w.out.processed.extend(e.id for e in events)
        w.close("inbound")
        w.out.synced = True
    return result


def _incoming(w: _Work, theirs: ExternalRecord) -> Generator[Call, Any, dict[str, str] | None]:
    """Their fields in our terms: the parent field names our parent's id. None: the parent is unknown."""
    fields = dict(theirs.fields)
    parent = w.s.rules.parent
    if parent is not None and fields.get(parent.field):
        xid = fields[parent.field]
        ours = yield FindLink(parent.kind, xid)
        if ours is None and parent.tombstone and theirs.parent is not None and w.link is None:
            seen = yield Fetch(xid, kind=parent.kind)
            if seen.deleted:
                # Deleted over there before we ever saw it: it cannot be imported, so what the record
                # carries of it becomes a deleted row of ours, and the record hangs on that.
                ours = yield NewId(parent.kind)
                w.out.tombstone = Tombstone(parent.kind, ours, xid, dict(theirs.parent.fields))
        if ours is None:
            # Import the parent first; this record follows it.
            w.out.follow.append(Follow("inbound", parent.kind, external_id=fields[parent.field], reason="parent"))
            w.out.defer_seconds = 1.0
            return None
        fields[parent.field] = str(ours)
    return fields


def _inbound_linked(w: _Work, theirs: ExternalRecord, theirs_at: datetime | None) -> Generator[Call, Any, str]:
    link, row = w.link, w.row
    assert link is not None
    if theirs.deleted:
        w.patch_link(base=dict(DELETED))
        if row is not None and not row.deleted:
            w.soft_delete()
            assert w.row is not None
            w.patch_link(last_pushed_version=w.row.version)
            w.log("inbound", "delete")
            return "deleted"
        return "noop"
    if row is None or row.deleted:
        # Deleted on our side: deletion wins over their edit; outbound deletes it over there.
        if not link.base.get("deleted"):
            w.out.follow.append(Follow("outbound", w.s.kind, link.internal_id, reason="delete-wins"))
        return "ours-deleted"
    theirs_fields = yield from _incoming(w, theirs)
    if theirs_fields is None:
        return "deferred"
    base = {} if link.base.get("deleted") else dict(link.base)
    if theirs.internal_id != link.internal_id:
        # Level-triggered write-back: whenever we see our id missing (or wrong), put it there.
        yield SetInternalId(link.external_id, link.internal_id, w.key(link.internal_id, "adopt", link.external_id))
    result = merge_fields(w.s.rules, base, row.fields, theirs_fields, ours_changed_at=row.changed_at,
                          theirs_changed_at=theirs_at, policy=w.s.policy)
    for c in result.conflicts:
        w.log("inbound", "merge", "conflict", {"field": c.field, "ours": c.ours, "theirs": c.theirs, "base": c.base,
                                               "winner": c.winner, "policy": w.s.policy})
    changes = result.changes_for_ours(row.fields)
    w.patch_link(base=dict(theirs.fields))
    if changes:
        w.update_row(changes)
    if result.merged == theirs_fields:
        assert w.row is not None
        w.patch_link(last_pushed_version=w.row.version)  # nothing left to push
    elif not changes:
        w.out.follow.append(Follow("outbound", w.s.kind, row.id, reason="merge"))
    if changes or result.conflicts:
        w.log("inbound", "merge", detail={"fields": sorted(changes)})
    return "merged" if changes else "noop"


def _inbound_unlinked(w: _Work, theirs: ExternalRecord) -> Generator[Call, Any, str]:
    if theirs.deleted:
        return "noop"
    claim: Claim | None = None
    if theirs.internal_id is not None:
        claim = w.s.claims.get(theirs.internal_id)
        if claim is None:
            # It names a row we did not read (or lock): look again with that row locked.
            w.out.follow.append(Follow("inbound", w.s.kind, external_id=theirs.external_id, reason="claim",
                                       hint=theirs.internal_id))
            w.out.defer_seconds = 0.0
            return "deferred"
    fields = yield from _incoming(w, theirs)
    if fields is None:
        return "deferred"
    if claim is not None and claim.row is not None and not claim.linked:
        w.set_link(LinkState(claim.row.id, theirs.external_id, dict(theirs.fields)))
        w.out.follow.append(Follow("outbound", w.s.kind, claim.row.id, reason="adopted"))
        if any(owner == "theirs" for owner in w.s.rules.owned.values()):
            # What they own (a status they confirmed, their number) is not in our row yet, and the events
            # that said so are handled now: a linked pass reads it and merges it in.
            w.out.follow.append(Follow("inbound", w.s.kind, external_id=theirs.external_id, reason="adopted"))
        w.log("inbound", "adopt")
        return "adopted"
    # Unknown here (or it claims a row another object holds): import it as its own record.
    new_id: int = yield NewId()
    w.out.insert = (new_id, fields)
    w.out.follow.append(Follow("outbound", w.s.kind, new_id, reason="change"))
    w.set_link(LinkState(new_id, theirs.external_id, dict(theirs.fields), last_pushed_version=1))
    t = w.out.tombstone
    w.log("inbound", "create", detail={"parent": f"{t.kind}:{t.external_id}", "resolution": "parent deleted in "
                                        "external system before we saw it: imported on a deleted row"} if t else None)
    # If this write-back fails, the import still commits with a retry; the linked path writes it then.
    yield SetInternalId(theirs.external_id, new_id, w.key(new_id, "adopt", theirs.external_id))
    return "created"
