"""The words sync writes down: directions, the planner's results, the sync log's operations and statuses.

A leaf (imports nothing of ours), so the planner, the engine, the SQL and ops can all name them. Each is a
`StrEnum` whose values are the strings stored in `sync_events` and the outbox, so SQL and stored rows read
the same as before; a member compares equal to its string.
"""

from __future__ import annotations

from enum import StrEnum


class Direction(StrEnum):
    OUTBOUND = "outbound"  # make the external system hold our row
    INBOUND = "inbound"  # take the external object into our catalog


class Result(StrEnum):
    """What one plan did (`Outcome.result`; the engine's `one` returns it, for logs and tests)."""

    # outbound
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    GONE = "gone"  # deleted over there while we edited: deleted here too
    REFUSED = "refused"  # the system kept its own values of some fields
    RESTORED = "restored"  # our delete lost: our row is back with their values
    ORPHANED = "orphaned"  # its parent was deleted before it got there: deleted here
    WAITING = "waiting"  # for its parent to get there first
    MISSING = "missing"  # no row of ours
    # inbound
    CREATED = "created"  # imported
    ADOPTED = "adopted"  # linked to the row of ours it names
    MERGED = "merged"
    DELETED = "deleted"
    OURS_DELETED = "ours-deleted"  # deleted here: deletion wins over their edit
    ECHO = "echo"  # our own write coming back
    HANDLED = "handled"  # a hint whose events someone already handled
    # either
    NOOP = "noop"
    DEFERRED = "deferred"  # not a failure: again soon (a parent to import, a claim to read under its lock)
    FAILED = "failed"  # the connector's error is in `Outcome.failure`
    UNSUPPORTED = "unsupported"  # the engine's: the system does not sync this kind


class Operation(StrEnum):
    """`sync_events.operation`."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    MERGE = "merge"
    ADOPT = "adopt"
    SYNC = "sync"  # the engine's verdict on a failed pass
    DEFER = "defer"
    WAIT_PARENT = "wait_parent"
    SWEEP = "sweep"


class Status(StrEnum):
    """`sync_events.status`."""

    OK = "ok"
    CONFLICT = "conflict"  # resolved by a recorded rule: both sides agree after
    STARTED = "started"  # a create trace, committed before the create is sent
    RETRY = "retry"
    REQUEUED = "requeued"  # a due retry put back on the queue
    DEAD = "dead"  # out of attempts: a person decides (replay)
    SUPERSEDED = "superseded"  # owed work a later pass did
    SWEPT = "swept"  # queued again by the sweeper
    MAPPED = "mapped"  # an API delete carried out as another command (a finalized invoice voided)
