"""The planner: what to do for one record, as a pure state machine. This is where correctness lives.

A plan is a generator: it yields the calls it needs (`Fetch`, `Create`, ...) and receives their
results (or has the connector's error thrown in), and returns an `Outcome`: everything to write back.
It reads nothing and writes nothing itself (no clock, no database, no I/O), so the engine can run hundreds
of plans concurrently with no transaction held, write every outcome in one transaction, and the property
model can drive the very same code against a model of Stripe (tests/unit/test_sync_model.py).

The pieces, each readable alone:
- `calls`: what a plan may yield. Two pseudo-calls are the engine's, not the external system's:
  `MarkStarted` (commit a create trace before the create, so a crash leaves a trace that a create may
  exist) and `NewId` (reserve our id for an import, so the external object can carry it before our row
  is written); `FindLink` reads a link; `FindUid` finds the row with a uid (under a lock on the uid).
- `identity`: which record an object is (our id, and a uid that a restored database cannot issue again).
- `snapshot`: what a plan reads. `outcome`: what it returns.
- `fields`: a kind's field rules applied to values (what we push, how both sides merge).
- `work`: one record's work in memory, shared by both directions.
- `outbound` and `inbound`: the two directions.
The words they write down (`Direction`, `Result`, `Operation`, `Status`) are in `twoway.syncstate.words`.
"""

from twoway.sync.merge import MergeResult
from twoway.sync.plan.calls import (
    EXTERNAL_CALLS,
    Call,
    Create,
    Delete,
    Fetch,
    FindLink,
    FindUid,
    MarkStarted,
    NewId,
    Search,
    SetInternalId,
    Update,
)
from twoway.sync.plan.fields import digest, merge_fields, pushable
from twoway.sync.plan.inbound import events_match_base, inbound
from twoway.sync.plan.outbound import outbound
from twoway.sync.plan.outcome import Close, Follow, LogRow, Outcome, Plan, RowWrite, Tombstone
from twoway.sync.plan.snapshot import (
    DELETED,
    IDEMPOTENCY_WINDOW,
    Claim,
    LinkState,
    Ours,
    Pending,
    Snapshot,
    Started,
    Trace,
    seen_until,
)
from twoway.syncstate.words import Direction, Operation, Result, Status

__all__ = [
    "DELETED", "EXTERNAL_CALLS", "IDEMPOTENCY_WINDOW", "Call", "Claim", "Close", "Create", "Delete", "Direction",
    "Fetch", "FindLink", "FindUid", "Follow", "LinkState", "LogRow", "MarkStarted", "MergeResult", "NewId", "Operation",
    "Ours", "Outcome", "Pending", "Plan", "Result", "RowWrite", "Search", "SetInternalId", "Snapshot", "Started",
    "Status", "Tombstone", "Trace", "Update", "digest", "events_match_base", "inbound", "merge_fields",
    "outbound", "pushable", "seen_until",
]
