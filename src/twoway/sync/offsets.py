"""Which offset each partition may commit: the consumer's bookkeeping, with no Kafka in it.

Messages finish out of order (many records in flight), but a committed offset says "everything below is
done". So a partition commits only up to its oldest unfinished message, or, when none is unfinished, up to
the end of what it has seen. A message that yields several items (one per record) is done when all are.

Epochs: a partition's offsets start over when it is assigned anew (a rebalance) or its log was wiped (a
broker that kept topics in memory restarted). Work accepted before that counts for nothing afterwards:
its late completions must not release the new epoch's offsets, and the old "seen" must not be committed
to the new log (bug 6: offset 500 committed to a topic that held 10 messages; the next owner waited at
500 for good).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable
from typing import Generic, NamedTuple, TypeVar

P = TypeVar("P", bound=Hashable)


class Where(NamedTuple, Generic[P]):
    """One message's place: its partition, its offset, and the partition's epoch when it came."""

    partition: P
    offset: int
    epoch: int


class OffsetLedger(Generic[P]):
    def __init__(self) -> None:
        self.outstanding: dict[P, dict[int, int]] = {}  # offset -> items of that message not yet done
        self.seen: dict[P, int] = {}  # next offset after the last message seen
        self.committed: dict[P, int] = {}  # what we last committed (so an unchanged offset is not sent again)
        self.epochs: dict[P, int] = {}

    def accept(self, partition: P, offset: int, items: int) -> Where[P]:
        """A message came with `items` pieces of work; it holds its partition's commit until each is done.
        A message with none is done at once (it only moves what was seen)."""
        self.seen[partition] = max(self.seen.get(partition, 0), offset + 1)
        if items:
            self.outstanding.setdefault(partition, {})[offset] = items
        return Where(partition, offset, self.epochs.get(partition, 0))

    def done(self, wheres: Iterable[Where[P]]) -> None:
        """One item of each of these messages is done. Messages from an older epoch are ignored."""
        for partition, offset, epoch in wheres:
            if epoch != self.epochs.get(partition, 0):
                continue
            pending = self.outstanding.get(partition, {})
            if offset in pending:
                pending[offset] -= 1
                if pending[offset] <= 0:
                    del pending[offset]

    def committable(self, assigned: Collection[P]) -> dict[P, int]:
        """The offset to commit for each assigned partition whose commit moved since the last one."""
        offsets = {}
        for partition, nxt in self.seen.items():
            if partition not in assigned:
                continue
            pending = self.outstanding.get(partition)
            upto = min(pending) if pending else nxt
            if self.committed.get(partition) != upto:
                offsets[partition] = upto
        return offsets

    def commit_succeeded(self, offsets: dict[P, int]) -> None:
        self.committed.update(offsets)

    def keep_only(self, assigned: Collection[P]) -> None:
        """Forget partitions no longer ours: their new owner handles their messages again, harmlessly."""
        for partition in [p for p in self.seen if p not in assigned]:
            self._forget(partition)

    def restart(self, partitions: Iterable[P]) -> None:
        """These partitions' offsets start over (assigned anew, or the log was wiped): a new epoch."""
        for partition in partitions:
            self.epochs[partition] = self.epochs.get(partition, 0) + 1
            self._forget(partition)

    def _forget(self, partition: P) -> None:
        self.seen.pop(partition, None)
        self.outstanding.pop(partition, None)
        self.committed.pop(partition, None)
