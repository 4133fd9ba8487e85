"""Our invoices and Stripe's: invoices with their lines as invoice items, through the official SDK.

The `invoice` row of the Stripe connector's handler table; the connector holds the client and the limits.

- A draft becomes an invoice (`auto_advance=false`, `metadata.internal_id`) and its lines, added in
  one `add_lines` call: each line is an invoice item with `metadata.internal_id` = our line id (plus our
  quantity and unit amount; the line's amount is their product). Every write has its own idempotency key.
- Line changes are diffs against the lines Stripe holds (read first), sent as at most one
  `update_lines`, one `add_lines` and one `remove_lines` call. A line with no id of ours that matches a
  line of ours is claimed (our id written on it), not created again: that is how a Stripe-made line is
  adopted.
- A `status` change is a command: finalize, pay (out of band), void, mark_uncollectible. Our row moves
  when Stripe confirms (`confirmed_status` is Stripe's, copied back), never on our own say.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from twoway.connectors.base import (
    ConnectorError,
    ExternalRecord,
    InboundEvent,
    NotFound,
    ParentMissing,
    Refused,
    best_match,
)
from twoway.connectors.stripe.mapping import (
    INTERNAL_ID_KEY,
    event_object,
    identity,
    internal_id_of,
    search_query,
    uid_of,
)
from twoway.invoices import wire
from twoway.invoices.models import RANK, TERMINAL

KIND = "invoice"
DRAFT_PARAMS = ("description", "collection_method", "due_date")
LINE_BATCH = 50  # lines per add_lines / update_lines / remove_lines call


class Caller(Protocol):
    client: Any

    async def call(self, op: str, endpoint: str, fn: Any, *args: Any, **kwargs: Any) -> Any: ...


# -- Stripe's objects in our terms ------------------------------------------------------------


def _data(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def item_id_of(line: Mapping[str, Any]) -> str | None:
    """The invoice item behind an invoice line (since 2025-03-31 under `parent`)."""
    parent = line.get("parent") or {}
    details = parent.get("invoice_item_details") if isinstance(parent, Mapping) else None
    if isinstance(details, Mapping) and details.get("invoice_item"):
        return str(details["invoice_item"])
    item = line.get("invoice_item")
    if isinstance(item, str):
        return item
    return str(line["id"]) if str(line.get("id", "")).startswith("ii_") else None


def line_entry(line: Mapping[str, Any]) -> dict[str, Any]:
    """A line or invoice item as (our line id, description, quantity, unit amount).

    We send a line as its amount (what Stripe bills) with our quantity and unit amount in its metadata;
    when they no longer multiply to the amount (edited in Stripe), Stripe's own figures win.
    """
    amount = int(line.get("amount") or 0)
    metadata = line.get("metadata") or {}
    q, u = metadata.get("quantity"), metadata.get("unit_amount")
    if isinstance(q, str) and isinstance(u, str) and q.isdigit() and u.isdigit() and int(q) * int(u) == amount:
        quantity, unit = int(q), Decimal(int(u))
    else:
        raw_quantity = line.get("quantity")
        pricing = line.get("pricing") or {}
        unit_text = pricing.get("unit_amount_decimal") if isinstance(pricing, Mapping) else None
        try:
            unit = Decimal(str(unit_text)) if unit_text is not None else Decimal(amount)
        except InvalidOperation:
            unit = Decimal(amount)
        if raw_quantity is None or unit != unit.to_integral_value() or int(raw_quantity) * unit != amount:
            raw_quantity, unit = 1, Decimal(amount)  # not whole units of money: the amount, as one unit
        quantity = int(raw_quantity)
    return {"id": internal_id_of(line), "description": line.get("description") or "",
            "quantity": int(quantity), "unit_amount": int(unit)}


def _customer_id(invoice: Mapping[str, Any]) -> str:
    customer = invoice.get("customer")
    if isinstance(customer, Mapping):
        return str(customer.get("id") or "")
    return str(customer or "")


def due_text(timestamp: Any) -> str:
    return datetime.fromtimestamp(int(timestamp), UTC).date().isoformat() if timestamp else ""


def due_timestamp(value: str) -> int:
    """The last second of the day (UTC): the date reads back the same and stays in the future longest."""
    day = date.fromisoformat(value)
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() + timedelta(days=1).total_seconds()) - 1


def from_stripe(invoice: Mapping[str, Any], lines: list[Mapping[str, Any]]) -> dict[str, str]:
    status = str(invoice.get("status") or "draft")
    return {
        "customer_id": _customer_id(invoice),
        "currency": str(invoice.get("currency") or ""),
        "collection_method": str(invoice.get("collection_method") or "charge_automatically"),
        "due_date": due_text(invoice.get("due_date")),
        "description": invoice.get("description") or "",
        "lines": wire.encode_lines(line_entry(line) for line in lines),
        "status": status,
        "confirmed_status": status,
        "number": invoice.get("number") or "",
        **{k: str(int(invoice.get(k) or 0)) for k in wire.AMOUNTS},
        "hosted_invoice_url": invoice.get("hosted_invoice_url") or "",
    }


def record(invoice: Mapping[str, Any], lines: list[Mapping[str, Any]] | None = None,
           deleted: bool = False) -> ExternalRecord:
    if deleted or invoice.get("deleted"):
        return ExternalRecord(str(invoice["id"]), {}, internal_id=internal_id_of(invoice), deleted=True,
                              uid=uid_of(invoice))
    if lines is None:
        lines = list((invoice.get("lines") or {}).get("data") or [])
    return ExternalRecord(str(invoice["id"]), from_stripe(invoice, lines), internal_id=internal_id_of(invoice),
                          parent=_customer_copy(invoice), uid=uid_of(invoice))


def _customer_copy(invoice: Mapping[str, Any]) -> ExternalRecord | None:
    """The customer as the invoice carries it (Stripe's snapshot of its name and email)."""
    customer = _customer_id(invoice)
    if not customer:
        return None
    return ExternalRecord(customer, {"name": invoice.get("customer_name") or "",
                                     "email": invoice.get("customer_email") or ""})


def embedded_lines(invoice: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The lines an invoice carries, or None when they are only the first page."""
    lines = invoice.get("lines") or {}
    if not isinstance(lines, Mapping) or lines.get("has_more"):
        return None
    return list(lines.get("data") or [])


def draft_params(fields: Mapping[str, str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if "description" in fields:
        params["description"] = fields["description"]  # "" unsets it in Stripe, which is our ""
    if "collection_method" in fields:
        params["collection_method"] = fields["collection_method"]
    if fields.get("due_date"):
        params["due_date"] = due_timestamp(fields["due_date"])
    return params


def line_params(line: Mapping[str, Any]) -> dict[str, Any]:
    """One line for add_lines / update_lines: its amount, with our quantity and unit amount alongside
    (and our id, when the line has one there)."""
    metadata = {"quantity": str(int(line["quantity"])), "unit_amount": str(int(line["unit_amount"]))}
    if line.get("id") is not None:
        metadata[INTERNAL_ID_KEY] = str(line["id"])
    return {"amount": int(line["quantity"]) * int(line["unit_amount"]), "description": line["description"],
            "metadata": metadata}


def same_line(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a[k] == b[k] for k in ("description", "quantity", "unit_amount"))


# -- the handler ----------------------------------------------------------------------------------


class Invoices:
    kind = KIND
    # `invoice.*` names the invoice; `invoiceitem.*` the invoice its item is attached to.
    event_types = ("invoice.*", "invoiceitem.*")

    def __init__(self, conn: Caller) -> None:
        self.conn = conn
        self.api = conn.client.v1.invoices

    async def fetch(self, external_id: str) -> ExternalRecord:
        try:
            invoice = _data(await self.conn.call("retrieve", "GET /v1/invoices/{id}", self.api.retrieve_async,
                                                 external_id))
        except NotFound:
            return ExternalRecord(external_id, {}, deleted=True)
        return record(invoice, await self._all_lines(invoice))

    async def _all_lines(self, invoice: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        lines = embedded_lines(invoice)
        if lines is not None:
            return lines
        out: list[Mapping[str, Any]] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100, **({"starting_after": after} if after else {})}
            page = await self.conn.call("list", "GET /v1/invoices/{id}/lines", self.api.line_items.list_async,
                                        invoice["id"], params)
            out += [_data(x) for x in page.data]
            if not page.has_more or not page.data:
                return out
            after = page.data[-1].id

    async def create(self, internal_id: int, fields: Mapping[str, str], idempotency_key: str,
                     uid: str | None = None) -> ExternalRecord:
        """The draft, then its lines in one `add_lines` call per batch. Status is not sent here: a command
        after creation moves it."""
        key = idempotency_key
        params = {"customer": fields["customer_id"], "currency": fields["currency"], "auto_advance": False,
                  **self.to_system(fields), "metadata": identity(internal_id, uid)}
        try:
            obj = await self.conn.call("create", "POST /v1/invoices", self.api.create_async, params,
                                       {"idempotency_key": key})
        except NotFound as exc:
            if exc.param == "customer":
                raise ParentMissing(str(exc), param="customer") from exc
            raise
        response = getattr(obj, "last_response", None)
        replayed = bool(response and response.headers.get("idempotent-replayed", "").lower() == "true")
        invoice = _data(obj)
        lines = wire.decode_lines(fields.get("lines", ""))
        if lines:
            invoice = await self._batches("add_lines", invoice["id"], [line_params(x) for x in lines], f"{key}:lines")
        return dataclasses.replace(record(invoice, await self._all_lines(invoice)), replayed=replayed)

    async def _batches(self, op: str, external_id: str, lines: list[dict[str, Any]], key: str) -> dict[str, Any]:
        """add_lines / update_lines / remove_lines, LINE_BATCH lines a call, each call with its own key."""
        method = getattr(self.api, f"{op}_async")
        invoice: dict[str, Any] = {}
        for n in range(0, len(lines), LINE_BATCH):
            invoice = _data(await self.conn.call(op, f"POST /v1/invoices/{{id}}/{op}", method, external_id,
                                                 {"lines": lines[n:n + LINE_BATCH]},
                                                 {"idempotency_key": f"{key}:{op}:{n}"}))
        return invoice

    async def update(self, external_id: str, changes: Mapping[str, str], idempotency_key: str) -> ExternalRecord:
        """Draft fields, then lines, then the status command: Stripe freezes the rest once it is finalized."""
        key = idempotency_key
        params = self.to_system({k: v for k, v in changes.items() if k in DRAFT_PARAMS})
        invoice: dict[str, Any] | None = None
        if params:
            try:
                invoice = _data(await self.conn.call("update", "POST /v1/invoices/{id}", self.api.update_async,
                                                     external_id, params, {"idempotency_key": f"{key}:fields"}))
            except ConnectorError as exc:
                current = await self.fetch(external_id) if exc.status == 400 else None
                if current is None or current.deleted or current.fields.get("status") == "draft":
                    raise
                frozen = [k for k in DRAFT_PARAMS if k in changes] + (["lines"] if "lines" in changes else [])
                raise Refused(f"stripe invoice {external_id} is {current.fields['status']}: finalized invoices "
                              "keep their fields", fields=frozen, current=current) from exc
        if "lines" in changes:
            try:
                invoice = await self._sync_lines(external_id, wire.decode_lines(changes["lines"]), key)
            except NotFound as exc:
                if exc.param != "customer":
                    raise
                # Its customer was deleted in Stripe: the draft stays, but takes no new items. Its lines are
                # frozen as they are (Stripe's, recorded), like a finalized invoice's.
                current = await self.fetch(external_id)
                if current.deleted:
                    raise
                raise Refused(f"stripe invoice {external_id}: its customer is deleted; its lines stay as they are",
                              fields=["lines"], current=current) from exc
        if changes.get("status"):
            invoice = await self._move(external_id, changes["status"], key)
        if invoice is None:
            return await self.fetch(external_id)
        return record(invoice, embedded_lines(invoice) or [])

    async def _sync_lines(self, external_id: str, wanted: list[dict[str, Any]], key: str) -> dict[str, Any]:
        """Make Stripe's lines ours: one update_lines, one add_lines, one remove_lines call at most (per batch).

        Lines with our id match by it (a Stripe line without an id of ours that equals one is claimed: our id
        is written on it). Lines without our id (made in Stripe, never tagged) match by content, then by
        order among the rest. A Stripe line nobody wants is deleted.
        """
        invoice = await self._retrieve(external_id)
        current = [(str(line["id"]), line_entry(line)) for line in await self._all_lines(invoice)]
        by_ours = {entry["id"]: (lid, entry) for lid, entry in current if entry["id"] is not None}
        unclaimed = [(lid, entry) for lid, entry in current if entry["id"] is None]
        updates: list[dict[str, Any]] = []
        adds: list[dict[str, Any]] = []
        kept: set[str] = set()

        def free_match(line: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
            return next((u for u in unclaimed if u[0] not in kept and same_line(u[1], line)), None)

        loose = []
        for line in wanted:
            found = by_ours.get(line["id"]) if line["id"] is not None else None
            found = found or free_match(line)
            if found is None:
                loose.append(line)
                continue
            kept.add(found[0])
            if found[1]["id"] != line["id"] or not same_line(found[1], line):
                updates.append({"id": found[0], **line_params(line)})
        for line in loose:
            spare = next((u for u in unclaimed if u[0] not in kept), None) if line["id"] is None else None
            if spare is None:
                adds.append(line_params(line))
            else:
                kept.add(spare[0])
                updates.append({"id": spare[0], **line_params(line)})
        removes = [{"id": lid, "behavior": "delete"} for lid, _ in current if lid not in kept]
        if (updates or adds or removes) and invoice.get("status") != "draft":
            raise Refused(f"stripe invoice {external_id} is {invoice.get('status')}: its lines are frozen",
                          fields=["lines"], current=record(invoice, await self._all_lines(invoice)))
        result = invoice
        if updates:
            result = await self._batches("update_lines", external_id, updates, key)
        if adds:
            result = await self._batches("add_lines", external_id, adds, key)
        if removes:
            result = await self._batches("remove_lines", external_id, removes, key)
        return result

    async def _retrieve(self, external_id: str) -> dict[str, Any]:
        return _data(await self.conn.call("retrieve", "GET /v1/invoices/{id}", self.api.retrieve_async,
                                          external_id))

    async def _move(self, external_id: str, target: str, key: str) -> dict[str, Any]:
        """Ask Stripe for `target`; when it refuses, read where the invoice is and finish or explain."""
        if target == "draft" or target not in COMMANDS:
            return await self._retrieve(external_id)
        try:
            return await self._command(external_id, target, key)
        except NotFound:
            raise
        except ConnectorError as exc:
            if exc.status != 400:
                raise
            current = await self._retrieve(external_id)
            status = str(current.get("status"))
            if status == target or (target == "open" and RANK.get(status, 0) >= RANK["open"]
                                    and status not in TERMINAL):
                return current  # already there (a replay, or someone else did it)
            if status == "draft" and target in ("void", "uncollectible"):
                await self._command(external_id, "open", key)  # voiding or writing off needs it finalized first
                return await self._command(external_id, target, key)
            if status in TERMINAL or RANK.get(status, 0) > RANK.get(target, 0):
                raise Refused(f"stripe invoice {external_id} is {status}; cannot make it {target}",
                              fields=["status"], current=record(current, await self._all_lines(current))) from exc
            raise

    async def _command(self, external_id: str, target: str, key: str) -> dict[str, Any]:
        method = getattr(self.api, COMMANDS[target])
        params: dict[str, Any] = {"paid_out_of_band": True} if target == "paid" else {}
        if target == "open":
            params["auto_advance"] = False
        name = COMMANDS[target].removesuffix("_async")  # finalize_invoice: the path says finalize
        return _data(await self.conn.call(target, f"POST /v1/invoices/{{id}}/{name.removesuffix('_invoice')}", method,
                                          external_id, params, {"idempotency_key": f"{key}:{name}"}))

    async def delete(self, external_id: str, idempotency_key: str) -> None:
        """Only a draft can be deleted. One Stripe finalized (or paid, voided, wrote off) meanwhile is
        `Refused` with its state: the kind's deletion rules say what our delete becomes then."""
        try:
            await self.conn.call("delete", "DELETE /v1/invoices/{id}", self.api.delete_async, external_id, None,
                                 {"idempotency_key": idempotency_key})
        except NotFound:
            return
        except ConnectorError as exc:
            if exc.status != 400:
                raise
            current = await self.fetch(external_id)
            if current.deleted:
                return
            if current.fields.get("status") == "draft":
                raise
            raise Refused(f"stripe invoice {external_id} is {current.fields.get('status')}: only drafts can be "
                          "deleted", fields=["status"], current=current) from exc

    async def set_internal_id(self, external_id: str, internal_id: int, idempotency_key: str,
                              uid: str | None = None) -> ExternalRecord:
        obj = await self.conn.call("update", "POST /v1/invoices/{id}", self.api.update_async, external_id,
                                   {"metadata": identity(internal_id, uid)},
                                   {"idempotency_key": idempotency_key})
        invoice = _data(obj)
        return record(invoice, await self._all_lines(invoice))

    async def find_by_internal_id(self, internal_id: int, uid: str | None = None) -> ExternalRecord | None:
        query = search_query(internal_id, uid)
        result = await self.conn.call("search", "GET /v1/invoices/search", self.api.search_async,
                                      {"query": query, "limit": 10})
        found = {str(o["id"]): o for o in map(_data, result.data)}
        best = best_match((record(o, []) for o in found.values()), internal_id, uid)
        if best is None:
            return None
        return record(found[best.external_id], await self._all_lines(found[best.external_id]))

    async def list_all(self, page_size: int = 100) -> AsyncIterator[ExternalRecord]:
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size, **({"starting_after": after} if after else {})}
            page = await self.conn.call("list", "GET /v1/invoices", self.api.list_async, params)
            for obj in page.data:
                invoice = _data(obj)
                yield record(invoice, await self._all_lines(invoice))
            if not page.has_more or not page.data:
                return
            after = page.data[-1].id

    def to_system(self, fields: Mapping[str, str]) -> dict[str, Any]:
        """The draft's own fields; lines and status go by their own calls."""
        return draft_params(fields)

    def record(self, obj: Mapping[str, Any]) -> ExternalRecord:
        """With the lines the invoice embeds (a fetch reads past their first page)."""
        return record(obj)

    @staticmethod
    def event(payload: Mapping[str, Any]) -> InboundEvent | None:
        return event_from_payload(payload)


COMMANDS = {"open": "finalize_invoice_async", "paid": "pay_async", "void": "void_invoice_async",
            "uncollectible": "mark_uncollectible_async"}


# -- events ---------------------------------------------------------------------------------------


def event_from_payload(payload: Mapping[str, Any]) -> InboundEvent | None:
    """`invoice.*` names the invoice; `invoiceitem.*` names the invoice it is attached to (a hint only)."""
    type_ = str(payload.get("type"))
    obj, when = event_object(payload)
    if type_.startswith("invoiceitem."):
        invoice = obj.get("invoice")
        invoice_id = invoice.get("id") if isinstance(invoice, Mapping) else invoice
        if not isinstance(invoice_id, str):
            return None  # a pending item, on no invoice: nothing of ours
        return InboundEvent(event_id=str(payload["id"]), type=type_, kind=KIND, external_id=invoice_id,
                            created=when, record=None, payload=dict(payload))
    deleted = type_ == "invoice.deleted"
    lines = embedded_lines(obj)
    # An invoice whose lines are only a first page is no snapshot: the handler reads it whole.
    seen = record(obj, deleted=deleted) if deleted or lines is not None else None
    return InboundEvent(event_id=str(payload["id"]), type=type_, kind=KIND, external_id=str(obj["id"]),
                        created=when, record=seen, payload=dict(payload))
