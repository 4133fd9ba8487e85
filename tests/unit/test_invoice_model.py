"""The property model of tests/unit/test_sync_model.py, for invoices (issue 13): the real planner with the
invoice kind's rules (data) against a model of Stripe's invoices (../shared/STRIPE-INVOICES.md), through
any interleaving of edits and commands on both sides, lost, duplicated and reordered webhooks and
messages, crashes between the calls and the write-back, and outages.

Properties: the status climbs the ladder (draft < open < uncollectible < paid | void) and never goes down;
a terminal status stays, unless both sides reached different terminals (Stripe's wins, recorded as a
conflict); draft fields merge 3-way; a draft deleted on either side is deleted on the other and a
finalized one is voided instead; a draft deleted here that Stripe moved on first comes back with Stripe's
state, recorded; a draft whose customer Stripe deleted first is deleted here, recorded; an invoice whose
customer has no link waits (no attempt used, no dead letter) and syncs once the link exists; at the end
both sides agree.

Our row is kept as the invoice store keeps it (a confirmed status and a requested one, applied by the
store's own `_apply_status`); our API's commands follow `invoices.service` (`ALLOWED_FROM`). Customers,
the parent kind, are modelled only as far as links go: linking one is a single atomic step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from tests.unit.test_sync_model import Db, Engine, Event, Pipes, Row, _at, index
from twoway.connectors.base import ConnectorError, ExternalRecord, NotFound, ParentMissing, Refused
from twoway.invoices.kind import RULES
from twoway.invoices.models import RANK, TERMINAL
from twoway.invoices.service import ALLOWED_FROM, COMMANDS
from twoway.invoices.sync_store import _apply_status
from twoway.sync import plan

DRAFT = ("description", "lines")  # draft fields both sides edit (lines travel as one field)
values = st.sampled_from(["a", "b", "c"])
draft_field = st.sampled_from(DRAFT)
command = st.sampled_from(sorted(COMMANDS))


@dataclass
class Inv(Row):
    """Our invoice as the store holds it: `status` is Stripe's confirmation, `requested_status` our command."""

    customer: int = 0
    status: str = "draft"
    requested_status: str | None = None
    number: str = ""

    @property
    def effective(self) -> str:
        return self.requested_status or self.status

    def wire(self) -> dict[str, str]:
        """As `sync_store.synced_fields`: `status` is where it is headed, `confirmed_status` Stripe's."""
        return {"customer_id": str(self.customer), **self.fields, "status": self.effective,
                "confirmed_status": self.status, "number": self.number}

    def apply(self, changes: dict[str, str]) -> None:
        """As `sync_store.apply`."""
        self.fields.update({k: v for k, v in changes.items() if k in DRAFT})
        if changes.get("customer_id"):
            self.customer = int(changes["customer_id"])
        self.number = changes.get("number", self.number)
        _apply_status(self, changes.get("confirmed_status"), changes.get("status"))  # type: ignore[arg-type]


@dataclass
class InvDb(Db):
    customers: dict[int, str | None] = field(default_factory=dict)  # our customer -> its Stripe id, once linked
    gone: set[int] = field(default_factory=set)  # customers whose link says deleted in Stripe
    deleted_here: set[int] = field(default_factory=set)  # invoices deleted through our API
    conflicts: list[tuple[int, str, str]] = field(default_factory=list)  # (invoice, field, winner), logged
    failures: int = 0  # passes that used up an attempt


@dataclass
class SInv:
    customer: str
    fields: dict[str, str]
    internal_id: int | None = None
    status: str = "draft"
    number: str = ""
    deleted: bool = False


