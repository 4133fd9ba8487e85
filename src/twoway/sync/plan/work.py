"""One record's work in memory while its plan runs: our row and the link as the plan has changed them, and
the `Outcome` it builds. Both directions write through here, so a pass bumps our row's version once."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twoway.connectors.base import ConnectorError
from twoway.sync.plan.outcome import Close, Follow, LogRow, Outcome, RowWrite
from twoway.sync.plan.snapshot import LinkState, Ours, Snapshot
from twoway.syncstate.words import Direction, Operation, Result, Status


class Work:
    def __init__(self, s: Snapshot, direction: Direction, external_id: str | None) -> None:
        self.s = s
        self.row = s.ours
        self.link = s.link
        # The result stands for nothing done until `finish` or `fail` says what was.
        self.out = Outcome(result=Result.NOOP, direction=direction,
                           internal_id=s.ours.id if s.ours else (s.link.internal_id if s.link else None),
                           external_id=external_id or (s.link.external_id if s.link else None))

    # our row: one write per pass, bumping the version once
    def _bumped(self) -> Ours:
        assert self.row is not None and self.s.ours is not None
        if self.out.row is None:
            self.out.row = RowWrite(expected_version=self.s.ours.version)
            self.out.follow.append(Follow(Direction.OUTBOUND, self.s.kind, self.row.id, reason="change"))
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

    def log(self, direction: Direction, operation: Operation, status: Status = Status.OK,
            detail: dict[str, Any] | None = None) -> None:
        iid = self.link.internal_id if self.link else (self.row.id if self.row else None)
        xid = self.link.external_id if self.link else self.out.external_id
        self.out.logs.append(LogRow(direction, operation, status, iid, xid, detail))

    def close(self, direction: Direction, *, keep_started: bool = False) -> None:
        if direction == Direction.OUTBOUND:
            iid = self.row.id if self.row else (self.link.internal_id if self.link else None)
            self.out.close.append(Close(direction, iid, None, keep_started))
        else:
            xid = self.link.external_id if self.link else self.out.external_id
            self.out.close.append(Close(direction, None, xid, keep_started))

    def key(self, *parts: object) -> str:
        return "twoway:" + ":".join(str(p) for p in (self.s.system, self.s.kind, *parts))

    def row_key(self, *parts: object) -> str:
        """A key of a write for our row: its id, and its uid, so that a record given the same id after a
        restore never replays the key of another record's write."""
        assert self.row is not None
        ident = f"{self.row.id}.{self.row.uid}" if self.row.uid else self.row.id
        return self.key(ident, *parts)

    def finish(self, result: Result) -> Outcome:
        self.out.result = result
        return self.out

    def fail(self, exc: ConnectorError) -> Outcome:
        self.out.result = Result.FAILED
        self.out.failure = exc
        return self.out
