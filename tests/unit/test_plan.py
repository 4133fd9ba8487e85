"""The planner on its own: pure, so every decision is checked by feeding it calls' answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from twoway.connectors.base import ConnectorError, ExternalRecord, NotFound
from twoway.kit.rules import Deletion, Ladder, Parent, Rules
from twoway.sync import plan
from twoway.sync.plan.snapshot import CLOCK_SKEW

NOW = datetime(2026, 1, 1, tzinfo=UTC)
INVOICE = Rules(owned={"number": "theirs"},
                ladder=Ladder("status", ("draft", "open", "uncollectible", "paid", "void"),
                              frozenset({"paid", "void"})),
                deletion=Deletion(end_state={"status": "void"}, deletable_in=frozenset({"draft"})),
                parent=Parent("customer", "customer_id"))


def drive(steps: plan.Plan, answers: dict[type, Any]) -> tuple[plan.Outcome, list[plan.Call]]:
    """Run a plan, answering each call from `answers` (a value, an exception, or a function of the call)."""
    calls: list[plan.Call] = []
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            call = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as done:
            return done.value, calls
        calls.append(call)
        value, error = None, None
        answer = answers.get(type(call))
        answer = answer(call) if callable(answer) and not isinstance(answer, type) else answer
        if isinstance(answer, BaseException):
            error = answer
        else:
            value = answer


def snap(**kw: Any) -> plan.Snapshot:
    return plan.Snapshot(kind="customer", system="stripe", now=NOW, **kw)


def ours(version: int = 1, deleted: bool = False, **fields: str) -> plan.Ours:
    return plan.Ours(7, version, fields or {"name": "A", "email": "a@x"}, deleted, NOW - timedelta(seconds=5))


def created(call: plan.Create) -> ExternalRecord:
    return ExternalRecord("cus_1", dict(call.fields), internal_id=call.internal_id)


def test_first_push_marks_then_creates_and_links() -> None:
    out, calls = drive(plan.outbound(snap(ours=ours())), {plan.Create: created})
    assert [type(c) for c in calls] == [plan.MarkStarted, plan.Create]
    assert calls[0].key == calls[1].key == "twoway:stripe:customer:7:create:v1"  # type: ignore[union-attr]
    assert out.result == "create" and out.link is not None and out.link.last_pushed_version == 1
    assert out.link.id is None and out.link.base == {"name": "A", "email": "a@x"}


def test_retry_after_our_row_moved_replays_the_first_create_then_updates() -> None:
    trace = plan.Trace(started=(plan.Started("twoway:stripe:customer:7:create:v1", {"name": "A", "email": "a@x"},
                                             NOW - timedelta(minutes=3)),))
    out, calls = drive(plan.outbound(snap(ours=ours(version=3, name="B", email="a@x"), trace=trace)),
                       {plan.Create: created})
    assert [type(c) for c in calls] == [plan.Create, plan.Update]  # no search, no new trace
    assert calls[0].key.endswith("create:v1") and calls[1].changes == {"name": "B"}  # type: ignore[union-attr]
    assert out.link is not None and out.link.last_pushed_version == 3


@pytest.mark.parametrize(("window", "replayed"), [(None, True), (timedelta(hours=23), False), (timedelta(days=60), True)])
def test_a_create_is_replayed_only_while_the_system_keeps_its_key(window: timedelta | None, replayed: bool) -> None:
    """The idempotency window is the connector's (None: keys kept for ever); past it, search first."""
    trace = plan.Trace(started=(plan.Started("twoway:stripe:customer:7:create:v1", {"name": "A", "email": "a@x"},
                                             NOW - timedelta(days=30)),))
    out, calls = drive(plan.outbound(snap(ours=ours(), trace=trace, idempotency_window=window)),
                       {plan.Create: created, plan.Search: None})
    if replayed:
        assert [type(c) for c in calls] == [plan.Create]  # the very same request: no search, no new trace
        assert calls[0].key.endswith("create:v1")  # type: ignore[union-attr]
    else:
        assert [type(c) for c in calls] == [plan.Search, plan.MarkStarted, plan.Create]
    assert out.result == "create"
    assert (trace.replayable(NOW, window) is not None) == replayed