class InvoiceStripe:
    """Stripe's invoices: the lifecycle table, frozen fields after finalization, deletes of drafts only,
    numbers at finalization, idempotency keys that replay, an event with the whole object per write."""

    def __init__(self) -> None:
        self.objs: dict[str, SInv] = {}
        self.customers: set[str] = set()
        self.deleted_customers: set[str] = set()
        self.first: dict[str, ExternalRecord] = {}  # what a replayed create answers
        self.created: dict[str, str] = {}  # create key -> the invoice it made
        self.keys: set[str] = set()
        self.pipe: list[Event] = []
        self.serial = 0
        self.clock = 0

    def record(self, xid: str) -> ExternalRecord:
        inv = self.objs[xid]
        if inv.deleted:
            return ExternalRecord(xid, {}, internal_id=inv.internal_id, deleted=True)
        fields = {"customer_id": inv.customer, **inv.fields, "status": inv.status, "confirmed_status": inv.status,
                  "number": inv.number}
        # The invoice carries a copy of its customer (what is left of it once deleted).
        return ExternalRecord(xid, fields, internal_id=inv.internal_id,
                              parent=ExternalRecord(inv.customer, {"name": inv.customer, "email": ""}))

    def _event(self, type_: str, xid: str) -> None:
        self.serial += 1
        self.clock += 1
        seen = self.record(xid)
        self.pipe.append(Event(f"evt_{self.serial}", type_, xid, dict(seen.fields), self.clock, seen.internal_id))

    def _once(self, key: str | None) -> bool:
        """False: a replay of a key already used (the first answer stands, nothing changes)."""
        if key is None:
            return True
        if key in self.keys:
            return False
        self.keys.add(key)
        return True

    def new_customer(self) -> str:
        xid = f"cus_{len(self.customers) + len(self.deleted_customers) + 1}"
        self.customers.add(xid)
        return xid

    def create(self, customer: str, fields: dict[str, str], internal_id: int | None, key: str | None = None) -> str:
        if key is not None and key in self.created:
            return self.created[key]
        if customer not in self.customers:
            raise ParentMissing("No such customer", param="customer")
        xid = f"in_{len(self.objs) + 1}"
        self.objs[xid] = SInv(customer, {k: fields[k] for k in DRAFT}, internal_id)
        if key is not None:
            self.created[key] = xid
        self.first[xid] = self.record(xid)
        self._event("invoice.created", xid)
        return xid

    def edit(self, xid: str, changes: dict[str, str], key: str | None = None) -> None:
        """Draft fields: a draft only (Stripe answers 400 once finalized)."""
        inv = self.objs[xid]
        assert inv.status == "draft" and not inv.deleted
        if self._once(key):
            inv.fields.update(changes)
            self._event("invoice.updated", xid)

    def move(self, xid: str, target: str, key: str | None = None) -> bool:
        """finalize / pay / void / mark_uncollectible by the lifecycle table; False: a 400."""
        inv = self.objs[xid]
        allowed = {"open": ("draft",), "paid": ("draft", "open", "uncollectible"),
                   "void": ("open", "uncollectible"), "uncollectible": ("open",)}[target]
        if key is not None and key in self.keys:
            return True
        if inv.deleted or inv.status not in allowed:
            return False
        self._once(key)
        if inv.status == "draft":
            inv.number = f"N-{xid}"  # assigned at finalization (paying a draft finalizes it first)
        inv.status = target
        self._event(f"invoice.{target}", xid)
        return True

    def delete_customer(self, xid: str) -> None:
        """Its invoices stay as they are (as the emulator does)."""
        self.customers.discard(xid)
        self.deleted_customers.add(xid)

    def delete(self, xid: str) -> bool:
        """A draft only; False: a 400 ("You can only delete draft invoices.")."""
        inv = self.objs[xid]
        if inv.status != "draft":
            return False
        if not inv.deleted:
            inv.deleted = True
            self._event("invoice.deleted", xid)
        return True

    def set_internal_id(self, xid: str, internal_id: int) -> None:
        inv = self.objs[xid]
        if inv.deleted:
            raise NotFound("no such invoice")
        inv.internal_id = internal_id  # metadata stays editable in every state
        self._event("invoice.updated", xid)

    def search(self, internal_id: int) -> str | None:
        return next((x for x, o in self.objs.items() if o.internal_id == internal_id and not o.deleted), None)

    def live(self) -> dict[str, SInv]:
        return {x: o for x, o in self.objs.items() if not o.deleted}


