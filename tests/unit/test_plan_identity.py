"""The planner and a database restore: ids go back, uids do not. A record given the id of one the restore
lost never adopts that one's objects; a lost record that comes back is imported once, keeps its uid, and is
claimed by that uid when another system's copy arrives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from twoway.connectors.base import ExternalRecord, Taken
from twoway.sync import plan
from twoway.sync.plan.identity import import_uid
from twoway.syncstate.words import Operation, Status

from .test_plan import drive

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NEW_UID = "11111111-1111-4111-8111-111111111111"  # the record made after the restore (id 7 again)
LOST_UID = "22222222-2222-4222-8222-222222222222"  # the record the restore lost (it had id 7)


def snap(system: str = "stripe", **kw: Any) -> plan.Snapshot:
    return plan.Snapshot(kind="customer", system=system, now=NOW, uids=True, **kw)


def row(uid: str = NEW_UID, rid: int = 7, **fields: str) -> plan.Ours:
    return plan.Ours(rid, 1, fields or {"name": "New", "email": "new@x"}, uid=uid)


def lost(xid: str = "cus_lost", internal_id: int | None = 7) -> ExternalRecord:
    return ExternalRecord(xid, {"name": "Lost", "email": "lost@x"}, internal_id=internal_id, uid=LOST_UID)


def made(call: plan.Create) -> ExternalRecord:
    return ExternalRecord("cus_new", dict(call.fields), internal_id=call.internal_id, uid=call.uid)


def conflicts(out: plan.Outcome) -> list[plan.LogRow]:
    return [log for log in out.logs if log.status == Status.CONFLICT]


def test_creates_carry_the_uid_in_the_call_and_in_every_key() -> None:
    out, calls = drive(plan.outbound(snap(ours=row())), {plan.Create: made})
    create = calls[1]
    assert isinstance(create, plan.Create) and create.uid == NEW_UID
    # The lost record's create (same id, same version) had a key without this uid: Stripe cannot replay it.
    assert create.key == f"twoway:stripe:customer:7.{NEW_UID}:create:v1"
    assert out.link is not None and out.link.external_id == "cus_new"


def test_search_refuses_an_object_with_another_records_uid_and_creates_its_own() -> None:
    trace = plan.Trace(had_success=True)  # a lost link: search first
    out, calls = drive(plan.outbound(snap(ours=row(), trace=trace)),
                       {plan.Search: lost(), plan.Create: made})
    assert [type(c) for c in calls] == [plan.Search, plan.MarkStarted, plan.Create]
    search = calls[0]
    assert isinstance(search, plan.Search) and search.uid == NEW_UID
    assert out.link is not None and out.link.external_id == "cus_new"  # never the lost record's
    [conflict] = conflicts(out)
    assert conflict.operation == Operation.ADOPT and conflict.detail is not None
    assert conflict.detail["found"] == "cus_lost" and conflict.detail["found_uid"] == LOST_UID


def test_search_adopts_its_own_object_and_one_made_before_uids() -> None:
    trace = plan.Trace(had_success=True)
    mine = ExternalRecord("cus_mine", {"name": "New", "email": "new@x"}, internal_id=7, uid=NEW_UID)
    legacy = ExternalRecord("cus_old", {"name": "New", "email": "new@x"}, internal_id=7)
    for found in (mine, legacy):
        out, calls = drive(plan.outbound(snap(ours=row(), trace=trace)), {plan.Search: found})
        assert not any(isinstance(c, plan.Create) for c in calls)
        assert out.link is not None and out.link.external_id == found.external_id and not conflicts(out)


def test_a_delete_never_deletes_the_lost_records_object() -> None:
    deleted = plan.Ours(7, 2, {"name": "New", "email": "new@x"}, deleted=True, uid=NEW_UID)
    out, calls = drive(plan.outbound(snap(ours=deleted, trace=plan.Trace(had_success=True))),
                       {plan.Search: lost()})
    assert not any(isinstance(c, plan.Delete) for c in calls)
    assert out.result == plan.Result.NOOP and len(conflicts(out)) == 1


def test_a_restored_row_looks_for_its_object_by_uid_before_creating() -> None:
    restored = plan.Trace(restored=True)
    mine = ExternalRecord("001A", {"name": "Lost", "email": "lost@x"}, uid=LOST_UID)  # Salesforce: uid only
    out, calls = drive(plan.outbound(snap("salesforce", ours=row(LOST_UID, rid=31, name="Lost", email="lost@x"),
                                          trace=restored)), {plan.Search: mine})
    assert [type(c) for c in calls] == [plan.Search]
    assert out.link is not None and out.link.external_id == "001A" and out.link.internal_id == 31


def test_inbound_refuses_a_claim_by_id_whose_uid_differs_and_imports_the_object_with_its_uid() -> None:
    s = snap(claims={7: plan.Claim(row(), linked=True)})
    out, calls = drive(plan.inbound(s, "cus_lost"), {plan.Fetch: lost(), plan.FindUid: None, plan.NewId: 31})
    assert out.result == plan.Result.CREATED and out.insert is not None and out.insert[0] == 31
    assert out.insert_uid == LOST_UID  # the lost record keeps its identity
    assert out.link is not None and out.link.internal_id == 31
    [conflict] = conflicts(out)
    assert conflict.detail is not None and conflict.detail["claimed"] == 7
    created = [log for log in out.logs if log.operation == Operation.CREATE]
    assert created[0].detail == {"restored": True, "uid": LOST_UID}  # the other systems search by uid
    write_id = calls[-1]
    assert isinstance(write_id, plan.SetInternalId) and (write_id.internal_id, write_id.uid) == (31, LOST_UID)


def test_inbound_refuses_even_an_unlinked_row_with_another_uid() -> None:
    s = snap(claims={7: plan.Claim(row(), linked=False)})  # the new record, not synced yet: never given the lost object
    out, _ = drive(plan.inbound(s, "cus_lost"), {plan.Fetch: lost(), plan.FindUid: None, plan.NewId: 31})
    assert out.result == plan.Result.CREATED and out.link is not None and out.link.internal_id == 31
    assert len(conflicts(out)) == 1


def test_the_second_systems_copy_is_claimed_by_uid_not_imported_again() -> None:
    # Stripe's copy came back first and was imported as row 31 with the lost uid; now Salesforce's arrives.
    account = ExternalRecord("001A", {"name": "Lost", "email": "lost@x"}, uid=LOST_UID)
    first, _ = drive(plan.inbound(snap("salesforce"), "001A"), {plan.Fetch: account, plan.FindUid: 31})
    assert first.result == plan.Result.DEFERRED and first.follow[0].hint == 31  # read row 31 under its lock
    s = snap("salesforce", claims={31: plan.Claim(row(LOST_UID, rid=31, name="Lost", email="lost@x"), False)})
    out, _ = drive(plan.inbound(s, "001A"), {plan.Fetch: account, plan.FindUid: 31})
    assert out.result == plan.Result.ADOPTED and out.insert is None
    assert out.link is not None and out.link.internal_id == 31 and not conflicts(out)


def test_an_object_without_a_uid_is_imported_under_one_made_from_it() -> None:
    dashboard = ExternalRecord("cus_dash", {"name": "D", "email": "d@x"})
    out, calls = drive(plan.inbound(snap(), "cus_dash"), {plan.Fetch: dashboard, plan.NewId: 40})
    assert not any(isinstance(c, plan.FindUid) for c in calls)
    assert out.insert_uid == import_uid("stripe", "customer", "cus_dash")
    assert not [log for log in out.logs if log.detail]  # not a restored record


def test_a_linked_object_gets_our_identity_written_only_where_it_is_wrong() -> None:
    link = plan.LinkState(7, "cus_1", {"name": "New", "email": "new@x"}, 1, id=1)
    fields = {"name": "New", "email": "new@x"}
    for theirs, written in ((ExternalRecord("cus_1", fields, internal_id=7, uid=NEW_UID), None),
                            # made before uids, or an org with no uid field: left so (else it never ends)
                            (ExternalRecord("cus_1", fields, internal_id=7), None),
                            (ExternalRecord("cus_1", fields, internal_id=31, uid=NEW_UID), (7, NEW_UID)),
                            (ExternalRecord("cus_1", fields, internal_id=7, uid=LOST_UID), (7, NEW_UID))):
        _, calls = drive(plan.inbound(snap(ours=row(), link=link), "cus_1"), {plan.Fetch: theirs})
        writes = [(c.internal_id, c.uid) for c in calls if isinstance(c, plan.SetInternalId)]
        assert writes == ([written] if written else [])


def test_a_create_that_would_land_on_another_records_object_waits_for_its_import() -> None:
    # Salesforce upserts by our id: the lost record's Account holds id 7, so the connector writes nothing.
    taken = Taken("held", current=lost("001L"))
    out, _ = drive(plan.outbound(snap("salesforce", ours=row())), {plan.Create: taken})
    assert out.result == plan.Result.WAITING and out.failure is None and out.link is None
    assert out.defer_seconds == 1.0 and len(conflicts(out)) == 1
    [read] = out.follow
    assert (read.direction, read.external_id) == (plan.Direction.INBOUND, "001L")  # imported: its id moves
