"""How a kind's fields merge, as data. The sync planner (`twoway.sync.plan`) interprets it; the engine
never names a kind. A kind declares its rules where it registers (`records.Kind(..., rules=Rules(...))`).

- `fields` not listed elsewhere are edited on both sides: 3-way merge against the link's base.
- `owned`: field -> "ours" | "theirs". Copied from the owner, never taken from (or pushed to) the other.
- `ladder`: an ordered status field. Monotonic: a lower value never replaces a higher one; terminal
  values stay; both sides moving to different terminals is a recorded conflict (the external
  system's terminal wins: money moved or not over there).
- `deletion`: delete wins over an edit (always). A system that cannot delete a record in some states
  gets the end state instead (`end_state`, e.g. {"status": "void"}) unless the base's ladder value is
  one of `deletable_in`; only from `end_from` (None: from any). `restore`: where our delete could not
  delete it over there (the end state was taken, or their state stands: money moved), our deleted row
  comes back with their values, recorded as a conflict, so both sides hold the one record.
- `parent`: the kind and our field holding the parent's internal id. Outbound waits for the parent's
  link (the parent is enqueued, no attempt is used up); inbound imports an unknown parent first.
  The connector sees the parent's external id in that field. `orphans="delete"`: a record not yet
  over there whose parent is gone over there can never get there: ours is deleted, recorded.
  `tombstone`: an inbound record whose parent was deleted over there before we ever saw it is imported
  anyway, hung on a deleted row of the parent's kind made from what the record carries of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Ladder:
    field: str
    order: tuple[str, ...]
    terminal: frozenset[str] = frozenset()

    def rank(self, value: str | None) -> int:
        return self.order.index(value) if value in self.order else -1


@dataclass(frozen=True)
class Deletion:
    end_state: Mapping[str, str] = field(default_factory=dict)
    deletable_in: frozenset[str] = frozenset()
    end_from: frozenset[str] | None = None
    restore: bool = False


@dataclass(frozen=True)
class Parent:
    kind: str
    field: str
    orphans: Literal["wait", "delete"] = "wait"
    tombstone: bool = False


@dataclass(frozen=True)
class Rules:
    owned: Mapping[str, Literal["ours", "theirs"]] = field(default_factory=dict)
    ladder: Ladder | None = None
    deletion: Deletion = field(default_factory=Deletion)
    parent: Parent | None = None


DEFAULT = Rules()