class InvoiceEngine(Engine):
    """The engine's pass over one invoice: the invoice kind's rules, its parent's links, its store."""

    db: InvDb
    stripe: InvoiceStripe  # type: ignore[assignment]

    def _snapshot(self, internal_id: int | None = None, external_id: str | None = None,
                  hint: int | None = None) -> plan.Snapshot:
        s = super()._snapshot(internal_id, external_id, hint)
        rid = s.ours.id if s.ours else (s.link.internal_id if s.link else None)
        row = self.db.rows.get(rid) if rid is not None else None
        ours = plan.Ours(rid, row.version, row.wire(), row.deleted, _at(row.updated_at)) \
            if isinstance(row, Inv) and rid is not None and s.ours is not None else None
        claims = {cid: plan.Claim(self._ours(cid), c.linked) for cid, c in s.claims.items()}
        links = {cid: xid for cid, xid in self.db.customers.items() if xid is not None}
        return plan.Snapshot(kind="invoice", system="stripe", now=s.now, ours=ours, link=s.link, pending=s.pending,
                             trace=s.trace, claims=claims, rules=RULES, parent_links=links,
                             parents_gone=frozenset(self.db.gone))

    def _ours(self, rid: int) -> plan.Ours | None:
        row = self.db.rows.get(rid)
        return plan.Ours(rid, row.version, row.wire(), row.deleted, _at(row.updated_at)) \
            if isinstance(row, Inv) else None

    def _call(self, call: plan.Call) -> object:
        if isinstance(call, plan.FindLink):
            assert call.kind == "customer"
            return next((c for c, x in self.db.customers.items() if x == call.external_id), None)
        if isinstance(call, (plan.MarkStarted, plan.NewId)):
            return super()._call(call)
        if self.down:
            raise ConnectorError("stripe 503", transient=True, status=503)
        s = self.stripe
        if isinstance(call, plan.Fetch) and call.kind == "customer":
            gone = call.external_id not in s.customers
            return ExternalRecord(call.external_id, {} if gone else {"name": call.external_id}, deleted=gone)
        if isinstance(call, plan.Fetch):
            return s.record(call.external_id) if call.external_id in s.objs else \
                ExternalRecord(call.external_id, {}, deleted=True)
        if isinstance(call, plan.Search):
            xid = s.search(call.internal_id)
            return None if xid is None else s.record(xid)
        if isinstance(call, plan.Create):
            replayed = call.key in s.created
            xid = s.create(call.fields["customer_id"], dict(call.fields), call.internal_id, key=call.key)
            first = s.first[xid]
            return ExternalRecord(xid, dict(first.fields), internal_id=call.internal_id, replayed=replayed)
        if isinstance(call, plan.Update):
            return self._update(call)
        if isinstance(call, plan.Delete):
            return self._delete(call)
        if isinstance(call, plan.SetInternalId):
            s.set_internal_id(call.external_id, call.internal_id)
            return None
        raise AssertionError(call)

    def _update(self, call: plan.Update) -> None:
        """As `connectors.stripe.invoices.update`: draft fields, then lines, then the status command."""
        s, xid, changes = self.stripe, call.external_id, call.changes
        inv = s.objs[xid]
        if inv.deleted:
            raise NotFound("no such invoice")
        draft = {k: v for k, v in changes.items() if k in DRAFT and (k == "description" or inv.fields[k] != v)}
        if draft and inv.status != "draft":
            frozen = [k for k in DRAFT if k in changes] if "description" in draft else ["lines"]
            raise Refused("finalized invoices keep their fields", fields=frozen, current=s.record(xid))
        if draft:
            s.edit(xid, draft, key=f"{call.key}:fields")
        target = changes.get("status")
        if not target or target == "draft":
            return None
        if s.move(xid, target, key=f"{call.key}:{target}"):
            return None
        status = inv.status  # a 400: read where it is and finish or explain (`invoices._move`)
        if status == target or (target == "open" and status == "uncollectible"):
            return None
        if status == "draft" and target in ("void", "uncollectible"):
            s.move(xid, "open", key=f"{call.key}:open")
            s.move(xid, target, key=f"{call.key}:{target}")
            return None
        assert status in TERMINAL or RANK[status] > RANK[target], (status, target)
        raise Refused(f"invoice is {status}", fields=["status"], current=s.record(xid))

    def _delete(self, call: plan.Delete) -> None:
        """As `connectors.stripe.invoices.delete`: only a draft; one moved on is `Refused` with its state."""
        s = self.stripe
        if not s.delete(call.external_id):
            raise Refused("only drafts can be deleted", fields=["status"], current=s.record(call.external_id))
        return None

    def _write_back(self, out: plan.Outcome, message: tuple[str, object]) -> None:
        if out.waiting_for is not None:
            # The parent wait: not a failure, no attempt used, no dead letter; its customer goes first.
            assert out.failure is None and out.result == "waiting", out
        if out.failure is not None:
            assert self.down, f"an attempt used up with Stripe up: {out.failure!r}"
            self.db.failures += 1
        for log in out.logs:
            if log.status == "conflict" and log.detail and "field" in log.detail:
                assert log.internal_id is not None
                self.db.conflicts.append((log.internal_id, log.detail["field"], log.detail["winner"]))
            if log.status == "conflict" and log.detail and log.detail.get("ours") == "deleted":
                assert log.internal_id is not None  # (b) our delete lost to money that moved: restored
                self.db.conflicts.append((log.internal_id, "deleted", log.detail["winner"]))
            if log.status == "conflict" and log.detail and "parent" in log.detail:
                assert log.internal_id is not None  # (a) its customer was deleted in Stripe first
                self.db.conflicts.append((log.internal_id, "orphaned", "theirs"))
        super()._write_back(out, message)
        t = out.tombstone
        if t is not None and out.insert is not None and out.link is not None and out.link.internal_id in self.db.rows:
            # A deleted customer row linked to the Stripe id (or the one linked first: the invoice hangs on it).
            cid = next((c for c, x in self.db.customers.items() if x == t.external_id), None)
            if cid is None:
                cid = t.internal_id
                self.db.customers[cid] = t.external_id
                self.db.gone.add(cid)
            row = self.db.rows[out.link.internal_id]
            assert isinstance(row, Inv)
            row.customer = cid

    def _write_row(self, row: Row, write: plan.RowWrite) -> None:
        assert isinstance(row, Inv)
        row.apply(write.changes)
        row.deleted = (row.deleted or write.delete) and not write.restore


    def _insert(self, new_id: int, fields: dict[str, str]) -> None:
        row = Inv({k: fields[k] for k in DRAFT}, customer=int(fields["customer_id"]), updated_at=self.now)
        row.apply({k: v for k, v in fields.items() if k != "customer_id"})
        self.db.rows[new_id] = row

    def _follow(self, f: plan.Follow) -> tuple[str, object]:
        if f.kind == "customer":
            return ("cust_out", f.internal_id) if f.direction == "outbound" else ("cust_in", f.external_id)
        return super()._follow(f)