def test_a_lost_link_after_success_is_searched_for() -> None:
    found = ExternalRecord("cus_9", {"name": "A", "email": "a@x"}, internal_id=7)
    out, calls = drive(plan.outbound(snap(ours=ours(), trace=plan.Trace(had_success=True))), {plan.Search: found})
    assert [type(c) for c in calls] == [plan.Search]
    assert out.link is not None and out.link.external_id == "cus_9" and out.result == "create"


def test_outage_is_a_failure_with_the_partial_state_kept() -> None:
    link = plan.LinkState(7, "cus_1", {"name": "A", "email": "a@x"}, 1, id=3)
    down = ConnectorError("stripe 503", transient=True, status=503)
    out, _ = drive(plan.outbound(snap(ours=ours(version=2, name="B", email="a@x"), link=link)), {plan.Update: down})
    assert out.failure is down and out.failure.outage and out.link is None


def test_update_of_an_object_deleted_over_there_deletes_ours() -> None:
    link = plan.LinkState(7, "cus_1", {"name": "A", "email": "a@x"}, 1, id=3)
    out, _ = drive(plan.outbound(snap(ours=ours(version=2, name="B", email="a@x"), link=link)),
                   {plan.Update: NotFound("gone")})
    assert out.result == "gone" and out.row is not None and out.row.delete and out.row.expected_version == 2
    assert out.link is not None and out.link.base == {"deleted": True} and out.link.last_pushed_version == 3
    assert any(log.status == "conflict" for log in out.logs)


def test_pending_events_are_merged_before_pushing() -> None:
    link = plan.LinkState(7, "cus_1", {"name": "A", "email": "a@x"}, 1, id=3)
    event = plan.Pending(1, ExternalRecord("cus_1", {"name": "A", "email": "new@x"}, internal_id=7), NOW)
    theirs = ExternalRecord("cus_1", {"name": "A", "email": "new@x"}, internal_id=7)
    out, calls = drive(plan.outbound(snap(ours=ours(version=2, name="B", email="a@x"), link=link, pending=(event,))),
                       {plan.Fetch: theirs})
    assert [type(c) for c in calls] == [plan.Fetch, plan.Update]
    assert calls[1].changes == {"name": "B"}  # type: ignore[union-attr]
    assert out.row is not None and out.row.changes == {"email": "new@x"} and out.processed == [1]


def test_echo_of_our_own_write_needs_no_read() -> None:
    link = plan.LinkState(7, "cus_1", {"name": "A", "email": "a@x"}, 1, id=3)
    event = plan.Pending(1, ExternalRecord("cus_1", {"name": "A", "email": "a@x"}, internal_id=7), NOW)
    out, calls = drive(plan.inbound(snap(ours=ours(), link=link, pending=(event,)), "cus_1", hint_only=True), {})
    assert calls == [] and out.result == "echo" and out.processed == [1]


def test_unknown_object_is_imported_with_our_id_written_back() -> None:
    theirs = ExternalRecord("cus_5", {"name": "Z", "email": "z@x"})
    out, calls = drive(plan.inbound(snap(), "cus_5"), {plan.Fetch: theirs, plan.NewId: 42})
    assert [type(c) for c in calls] == [plan.Fetch, plan.NewId, plan.SetInternalId]
    assert out.insert == (42, {"name": "Z", "email": "z@x"}) and out.link is not None
    assert out.link.internal_id == 42 and out.result == "created"


def test_an_object_naming_a_row_we_did_not_read_is_looked_at_again_with_that_row() -> None:
    theirs = ExternalRecord("cus_5", {"name": "Z", "email": "z@x"}, internal_id=9)
    out, _ = drive(plan.inbound(snap(), "cus_5"), {plan.Fetch: theirs})
    assert out.result == "deferred" and out.follow[0].hint == 9 and out.processed == []


def test_child_waits_for_its_parent_without_a_call() -> None:
    row = plan.Ours(7, 1, {"customer_id": "3", "status": "draft", "number": ""}, False, NOW)
    out, calls = drive(plan.outbound(snap(ours=row, rules=INVOICE)), {})
    assert calls == [] and out.result == "waiting" and out.waiting_for == ("customer", 3)
    assert out.follow[0].kind == "customer" and out.follow[0].internal_id == 3 and out.failure is None


