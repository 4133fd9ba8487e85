"""Inbound: make our catalog agree with the external object, merging both sides' changes.

Also run by outbound first when their change is waiting, so a both-sides edit is merged, not overwritten.

An object we have no link for is claimed by the row that carries its uid (a record a restore lost, that came
back from another system first), else by the row its id names, unless that row is another record (its
uid differs: the id was issued again after a restore); else it is imported, keeping its uid.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

from twoway.connectors.base import ConnectorError, ExternalRecord
from twoway.sync.plan.calls import Call, Fetch, FindLink, FindUid, NewId, SetInternalId
from twoway.sync.plan.fields import merge_fields
from twoway.sync.plan.identity import import_uid, may_be, names
from twoway.sync.plan.outcome import Follow, Plan, Tombstone
from twoway.sync.plan.snapshot import DELETED, Claim, LinkState, Pending, Snapshot
from twoway.sync.plan.work import Work
from twoway.syncstate.words import Direction, Operation, Result, Status


def inbound(s: Snapshot, external_id: str, *, hint_only: bool = False) -> Plan:
    """Make our catalog agree with the external object, merging both sides' changes.

    `hint_only`: the message named events someone already handled; with none pending, nothing to do.
    """
    w = Work(s, Direction.INBOUND, external_id)
    if hint_only and not s.pending:
        return w.finish(Result.HANDLED)
    try:
        result = yield from take_in(w, external_id, hint_only=hint_only)
    except ConnectorError as exc:
        return w.fail(exc)
    return w.finish(result)


def events_match_base(events: tuple[Pending, ...], link: LinkState, uid: str | None = None) -> bool:
    """Our own write coming back (or an old state we already hold): no fetch needed."""
    if not events:
        return False
    for event in events:
        seen = event.record
        if seen is None or seen.deleted != bool(link.base.get("deleted")):
            return False
        if not seen.deleted and not names(seen, link.internal_id, uid):
            return False  # our id is missing over there: worth a look (and a write-back)
        if not seen.deleted and any(link.base.get(k) != v for k, v in seen.fields.items()):
            return False
    return True


def newest_state(s: Snapshot, events: tuple[Pending, ...]) -> ExternalRecord | None:
    """The object the last of `events` (in order) carried, when it is provably the newest state we can know;
    None: read it.

    Their `created` has one-second resolution, so only a strictly later second orders two states: the event
    must be later than every other pending one and than all we hold or have seen of the object (`seen`).
    Its object must be whole (the connector's snapshot: None when it cannot map it all).
    """
    if not s.event_objects or not events:
        return None
    last = events[-1]
    if last.record is None or last.created is None:
        return None
    if any(e.created is None or e.created >= last.created for e in events[:-1]):
        return None  # another event of the same second (or of no known time): which is newer is unknown
    if s.seen is not None and last.created <= s.seen:
        return None  # a state as new or newer is known (reordered or late delivery)
    return last.record


def take_in(w: Work, external_id: str, *, hint_only: bool = False) -> Generator[Call, Any, Result]:
    """Their pending events handled: the object read (unless they only echo what we hold) and taken in.

    `hint_only` (the message came from their events): the newest event's own object may stand for the read
    (`newest_state`); any other message (reconcile, retry, sweeper, our outbound) reads.
    """
    events = tuple(sorted(w.s.pending, key=lambda e: (e.created is None, e.created or w.s.now, e.id)))
    if w.link is not None and events_match_base(events, w.link, w.row.uid if w.row else None):
        w.out.processed.extend(e.id for e in events)
        w.close(Direction.INBOUND)
        return Result.ECHO
    newest = newest_state(w.s, events) if hint_only else None
    theirs: ExternalRecord = newest if newest is not None else (yield Fetch(external_id))
    theirs_at = max((e.created for e in events if e.created), default=None)
    if w.link is None:
        result = yield from _unlinked(w, theirs)
    else:
        result = yield from _linked(w, theirs, theirs_at)
    if w.out.defer_seconds is None:
        w.out.processed.extend(e.id for e in events)
        w.close(Direction.INBOUND)
        w.out.synced = True
    return result


def _incoming(w: Work, theirs: ExternalRecord) -> Generator[Call, Any, dict[str, str] | None]:
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
            w.out.follow.append(Follow(Direction.INBOUND, parent.kind, external_id=xid, reason="parent"))
            w.out.defer_seconds = 1.0
            return None
        fields[parent.field] = str(ours)
    return fields


def _linked(w: Work, theirs: ExternalRecord, theirs_at: datetime | None) -> Generator[Call, Any, Result]:
    link, row = w.link, w.row
    assert link is not None
    if theirs.deleted:
        w.patch_link(base=dict(DELETED))
        if row is not None and not row.deleted:
            w.soft_delete()
            assert w.row is not None
            w.patch_link(last_pushed_version=w.row.version)
            w.log(Direction.INBOUND, Operation.DELETE)
            return Result.DELETED
        return Result.NOOP
    if row is None or row.deleted:
        # Deleted on our side: deletion wins over their edit; outbound deletes it over there.
        if not link.base.get("deleted"):
            w.out.follow.append(Follow(Direction.OUTBOUND, w.s.kind, link.internal_id, reason="delete-wins"))
        return Result.OURS_DELETED
    theirs_fields = yield from _incoming(w, theirs)
    if theirs_fields is None:
        return Result.DEFERRED
    base = {} if link.base.get("deleted") else dict(link.base)
    if not names(theirs, link.internal_id, row.uid):
        # Level-triggered write-back: whenever we see our id missing (or wrong), put it there.
        yield SetInternalId(link.external_id, link.internal_id, w.key(link.internal_id, "adopt", link.external_id),
                            row.uid)
    result = merge_fields(w.s.rules, base, row.fields, theirs_fields, ours_changed_at=row.changed_at,
                          theirs_changed_at=theirs_at, policy=w.s.policy)
    for c in result.conflicts:
        w.log(Direction.INBOUND, Operation.MERGE, Status.CONFLICT, {
            "field": c.field, "ours": c.ours, "theirs": c.theirs, "base": c.base, "winner": c.winner,
            "policy": w.s.policy})
    changes = result.changes_for_ours(row.fields)
    w.patch_link(base=dict(theirs.fields))
    if changes:
        w.update_row(changes)
    if result.merged == theirs_fields:
        assert w.row is not None
        w.patch_link(last_pushed_version=w.row.version)  # nothing left to push
    elif not changes:
        w.out.follow.append(Follow(Direction.OUTBOUND, w.s.kind, row.id, reason="merge"))
    if changes or result.conflicts:
        w.log(Direction.INBOUND, Operation.MERGE, detail={"fields": sorted(changes)})
    return Result.MERGED if changes else Result.NOOP


def _unlinked(w: Work, theirs: ExternalRecord) -> Generator[Call, Any, Result]:
    if theirs.deleted:
        return Result.NOOP
    claim: Claim | None = None
    # The row with its uid, if we have one (the lock on the uid is held from here to the write-back).
    owner: int | None = (yield FindUid(theirs.uid)) if theirs.uid is not None and w.s.uids else None
    claimed = owner if owner is not None else theirs.internal_id
    if claimed is not None:
        claim = w.s.claims.get(claimed)
        if claim is None:
            # It names a row we did not read (or lock): look again with that row locked.
            w.out.follow.append(Follow(Direction.INBOUND, w.s.kind, external_id=theirs.external_id, reason="claim",
                                       hint=claimed))
            w.out.defer_seconds = 0.0
            return Result.DEFERRED
    fields = yield from _incoming(w, theirs)
    if fields is None:
        return Result.DEFERRED
    if claim is not None and claim.row is not None and not may_be(theirs, claim.row):
        # Our id, another record's uid: the id was issued again after a restore. That row is not this object's.
        w.log(Direction.INBOUND, Operation.ADOPT, Status.CONFLICT, {
            "claimed": claim.row.id, "uid": claim.row.uid, "found_uid": theirs.uid,
            "resolution": "the object carries our id but another record's uid (ids issued again after a "
                          "database restore): not adopted; imported as its own record"})
        claim = None
    if claim is not None and claim.row is not None and not claim.linked:
        w.set_link(LinkState(claim.row.id, theirs.external_id, dict(theirs.fields)))
        w.out.follow.append(Follow(Direction.OUTBOUND, w.s.kind, claim.row.id, reason="adopted"))
        if any(owner == "theirs" for owner in w.s.rules.owned.values()):
            # What they own (a status they confirmed, their number) is not in our row yet, and the events
            # that said so are handled now: a linked pass reads it and merges it in.
            w.out.follow.append(Follow(Direction.INBOUND, w.s.kind, external_id=theirs.external_id, reason="adopted"))
        w.log(Direction.INBOUND, Operation.ADOPT)
        if not names(theirs, claim.row.id, claim.row.uid):
            # Claimed by its uid under another id (our catalog lost it and took it back from another system
            # first): the object must name the row that holds it now, or it names a record it is not.
            yield SetInternalId(theirs.external_id, claim.row.id, w.key(claim.row.id, "adopt", theirs.external_id),
                                claim.row.uid)
        return Result.ADOPTED
    # Unknown here (or it claims a row another object holds): import it as its own record. It keeps the uid
    # it carries (a record of ours a restore lost) unless a row here has it (two objects carry one uid).
    restored = w.s.uids and theirs.uid is not None and owner is None
    uid = (theirs.uid if restored else import_uid(w.s.system, w.s.kind, theirs.external_id)) if w.s.uids else None
    new_id: int = yield NewId()
    w.out.insert, w.out.insert_uid = (new_id, fields), uid
    w.out.follow.append(Follow(Direction.OUTBOUND, w.s.kind, new_id, reason="change"))
    w.set_link(LinkState(new_id, theirs.external_id, dict(theirs.fields), last_pushed_version=1))
    t = w.out.tombstone
    detail: dict[str, Any] = {"parent": f"{t.kind}:{t.external_id}", "resolution": "parent deleted in external "
                              "system before we saw it: imported on a deleted row"} if t else {}
    if restored:
        # Made by us before and unknown here: our catalog lost it (a restore). The other systems may still
        # hold it: their creates look for it by uid first (`Trace.restored`).
        detail.update(restored=True, uid=uid)
    w.log(Direction.INBOUND, Operation.CREATE, detail=detail or None)
    # If this write-back fails, the import still commits with a retry; the linked path writes it then.
    yield SetInternalId(theirs.external_id, new_id, w.key(new_id, "adopt", theirs.external_id), uid)
    return Result.CREATED