class InvoiceModel(Pipes):
    def __init__(self) -> None:
        super().__init__()
        self.db: InvDb = InvDb()
        self.stripe: InvoiceStripe = InvoiceStripe()  # type: ignore[assignment]

    def _engine(self, db: Db) -> Engine:
        return InvoiceEngine(db, self.db, self.stripe, self.ids, self._tick(), down=self.down)  # type: ignore[arg-type]

    def _run(self, message: tuple[str, object]) -> Db:
        direction, target = message
        if direction in ("cust_out", "cust_in"):
            return self._customer(direction, target)
        return super()._run(message)

    def _commit(self, db: Db) -> None:
        assert isinstance(db, InvDb)
        self._check_ladder(self.db, db)
        super()._commit(db)

    # -- the parent: a customer is linked in one step (its own sync is the customer model's) ----------

    def _customer(self, direction: str, target: object) -> Db:
        db = self.db
        if direction == "cust_out":
            assert isinstance(target, int)
            if db.customers.get(target) is None and not self.down and target not in db.gone:
                db.customers[target] = self.stripe.new_customer()
        elif target in self.stripe.deleted_customers:
            db.gone.update(c for c, x in db.customers.items() if x == target)  # read: it is gone
        elif isinstance(target, str) and target not in db.customers.values():
            db.customers[self.ids.next()] = target  # imported: a customer of ours, linked
        return db

    @precondition(lambda self: not self.down)
    @rule()
    def settle(self) -> None:
        """Everything delivered and handled: the next edits meet linked invoices (conflicts need them)."""
        self.drain()

    # -- our side: the API (invoices.service) ---------------------------------------------------------

    def _live(self, i: int, status: str | None = None) -> Inv | None:
        rows = [r for _, r in sorted(self.db.rows.items()) if isinstance(r, Inv) and not r.deleted
                and (status is None or r.effective == status)]
        return rows[i % len(rows)] if rows else None

    def _bump(self, row: Inv) -> None:
        row.version += 1
        row.updated_at = self._tick()
        self.queue.append(("out", next(k for k, r in self.db.rows.items() if r is row)))

    def local_customer(self) -> None:
        cid = self.ids.next()
        self.db.customers[cid] = None  # no link yet: its invoices wait for it
        self.queue.append(("cust_out", cid))

    @rule(i=index, description=values, lines=values, new_customer=st.booleans())
    def local_create(self, i: int, description: str, lines: str, new_customer: bool) -> None:
        if new_customer or not self.db.customers:
            self.local_customer()
        customers = sorted(self.db.customers)
        rid = self.ids.next()
        self.db.rows[rid] = Inv({"description": description, "lines": lines}, customer=customers[i % len(customers)],
                                updated_at=self._tick())
        self.queue.append(("out", rid))

    @precondition(lambda self: any(isinstance(r, Inv) and not r.deleted for r in self.db.rows.values()))
    @rule(i=index, name=draft_field, value=values)
    def local_edit(self, i: int, name: str, value: str) -> None:
        row = self._live(i, "draft")  # after finalization our API answers 409
        if row is not None and row.fields[name] != value:
            row.fields[name] = value
            self._bump(row)

    @precondition(lambda self: any(isinstance(r, Inv) and not r.deleted for r in self.db.rows.values()))
    @rule(i=index, name=command)
    def local_command(self, i: int, name: str) -> None:
        row = self._live(i)
        target = COMMANDS[name]
        if row is not None and row.effective != target and row.effective in ALLOWED_FROM[name]:
            row.requested_status = target  # Stripe confirms it (confirm_locally=False)
            self._bump(row)

    @precondition(lambda self: any(isinstance(r, Inv) and not r.deleted for r in self.db.rows.values()))
    @rule(i=index)
    def local_delete(self, i: int) -> None:
        """A draft is deleted; a finalized one is voided instead; a paid or void one is refused."""
        row = self._live(i)
        if row is None or row.effective in TERMINAL:
            return
        if row.effective == "draft":
            row.deleted = True
            self.db.deleted_here.add(next(k for k, r in self.db.rows.items() if r is row))
        else:
            row.requested_status = "void"
        self._bump(row)

    # -- Stripe's side: a person in the dashboard -------------------------------------------------------

    @rule(i=index, description=values, lines=values, new_customer=st.booleans())
    def remote_create(self, i: int, description: str, lines: str, new_customer: bool) -> None:
        """For one of its customers, linked here or not (a Stripe-only one is imported first)."""
        if new_customer or not self.stripe.customers:
            self.stripe.new_customer()
        customers = sorted(self.stripe.customers)
        self.stripe.create(customers[i % len(customers)], {"description": description, "lines": lines}, None)

    def _remote(self, i: int, *statuses: str) -> str | None:
        live = sorted(x for x, o in self.stripe.live().items() if not statuses or o.status in statuses)
        return live[i % len(live)] if live else None

    @precondition(lambda self: bool(self.stripe.live()))
    @precondition(lambda self: bool(self.stripe.customers))
    @rule(i=index)
    def remote_delete_customer(self, i: int) -> None:
        """Someone deletes a customer in Stripe; its customer.deleted reaches us some time later."""
        xid = sorted(self.stripe.customers)[i % len(self.stripe.customers)]
        self.stripe.delete_customer(xid)
        self.queue.append(("cust_in", xid))

    @rule(i=index, name=draft_field, value=values)
    def remote_edit(self, i: int, name: str, value: str) -> None:
        xid = self._remote(i, "draft")
        if xid is not None and self.stripe.objs[xid].fields[name] != value:
            self.stripe.edit(xid, {name: value})

    @precondition(lambda self: bool(self.stripe.live()))
    @rule(i=index, to=st.sampled_from(sorted(RANK)))
    def remote_command(self, i: int, to: str) -> None:
        xid = self._remote(i)
        if xid is not None and to != "draft":
            self.stripe.move(xid, to)  # a 400 from a state that does not allow it changes nothing

    @precondition(lambda self: bool(self.stripe.live()))
    @rule(i=index)
    def remote_delete(self, i: int) -> None:
        xid = self._remote(i, "draft")
        if xid is not None:
            self.stripe.delete(xid)

    # -- properties ---------------------------------------------------------------------------------

    def _check_ladder(self, before: InvDb, after: InvDb) -> None:
        """A pass never lowers a status; a terminal one changes only as a recorded conflict, to Stripe's."""
        new_conflicts = after.conflicts[len(before.conflicts):]
        for rid, old in before.rows.items():
            new = after.rows.get(rid)
            assert isinstance(old, Inv) and isinstance(new, Inv)
            assert RANK[new.status] >= RANK[old.status] and (old.status not in TERMINAL or new.status == old.status), \
                (rid, old.status, new.status)
            if old.deleted:
                continue
            assert RANK[new.effective] >= RANK[old.effective], (rid, old.effective, new.effective)
            if old.effective in TERMINAL and new.effective != old.effective:
                assert (rid, "status", "theirs") in new_conflicts, (rid, old.effective, new.effective, new_conflicts)
                assert new.effective == new.status, "the terminal that wins is Stripe's, confirmed"

    @invariant()
    def stripe_never_lowers_a_status(self) -> None:
        for xid, inv in self.stripe.objs.items():
            assert inv.status in RANK, xid

    def converged(self) -> None:
        assert_invoices_converged(self.db, self.stripe)