def test_child_carries_its_parents_external_id_and_never_pushes_owned_fields() -> None:
    row = plan.Ours(7, 1, {"customer_id": "3", "status": "open", "number": "ours?"}, False, NOW)
    _, calls = drive(plan.outbound(snap(ours=row, rules=INVOICE, parent_links={3: "cus_3"})), {plan.Create: created})
    create = calls[1]
    assert isinstance(create, plan.Create)
    assert create.fields == {"customer_id": "cus_3", "status": "open"}


def test_inbound_child_with_an_unknown_parent_imports_the_parent_first() -> None:
    theirs = ExternalRecord("in_1", {"customer_id": "cus_3", "status": "open", "number": "N-1"})
    out, _ = drive(plan.inbound(snap(rules=INVOICE), "in_1"), {plan.Fetch: theirs, plan.FindLink: None})
    assert out.result == "deferred" and out.defer_seconds == 1.0
    assert out.follow[0].direction == "inbound" and out.follow[0].external_id == "cus_3"


def test_deleting_what_the_system_cannot_delete_moves_it_to_its_end_state() -> None:
    row = plan.Ours(7, 4, {"customer_id": "3", "status": "open", "number": "N-1"}, True, NOW)
    link = plan.LinkState(7, "in_1", {"customer_id": "cus_3", "status": "open", "number": "N-1"}, 3, id=1)
    out, calls = drive(plan.outbound(snap(ours=row, link=link, rules=INVOICE, parent_links={3: "cus_3"})), {})
    assert isinstance(calls[0], plan.Update) and calls[0].changes == {"status": "void"}
    assert out.result == "delete" and out.link is not None and out.link.base == {"deleted": True}


@pytest.mark.parametrize(("base", "o", "t", "merged", "conflict"), [
    ("open", "open", "paid", "paid", False),        # theirs moved up
    ("open", "paid", "open", "paid", False),        # ours moved up: pushed, not undone
    ("paid", "open", "paid", "paid", False),        # a stale lower value never wins
    ("open", "paid", "void", "void", True),         # two different ends: theirs, recorded
    ("draft", "open", "uncollectible", "uncollectible", False),
    ("void", "void", "open", "void", False),        # terminal stays terminal
])
def test_status_ladder_is_monotonic(base: str, o: str, t: str, merged: str, conflict: bool) -> None:
    result = plan.merge_fields(INVOICE, {"status": base}, {"status": o}, {"status": t}, ours_changed_at=NOW,
                               theirs_changed_at=NOW, policy="newer_wins")
    assert result.merged["status"] == merged
    assert bool(result.conflicts) == conflict


def test_owned_fields_come_from_their_owner_only() -> None:
    result = plan.merge_fields(INVOICE, {"number": "1"}, {"number": "mine"}, {"number": "2"}, ours_changed_at=NOW,
                               theirs_changed_at=None, policy="ours_wins")
    assert result.merged["number"] == "2" and not result.conflicts
    assert "number" not in plan.pushable(INVOICE, {"number": "mine", "status": "open"}, {})
    assert "status" not in plan.pushable(INVOICE, {"status": "open"}, {"status": "paid"})


def test_deleting_a_row_whose_create_may_have_landed_replays_the_create_then_deletes() -> None:
    trace = plan.Trace(started=(plan.Started("twoway:stripe:customer:7:create:v1", {"name": "A", "email": "a@x"},
                                             NOW - timedelta(minutes=1)),))
    out, calls = drive(plan.outbound(snap(ours=ours(version=2, deleted=True), trace=trace)), {plan.Create: created})
    assert [type(c) for c in calls] == [plan.Create, plan.Delete]
    assert out.result == "delete" and out.link is not None and out.link.base == {"deleted": True}


def test_fields_the_system_keeps_are_taken_from_it_and_recorded() -> None:
    from twoway.connectors.base import Refused

    link = plan.LinkState(7, "in_1", {"status": "open", "description": "a"}, 1, id=3)
    row = plan.Ours(7, 2, {"status": "open", "description": "b"}, False, NOW)
    current = ExternalRecord("in_1", {"status": "paid", "description": "a"})
    refused = Refused("frozen", fields=["description"], current=current)
    out, _ = drive(plan.outbound(snap(ours=row, link=link)), {plan.Update: refused})
    assert out.result == "refused" and out.failure is None
    assert out.row is not None and out.row.changes == {"description": "a"}
    assert out.link is not None and out.link.base == {"status": "paid", "description": "a"}
    assert [log.status for log in out.logs] == ["conflict"]


