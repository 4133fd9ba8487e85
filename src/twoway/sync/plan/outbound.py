"""Outbound: make the external system hold what our row holds (merging their pending changes first).

Creates are replayed with the same key while the system remembers it (`Snapshot.idempotency_window`), and
searched for first only when an earlier create may have landed (or the record came back from another system
after a restore). A found object that carries another record's uid is never adopted (`_search`). A delete
the system cannot do in the record's state becomes the kind's end state, or gives way to theirs
(`Rules.deletion`).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twoway.connectors.base import ConnectorError, ExternalRecord, NotFound, ParentMissing, Refused, Taken
from twoway.sync.plan.calls import Call, Create, Delete, Fetch, MarkStarted, Search, Update
from twoway.sync.plan.fields import digest, pushable
from twoway.sync.plan.identity import may_be
from twoway.sync.plan.inbound import take_in
from twoway.sync.plan.outcome import Follow, Plan
from twoway.sync.plan.snapshot import DELETED, LinkState, Snapshot
from twoway.sync.plan.work import Work
from twoway.syncstate.words import Direction, Operation, Result, Status


def outbound(s: Snapshot) -> Plan:
    """Make the system hold what our row holds (merging their pending changes first)."""
    w = Work(s, Direction.OUTBOUND, None)
    if s.ours is None:
        return w.finish(Result.MISSING)
    try:
        if w.link is not None and s.pending:
            # Their change is waiting: merge it first, so a both-sides edit is resolved, not overwritten.
            yield from take_in(w, w.link.external_id)
            if w.out.defer_seconds is not None:
                return w.finish(Result.DEFERRED)
        result = yield from _push(w)
    except ConnectorError as exc:
        return w.fail(exc)
    return w.finish(result)


def _push(w: Work) -> Generator[Call, Any, Result]:
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
            w.out.follow.append(Follow(Direction.OUTBOUND, parent.kind, int(pid), reason="parent"))
            w.out.waiting_for = (parent.kind, int(pid))
            return Result.WAITING
    created = w.link is None
    if created:
        try:
            yield from _create_or_adopt(w)
        except ParentMissing:
            pid = row.fields.get(parent.field, "") if parent is not None else ""
            if not pid or int(pid) in w.s.parents_gone or int(pid) not in w.s.parent_links:
                raise
            return _parent_missing(w)
        except Taken as exc:
            return _taken(w, exc.current)
    assert w.link is not None
    if w.link.base.get("deleted"):
        return _gone(w)
    ours = _outgoing(w, pushable(w.s.rules, row.fields, w.link.base))
    changes = {k: v for k, v in ours.items() if w.link.base.get(k) != v}
    if changes:
        key = w.row_key(f"v{row.version}", digest(changes))
        try:
            yield Update(w.link.external_id, changes, key)
        except NotFound:
            return _gone(w)
        except Refused as exc:
            return _refused(w, exc)
        w.patch_link(base={**w.link.base, **changes})
    elif not created:
        if w.link.last_pushed_version < row.version:
            w.patch_link(last_pushed_version=row.version)
        w.close(Direction.OUTBOUND)
        return Result.NOOP
    _succeeded(w, Operation.CREATE if created else Operation.UPDATE)
    return Result.CREATE if created else Result.UPDATE


def _parent_missing(w: Work) -> Result:
    """The system says our parent is gone while its link here says it is not (its delete has not reached
    us yet): not a failure. Read the parent now, and come back; once its delete lands, `_orphaned`."""
    parent = w.s.rules.parent
    assert parent is not None and w.row is not None
    pid = int(w.row.fields[parent.field])
    w.out.follow.append(Follow(Direction.INBOUND, parent.kind, external_id=w.s.parent_links[pid], reason="parent"))
    w.out.defer_seconds = 1.0
    return Result.WAITING


def _taken(w: Work, current: ExternalRecord) -> Result:
    """Our id is held over there by another record's object (a restore issued the id again): nothing was
    written to it. Recorded; that object is read and imported as its own record, which moves its id off
    ours; then this create goes again (not a failure: no attempt used)."""
    assert w.row is not None
    w.log(Direction.OUTBOUND, Operation.CREATE, Status.CONFLICT, {
        "found": current.external_id, "found_uid": current.uid, "uid": w.row.uid,
        "resolution": "the object holds our id with another record's uid (ids issued again after a database "
                      "restore): not written; imported as its own record, then this record is created"})
    w.out.follow.append(Follow(Direction.INBOUND, w.s.kind, external_id=current.external_id, reason="taken"))
    w.out.defer_seconds = 1.0
    return Result.WAITING


def _orphaned(w: Work, parent: str) -> Result:
    """Its parent was deleted over there (or here, never having got there) before this record got there: it
    never can. Ours goes (recorded); a create that may have landed meanwhile is found and deleted by the
    delete's own pass."""
    w.soft_delete()
    w.log(Direction.OUTBOUND, Operation.CREATE, Status.CONFLICT, {
        "parent": parent, "resolution": "parent deleted before this record got to the external system; deleted here"})
    w.close(Direction.OUTBOUND)
    return Result.ORPHANED