def assert_invoices_converged(db: InvDb, stripe: InvoiceStripe) -> None:
    live = stripe.live()
    for rid, row in db.rows.items():
        assert isinstance(row, Inv)
        link = db.links.get(rid)
        obj = live.get(link.external_id) if link else None
        if row.deleted:
            # Deleted on both sides: where Stripe kept it (it moved on first), ours came back instead.
            assert obj is None, f"row {rid} deleted, Stripe holds it {obj.status}"
            assert link is not None or stripe.search(rid) is None, f"row {rid} deleted, unlinked, found by search"
            # Never there and not deleted by us: its customer was deleted in Stripe first, recorded.
            assert link is not None or rid in db.deleted_here or (rid, "orphaned", "theirs") in db.conflicts, rid
            continue
        assert link is not None and obj is not None, f"live invoice {rid}: link {link}, Stripe {obj}"
        assert db.customers.get(row.customer) == obj.customer, (rid, row.customer, obj.customer)
        assert obj.fields == row.fields, (rid, row.fields, obj.fields)
        assert row.status == obj.status and row.requested_status is None, \
            (rid, row.status, row.requested_status, obj.status)
        assert row.number == obj.number and obj.internal_id == rid, (rid, row.number, obj.number, obj.internal_id)
    linked = {link.external_id for link in db.links.values()}
    assert set(live) <= linked, f"Stripe invoices with no row here: {set(live) - linked}"


InvoiceModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("TWOWAY_INVOICE_MODEL_EXAMPLES", "150")), stateful_step_count=60,
    deadline=None, derandomize=not os.environ.get("TWOWAY_MODEL_RANDOM"))
TestInvoiceModel = InvoiceModel.TestCase


# -- the cases, spelled out (the model above finds them among many others) -------------------


def _linked_draft() -> InvoiceModel:
    model = InvoiceModel()
    model.local_create(i=0, description="a", lines="a", new_customer=True)
    model.settle()
    return model


def test_an_invoice_waits_for_its_customer_link_then_syncs() -> None:
    model = InvoiceModel()
    model.local_create(i=0, description="a", lines="a", new_customer=True)  # queue: customer, invoice
    model.handle(i=1, duplicate=False)  # the invoice first: its customer has no link yet
    assert model.db.links == {} and model.db.failures == 0 and not model.stripe.objs
    assert ("out", 2) in model.queue  # retried, no attempt used, no dead letter
    model.settle()
    assert model.db.failures == 0 and model.db.links[2].external_id == "in_1"
    assert_invoices_converged(model.db, model.stripe)


def test_an_invoice_of_a_stripe_only_customer_imports_both() -> None:
    model = InvoiceModel()
    model.remote_create(i=0, description="a", lines="a", new_customer=True)
    model.settle()
    assert list(model.db.customers.values()) == ["cus_1"] and len(model.db.rows) == 1
    assert_invoices_converged(model.db, model.stripe)