# -- reads only where they buy something: the newest event's own object stands for a read ---------------

BASE = {"name": "A", "email": "a@x"}


def edited(event_id: int, at: datetime, email: str) -> plan.Pending:
    return plan.Pending(event_id, ExternalRecord("cus_1", {"name": "A", "email": email}, internal_id=7), at)


def take_in(*events: plan.Pending, hint_only: bool = True, **kw: Any) -> tuple[plan.Outcome, list[plan.Call]]:
    """An inbound pass of a linked customer whose pending `events` each carry the object; a read answers `now@x`."""
    kw.setdefault("event_objects", True)
    s = snap(ours=ours(), link=plan.LinkState(7, "cus_1", BASE, 1, id=3), pending=events, **kw)
    return drive(plan.inbound(s, "cus_1", hint_only=hint_only),
                 {plan.Fetch: ExternalRecord("cus_1", {"name": "A", "email": "now@x"}, internal_id=7)})


def test_the_newest_single_event_stands_for_a_read() -> None:
    out, calls = take_in(edited(1, NOW, "new@x"), seen=NOW - timedelta(seconds=1))
    assert calls == [] and out.result == "merged" and out.processed == [1]
    assert out.row is not None and out.row.changes == {"email": "new@x"}


def test_the_newest_of_several_seconds_apart_stands_for_a_read() -> None:
    out, calls = take_in(edited(2, NOW, "new@x"), edited(1, NOW - timedelta(seconds=1), "old@x"))
    assert calls == [] and out.row is not None and out.row.changes == {"email": "new@x"} and out.processed == [1, 2]


def test_two_events_in_one_second_are_read() -> None:
    """Stripe's `created` has one-second resolution: which of the two is newer is unknown."""
    out, calls = take_in(edited(1, NOW, "x@x"), edited(2, NOW, "y@x"))
    assert [type(c) for c in calls] == [plan.Fetch]
    assert out.row is not None and out.row.changes == {"email": "now@x"}


@pytest.mark.parametrize("seen", [NOW, NOW + timedelta(seconds=3)])
def test_an_event_no_newer_than_one_already_handled_is_read(seen: datetime) -> None:
    """Delivered late (reordered), or in the same second as one handled: its object may be stale."""
    out, calls = take_in(edited(1, NOW, "old@x"), seen=seen)
    assert [type(c) for c in calls] == [plan.Fetch]
    assert out.row is not None and out.row.changes == {"email": "now@x"}


@pytest.mark.parametrize("kw", [
    {"hint_only": False},  # reconcile, retry, sweeper: they ask for a read
    {"event_objects": False},  # Salesforce: its events are hints only
])
def test_only_events_of_a_system_whose_events_carry_the_object_stand_for_a_read(kw: dict[str, Any]) -> None:
    _, calls = take_in(edited(1, NOW, "new@x"), **kw)
    assert [type(c) for c in calls] == [plan.Fetch]


def test_an_event_whose_object_could_not_be_mapped_whole_is_read() -> None:
    """An invoice whose lines are a first page only: the connector's snapshot is None."""
    _, calls = take_in(plan.Pending(2, None, NOW), edited(1, NOW - timedelta(seconds=2), "old@x"))
    assert [type(c) for c in calls] == [plan.Fetch]


def test_what_we_know_is_as_new_as_the_links_last_write_and_the_newest_handled_event() -> None:
    assert plan.seen_until(None, None) is None
    assert plan.seen_until(NOW, None) == NOW + CLOCK_SKEW
    assert plan.seen_until(NOW, NOW + timedelta(seconds=5)) == NOW + timedelta(seconds=5)
    # Written by us half a second before their event's second: their clock may be a second ahead.
    _, calls = take_in(edited(1, NOW, "new@x"), seen=plan.seen_until(NOW - timedelta(seconds=0.5), None))
    assert [type(c) for c in calls] == [plan.Fetch]
