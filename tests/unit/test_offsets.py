"""The offset ledger (`sync/offsets.py`) with no broker: what each partition may commit as work finishes out of
order, messages that carry several records or fold into one record's pass, and partitions whose offsets start
over (epochs). The consumer's own folding (`Pipeline._accept`) is checked against the ledger at the end."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from twoway.kit.kafka import GroupMember, TopicPartition
from twoway.sync.consumer import Pipeline
from twoway.sync.engine import Item
from twoway.sync.offsets import OffsetLedger, Where

A, B = "a", "b"


def _ledger(*offsets: int, partition: str = A) -> tuple[OffsetLedger[str], list[Where[str]]]:
    ledger: OffsetLedger[str] = OffsetLedger()
    return ledger, [ledger.accept(partition, o, 1) for o in offsets]


def test_in_order_completion_commits_everything_seen() -> None:
    ledger, wheres = _ledger(0, 1, 2)
    assert ledger.committable({A}) == {A: 0}
    ledger.done(wheres)
    assert ledger.committable({A}) == {A: 3}


def test_out_of_order_completion_commits_only_the_contiguous_prefix() -> None:
    ledger, (w0, w1, w2, w3) = _ledger(0, 1, 2, 3)
    ledger.done([w1, w3])
    assert ledger.committable({A}) == {A: 0}  # 0 is not done: nothing past it
    ledger.done([w0])
    assert ledger.committable({A}) == {A: 2}  # the gap at 2 holds 3 back
    ledger.done([w2])
    assert ledger.committable({A}) == {A: 4}


def test_a_message_with_no_work_is_done_at_once_but_waits_behind_an_unfinished_one() -> None:
    ledger: OffsetLedger[str] = OffsetLedger()
    first = ledger.accept(A, 0, 1)
    ledger.accept(A, 1, 0)  # not ours to do
    assert ledger.committable({A}) == {A: 0}
    ledger.done([first])
    assert ledger.committable({A}) == {A: 2}


def test_a_message_for_two_records_is_done_when_both_are() -> None:
    ledger: OffsetLedger[str] = OffsetLedger()
    where = ledger.accept(A, 0, 2)
    ledger.done([where])
    assert ledger.committable({A}) == {A: 0}
    ledger.done([where])
    assert ledger.committable({A}) == {A: 1}


def test_partitions_are_independent() -> None:
    ledger: OffsetLedger[str] = OffsetLedger()
    a0 = ledger.accept(A, 0, 1)
    b0, b1 = ledger.accept(B, 0, 1), ledger.accept(B, 1, 1)
    ledger.done([b0, b1])
    assert ledger.committable({A, B}) == {A: 0, B: 2}
    ledger.done([a0])
    assert ledger.committable({A, B}) == {A: 1, B: 2}


def test_an_offset_once_committed_is_not_sent_again_and_a_failed_commit_is() -> None:
    ledger, wheres = _ledger(0, 1)
    ledger.done(wheres)
    offsets = ledger.committable({A})
    assert offsets == {A: 2}
    assert ledger.committable({A}) == {A: 2}  # not yet known to have succeeded: still due
    ledger.commit_succeeded(offsets)
    assert ledger.committable({A}) == {}
    ledger.done([ledger.accept(A, 2, 1)])
    assert ledger.committable({A}) == {A: 3}


def test_only_assigned_partitions_commit_and_a_revoked_ones_late_completions_change_nothing() -> None:
    ledger: OffsetLedger[str] = OffsetLedger()
    a0, b0 = ledger.accept(A, 0, 1), ledger.accept(B, 0, 1)
    ledger.done([a0])
    assert ledger.committable({A}) == {A: 1}  # B was revoked
    ledger.keep_only({A})
    ledger.done([b0])  # finished after B went to another member
    assert ledger.committable({A, B}) == {A: 1}


def test_a_restarted_partition_ignores_work_accepted_before_the_restart() -> None:
    """A partition assigned anew (or whose log was wiped) starts a new epoch: a late completion of offset 0
    from before must not release the new offset 0, whose record is still in flight."""
    ledger, (old0, old1) = _ledger(0, 1)
    ledger.restart([A])
    new0 = ledger.accept(A, 0, 1)
    assert new0.epoch == old0.epoch + 1
    ledger.done([old0, old1])
    assert ledger.committable({A}) == {A: 0}
    ledger.done([new0])
    assert ledger.committable({A}) == {A: 1}


def test_offsets_seen_before_a_restart_are_never_committed_after_it() -> None:
    """Bug 6: the broker lost its log (500 messages seen, 10 now there); committing 500 made the next owner
    wait at 500 for good. After a restart only what is seen anew counts."""
    ledger, wheres = _ledger(*range(500))
    ledger.done(wheres)
    ledger.commit_succeeded(ledger.committable({A}))
    ledger.restart([A])
    assert ledger.committable({A}) == {}
    ledger.done([ledger.accept(A, o, 1) for o in range(10)])
    assert ledger.committable({A}) == {A: 10}


def test_a_restart_forgets_what_was_committed() -> None:
    """The new epoch's first offset is committed even if it equals one committed in the old epoch."""
    ledger, wheres = _ledger(0, 1)
    ledger.done(wheres)
    ledger.commit_succeeded(ledger.committable({A}))
    ledger.restart([A])
    ledger.done([ledger.accept(A, 0, 1), ledger.accept(A, 1, 1)])
    assert ledger.committable({A}) == {A: 2}


TP = TopicPartition("sync.outbound", 0)


def _item(record: int) -> Item:
    return Item("outbound", "customer", "stripe", internal_id=record)


async def test_the_consumer_folds_messages_for_one_record_and_holds_all_their_offsets() -> None:
    """Three messages, two about record 1 (folded into one pass) and one about record 2: record 1's pass
    done releases both its offsets, and the commit stops at record 2's message, still unfinished."""
    member: Any = SimpleNamespace(assignment=lambda: {TP})
    records = {0: 1, 1: 2, 2: 1}
    pipe = Pipeline(GroupMember(member), "g", engine=None,  # type: ignore[arg-type]
                    to_items=lambda msg: [_item(records[msg.offset])], stop=asyncio.Event())
    pipe._accept({TP: [SimpleNamespace(offset=o) for o in range(3)]})  # type: ignore[dict-item]
    assert len(pipe.waiting) == 2
    first = pipe.waiting[_item(1).key]
    assert [w.offset for w in first.offsets] == [0, 2]
    pipe._done(first)
    assert pipe.offsets.committable({TP}) == {TP: 1}
    pipe._done(pipe.waiting[_item(2).key])
    assert pipe.offsets.committable({TP}) == {TP: 3}