def _outgoing(w: Work, fields: dict[str, str]) -> dict[str, str]:
    """The parent field carries the parent's external id over there."""
    parent = w.s.rules.parent
    if parent is not None and fields.get(parent.field):
        fields[parent.field] = w.s.parent_links[int(fields[parent.field])]
    return fields


def _create_or_adopt(w: Work) -> Generator[Call, Any, None]:
    row = w.row
    assert row is not None
    fields = _outgoing(w, pushable(w.s.rules, row.fields, {}))
    key = w.row_key("create", f"v{row.version}")
    record: ExternalRecord | None = None
    again = w.s.trace.replayable(w.s.now, w.s.idempotency_window)
    if again is not None and again.fields is not None:
        # A create we sent may or may not have landed: send the very same request; it replays or creates.
        key, fields = again.key, dict(again.fields)
    elif w.s.trace.exists:
        # An earlier create (too long ago to replay, or a link lost after a success) may exist: look first.
        # Not before every create: search is slow, eventually consistent and rate limited.
        record = yield from _search(w)
    if record is None:
        if again is None:
            yield MarkStarted(key, fields)
        try:
            record = yield Create(row.id, fields, key, row.uid)
        except ConnectorError as exc:
            if exc.code != "idempotency_error":
                raise
            record = yield from _search(w)
            if record is None:
                raise ConnectorError("create key reused but no record found yet", transient=True) from exc
        assert record is not None
        if record.replayed:
            # A replay answers with the object as first created; it may have been deleted since.
            current = yield Fetch(record.external_id)
            record = current if current.deleted else record
    assert record is not None
    w.set_link(LinkState(row.id, record.external_id, dict(DELETED) if record.deleted else dict(record.fields)))


def _search(w: Work) -> Generator[Call, Any, ExternalRecord | None]:
    """The object an earlier create of this record made, if the system finds it. One that carries our id
    but another record's uid is a record a restore lost (its id was issued again): never adopted,
    overwritten or deleted; recorded as a conflict for a person, and this record goes on without it."""
    row = w.row
    assert row is not None
    found: ExternalRecord | None = yield Search(row.id, row.uid)
    if found is None or may_be(found, row):
        return found
    w.log(Direction.OUTBOUND, Operation.ADOPT, Status.CONFLICT, {
        "found": found.external_id, "found_uid": found.uid, "uid": row.uid,
        "resolution": "the object carries our id but another record's uid (ids issued again after a database "
                      "restore): not adopted"})
    return None


