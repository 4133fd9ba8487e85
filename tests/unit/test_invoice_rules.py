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


def test_a_refused_void_of_an_invoice_paid_over_there_takes_paid_and_records_it() -> None:
    """Voided here while paid in Stripe: Stripe refuses the void; its terminal state wins, recorded."""
    from datetime import UTC, datetime

    from twoway.connectors.base import ExternalRecord, Refused
    from twoway.sync import plan

    now = datetime.now(UTC)
    base = {"customer_id": "cus_1", "status": "open", "confirmed_status": "open", "description": "d"}
    row = plan.Ours(7, 3, {"customer_id": "3", "status": "void", "confirmed_status": "open", "description": "d"},
                    False, now)
    link = plan.LinkState(7, "in_1", base, 2, id=1)
    paid = ExternalRecord("in_1", {**base, "status": "paid", "confirmed_status": "paid"}, internal_id=7)
    steps = plan.outbound(plan.Snapshot(kind="invoice", system="stripe", now=now, ours=row, link=link,
                                        rules=RULES, parent_links={3: "cus_1"}))
    call = next(steps)
    assert isinstance(call, plan.Update) and call.changes == {"status": "void"}
    try:
        steps.throw(Refused("paid", fields=["status"], current=paid))
        raise AssertionError("the plan did not finish")
    except StopIteration as done:
        out = done.value
    assert out.result == "refused" and out.failure is None
    assert out.row is not None and out.row.changes == {"status": "paid", "confirmed_status": "paid"}
    assert [log.status for log in out.logs].count("conflict") >= 1
    assert out.link is not None and out.link.base["status"] == "paid"
