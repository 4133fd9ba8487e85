"""Issue 13, property: the invoice kind's merge rules as the planner applies them.

Any base, ours and theirs: the status never goes down, a terminal status stays terminal, two different
terminals reached on both sides are a recorded conflict (Stripe's wins), Stripe-owned fields come from
Stripe, and a stream of stale reads in any order never lowers what we hold.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from twoway.invoices.kind import RULES
from twoway.invoices.models import RANK, STATUSES, TERMINAL
from twoway.sync.plan import merge_fields

status = st.sampled_from(STATUSES)


def _merge(base: str | None, ours: str, theirs: str, **extra: dict) -> tuple[str, list]:  # type: ignore[type-arg]
    b = {} if base is None else {"status": base}
    result = merge_fields(RULES, {**b, **extra.get("base", {})}, {"status": ours, **extra.get("ours", {})},
                          {"status": theirs, **extra.get("theirs", {})}, ours_changed_at=None,
                          theirs_changed_at=None, policy="newer_wins")
    return result.merged["status"], result.conflicts


@settings(max_examples=300, deadline=None)
@given(base=st.none() | status, ours=status, theirs=status)
def test_the_ladder_never_goes_down(base: str | None, ours: str, theirs: str) -> None:
    merged, conflicts = _merge(base, ours, theirs)
    assert merged in (ours, theirs)
    if ours in TERMINAL or theirs in TERMINAL:
        assert merged in TERMINAL  # terminal stays terminal
    else:
        assert RANK[merged] == max(RANK[ours], RANK[theirs])
    both_moved = ours in TERMINAL and theirs in TERMINAL and ours != theirs and base not in (ours, theirs)
    status_conflicts = [c for c in conflicts if c.field == "status"]
    assert bool(status_conflicts) == both_moved
    if both_moved:
        assert merged == theirs  # money moved (or not) over there: Stripe's terminal wins, recorded


@settings(max_examples=200, deadline=None)
@given(seen=st.lists(status, min_size=1, max_size=8), start=status)
def test_stale_reads_in_any_order_never_lower_what_we_hold(seen: list[str], start: str) -> None:
    """Each read is merged against what we last agreed on; the order of reads does not matter."""
    ours, base = start, start
    for theirs in seen:
        merged, _ = _merge(base, ours, theirs)
        if ours in TERMINAL:
            assert merged == ours or (theirs in TERMINAL and theirs != base)
        elif merged not in TERMINAL:
            assert RANK[merged] >= RANK[ours]
        ours, base = merged, theirs


@given(number=st.text(max_size=8), ours_number=st.text(max_size=8))
def test_stripe_owned_fields_come_from_stripe(number: str, ours_number: str) -> None:
    result = merge_fields(RULES, {"number": ""}, {"status": "open", "number": ours_number, "total": "1"},
                          {"status": "open", "number": number, "total": "2"}, ours_changed_at=None,
                          theirs_changed_at=None, policy="ours_wins")
    assert result.merged["number"] == number and result.merged["total"] == "2" and not result.conflicts
