"""Three-way merge of one record: base (last agreed), ours, theirs. Pure logic."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Policy = Literal["newer_wins", "ours_wins", "theirs_wins"]


@dataclass(frozen=True)
class Conflict:
    field: str
    base: str | None
    ours: str
    theirs: str
    winner: Literal["ours", "theirs"]


@dataclass
class MergeResult:
    merged: dict[str, str]
    conflicts: list[Conflict] = field(default_factory=list)

    def changes_for_ours(self, ours: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in self.merged.items() if ours.get(k) != v}


def merge(
    base: Mapping[str, str],
    ours: Mapping[str, str],
    theirs: Mapping[str, str],
    *,
    ours_changed_at: datetime | None = None,
    theirs_changed_at: datetime | None = None,
    policy: Policy = "newer_wins",
) -> MergeResult:
    result = MergeResult(merged={})
    for name in sorted(set(ours) | set(theirs)):
        b, o, t = base.get(name), ours.get(name, ""), theirs.get(name, "")
        if o == t or t == b:
            result.merged[name] = o
        elif o == b:
            result.merged[name] = t
        else:
            winner = _winner(policy, ours_changed_at, theirs_changed_at)
            result.merged[name] = o if winner == "ours" else t
            result.conflicts.append(Conflict(name, b, o, t, winner))
    return result


def _winner(policy: Policy, ours_at: datetime | None, theirs_at: datetime | None) -> Literal["ours", "theirs"]:
    if policy == "ours_wins":
        return "ours"
    if policy == "theirs_wins":
        return "theirs"
    if ours_at is None or theirs_at is None:
        return "theirs" if ours_at is None else "ours"
    # A tie goes to theirs: the external system is where a person made the most recent deliberate edit.
    return "ours" if ours_at > theirs_at else "theirs"