def _push_delete(w: Work) -> Generator[Call, Any, Result]:
    row = w.row
    assert row is not None
    if w.link is None:
        found: ExternalRecord | None = None
        again = w.s.trace.replayable(w.s.now, w.s.idempotency_window)
        try:
            if again is not None and again.fields is not None:
                # A create we sent may have landed: re-send it to learn its id (search may lag behind).
                found = yield Create(row.id, dict(again.fields), again.key, row.uid)
                if found is not None and found.deleted:
                    found = None
            elif w.s.trace.exists:
                found = yield from _search(w)
        except NotFound:
            found = None  # the create never landed (its parent is gone over there)
        if found is None:
            w.close(Direction.OUTBOUND)
            return Result.NOOP
        w.set_link(LinkState(row.id, found.external_id, dict(found.fields)))
    assert w.link is not None
    if w.link.base.get("deleted"):
        w.patch_link(last_pushed_version=max(w.link.last_pushed_version, row.version))
        return Result.NOOP
    deletion = w.s.rules.deletion
    ladder = w.s.rules.ladder
    state = w.link.base.get(ladder.field) if ladder else None
    current: ExternalRecord | None = None
    if deletion.end_state and state not in deletion.deletable_in:
        # The system cannot delete it in this state: its end state instead (a finalized invoice is voided).
        current = yield from _undeletable(w, state, None)
    else:
        try:
            yield Delete(w.link.external_id, w.row_key("delete"))
        except Refused as exc:
            # It moved on over there first (a draft finalized or paid meanwhile).
            if not deletion.end_state:
                raise
            current = yield from _undeletable(w, exc.current.fields.get(ladder.field) if ladder else None,
                                              exc.current)
    if current is not None and deletion.restore:
        return _restore(w, current)
    w.patch_link(base=dict(DELETED))
    _succeeded(w, Operation.DELETE)
    return Result.DELETE


def _undeletable(w: Work, state: str | None, current: ExternalRecord | None
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
                yield Update(w.link.external_id, end, w.row_key("end", digest(end)))
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


def _restore(w: Work, current: ExternalRecord) -> Result:
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
    w.log(Direction.OUTBOUND, Operation.DELETE, Status.CONFLICT, {
        "ours": "deleted", "theirs": current.fields.get(ladder.field) if ladder else None, "winner": "theirs",
        "resolution": "the external system kept it (it cannot delete it in this state): restored here"})
    assert w.row is not None
    w.patch_link(last_pushed_version=w.row.version)
    w.close(Direction.OUTBOUND)
    w.out.synced = True
    return Result.RESTORED


def _refused(w: Work, exc: Refused) -> Result:
    """The system kept its own values of some fields (its state froze them): theirs stand, recorded.
    Our row takes them; what else differs goes in the next pass (the row change queues one)."""
    assert w.row is not None and w.link is not None
    current = exc.current
    kept = {k: current.fields[k] for k in exc.fields if k in current.fields}
    for name, value in kept.items():
        if w.row.fields.get(name) != value:
            w.log(Direction.OUTBOUND, Operation.UPDATE, Status.CONFLICT, {
                "field": name, "ours": w.row.fields.get(name), "theirs": value, "winner": "theirs",
                "resolution": "kept by the external system"})
    # What they own comes along (the answer is theirs too: a status they confirmed, their totals).
    kept.update({k: current.fields[k] for k, owner in w.s.rules.owned.items()
                 if owner == "theirs" and k in current.fields})
    changes = {k: v for k, v in kept.items() if w.row.fields.get(k) != v}
    if changes:
        w.update_row(changes)
    else:
        w.out.follow.append(Follow(Direction.OUTBOUND, w.s.kind, w.row.id, reason="refused"))
    w.patch_link(base=dict(current.fields))
    return Result.REFUSED


def _gone(w: Work) -> Result:
    """Deleted on their side while we edited: deletion wins (a recorded policy)."""
    w.patch_link(base=dict(DELETED))
    w.soft_delete()
    w.log(Direction.OUTBOUND, Operation.UPDATE, Status.CONFLICT,
          {"resolution": "deleted in external system; delete wins over edit"})
    _succeeded(w, Operation.DELETE)
    return Result.GONE


def _succeeded(w: Work, operation: Operation) -> None:
    assert w.row is not None and w.link is not None
    w.patch_link(last_pushed_version=w.row.version)
    w.close(Direction.OUTBOUND)
    w.log(Direction.OUTBOUND, operation)
    w.out.synced = True
