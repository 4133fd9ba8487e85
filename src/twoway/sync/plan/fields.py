"""A kind's field rules applied to values: what we may push, how both sides' values merge, request digests.

The rules are data (`kit/rules.py`): owned fields come from their owner, a ladder field only climbs, the
rest merge three ways (`sync/merge.py`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from twoway.kit.rules import Ladder, Rules
from twoway.sync.merge import Conflict, MergeResult, Policy, merge


def digest(values: Mapping[str, str]) -> str:
    """A short stable name of some values, for idempotency keys."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def pushable(rules: Rules, ours: Mapping[str, str], base: Mapping[str, Any]) -> dict[str, str]:
    """Our values the other side should hold: never a field they own, never a lower rung of the ladder."""
    out = {k: v for k, v in ours.items() if rules.owned.get(k) != "theirs"}
    ladder = rules.ladder
    if ladder is not None and ladder.field in out:
        was = base.get(ladder.field)
        if ladder.rank(out[ladder.field]) < ladder.rank(was) or (was in ladder.terminal and out[ladder.field] != was):
            del out[ladder.field]
    return out


def merge_fields(rules: Rules, base: Mapping[str, Any], ours: Mapping[str, str], theirs: Mapping[str, str], *,
                 ours_changed_at: datetime | None, theirs_changed_at: datetime | None,
                 policy: Policy) -> MergeResult:
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
    return MergeResult(merged, conflicts)


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