def test_void_here_while_paid_there_is_a_recorded_conflict_that_stripe_wins() -> None:
    model = _linked_draft()
    model.local_command(i=0, name="finalize")
    model.settle()
    model.local_command(i=0, name="void")
    model.remote_command(i=0, to="paid")
    model.settle()
    row = model.db.rows[2]
    assert isinstance(row, Inv) and (row.status, row.requested_status) == ("paid", None)
    assert (2, "status", "theirs") in model.db.conflicts
    assert_invoices_converged(model.db, model.stripe)


def test_a_stale_open_after_paid_changes_nothing() -> None:
    model = _linked_draft()
    model.remote_command(i=0, to="open")
    stale = list(model.stripe.pipe)  # the invoice.open event, replayed after the payment
    model.remote_command(i=0, to="paid")
    model.settle()
    for event in stale:
        event.event_id += "_replayed"
        model._store(event)
    model.settle()
    row = model.db.rows[2]
    assert isinstance(row, Inv) and row.status == "paid" and row.effective == "paid"


def test_a_draft_deleted_here_after_stripe_finalized_it_is_voided_there_and_comes_back_void() -> None:
    model = _linked_draft()
    model.remote_command(i=0, to="open")  # not yet seen here: our API still deletes the draft
    model.local_delete(i=0)
    model.settle()
    row = model.db.rows[2]
    assert model.stripe.objs["in_1"].status == "void" and not row.deleted and row.status == "void"
    assert (2, "deleted", "theirs") in model.db.conflicts
    assert_invoices_converged(model.db, model.stripe)


def test_a_draft_deleted_here_while_stripe_paid_it_comes_back_paid() -> None:
    """Decision (b): money moved over there; our delete loses, recorded."""
    model = _linked_draft()
    model.remote_command(i=0, to="paid")
    model.local_delete(i=0)
    model.settle()
    row = model.db.rows[2]
    assert isinstance(row, Inv) and not row.deleted and (row.status, row.effective) == ("paid", "paid")
    assert (2, "deleted", "theirs") in model.db.conflicts
    assert_invoices_converged(model.db, model.stripe)


def test_a_draft_whose_customer_stripe_deleted_first_is_deleted_here() -> None:
    """Decision (a): it can never get there; ours is deleted, recorded."""
    model = InvoiceModel()
    model.local_customer()
    model.handle(i=0, duplicate=False)  # the customer is linked: cus_1
    model.remote_delete_customer(i=0)
    model.local_create(i=0, description="a", lines="a", new_customer=False)
    model.settle()
    assert model.db.rows[2].deleted and 2 not in model.db.links and not model.stripe.objs
    assert (2, "orphaned", "theirs") in model.db.conflicts and model.db.failures == 0
    assert_invoices_converged(model.db, model.stripe)


def test_a_draft_deleted_in_stripe_is_deleted_here() -> None:
    model = _linked_draft()
    model.local_edit(i=0, name="description", value="b")  # our edit meets the delete: delete wins
    model.remote_delete(i=0)
    model.settle()
    assert model.db.rows[2].deleted and model.db.failures == 0
    assert_invoices_converged(model.db, model.stripe)


def test_a_draft_edit_here_after_stripe_finalized_takes_stripes_fields_recorded() -> None:
    model = _linked_draft()
    model.remote_command(i=0, to="open")  # its webhook not delivered yet
    model.local_edit(i=0, name="description", value="b")
    model.handle(i=len(model.queue) - 1, duplicate=False)  # the push is refused: finalized fields stay
    row = model.db.rows[2]
    assert isinstance(row, Inv) and row.fields["description"] == "a" and row.status == "open"
    assert (2, "description", "theirs") in model.db.conflicts
    model.settle()
    assert_invoices_converged(model.db, model.stripe)


def test_both_sides_edit_a_draft_field_merges_three_way() -> None:
    model = _linked_draft()
    model.local_edit(i=0, name="description", value="b")
    model.remote_edit(i=0, name="lines", value="c")
    model.settle()
    row = model.db.rows[2]
    assert row.fields == {"description": "b", "lines": "c"} == model.stripe.objs["in_1"].fields
