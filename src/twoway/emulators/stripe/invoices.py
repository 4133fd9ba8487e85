"""Invoice resource: drafts, edits, the lifecycle calls, lists, lines and search, with events."""

from __future__ import annotations

import re
import time
from typing import Any

from twoway.emulators.stripe import lifecycle, totals
from twoway.emulators.stripe.billing import (
    check_rejected,
    commit_invoice,
    customer_or_404,
    deleted_stub,
    invoice_or_404,
    money,
    render_invoice,
)
from twoway.emulators.stripe.errors import StripeError, invalid, missing, unknown_param
from twoway.emulators.stripe.fields import boolean, integer, merge_metadata, string
from twoway.emulators.stripe.ids import rand_id
from twoway.emulators.stripe.lifecycle import DRAFT, OPEN, PAID, UNCOLLECTIBLE, VOID
from twoway.emulators.stripe.state import Obj, Origin, Store

METHODS = ("charge_automatically", "send_invoice")
_DAY = 86400
_STRINGS = {"description": 1500, "footer": 5000, "statement_descriptor": 22}
_EDITABLE = frozenset(
    {*_STRINGS, "collection_method", "days_until_due", "due_date", "metadata", "auto_advance", "custom_fields",
     "currency", "expand"}
)
_CREATE = frozenset({*_EDITABLE, "customer", "pending_invoice_items_behavior"})


def _blank(customer: Obj, now: int, livemode: bool) -> Obj:
    ident = rand_id("in_", 24)
    invoice: Obj = {
        "id": ident,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Stripe emulator",
        "account_tax_ids": None,
        "amount_overpaid": 0,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": False,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None,
                          "status": None},
        "automatically_finalizes_at": None,
        "billing_reason": "manual",
        "collection_method": "charge_automatically",
        "confirmation_secret": None,
        "created": now,
        "currency": customer.get("currency") or "usd",
        "custom_fields": None,
        "customer": customer["id"],
        "customer_account": None,
        "customer_tax_exempt": customer.get("tax_exempt", "none"),
        "customer_tax_ids": [],
        "customer_shipping": None,
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": None,
        "ending_balance": None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "livemode": livemode,
        "metadata": {},
        "next_payment_attempt": None,
        "number": None,
        "on_behalf_of": None,
        "parent": None,
        "payment_settings": {"default_mandate": None, "payment_method_options": None, "payment_method_types": None},
        "period_end": now,
        "period_start": now,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": {"amount_tax_display": None, "pdf": {"page_size": "letter"}, "template": None,
                      "template_version": None},
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": DRAFT,
        "status_details": None,
        "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None,
                               "voided_at": None},
        "test_clock": None,
        "threshold_reason": None,
        "total_discount_amounts": [],
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": None,
        **_customer_copy(customer),
        **totals.compute([]),
    }
    return invoice


def _customer_copy(customer: Obj) -> Obj:
    """The customer fields an invoice copies (refreshed until finalization, then frozen)."""
    return {
        "customer_address": customer.get("address"),
        "customer_email": customer.get("email"),
        "customer_name": customer.get("name"),
        "customer_phone": customer.get("phone"),
    }


# -- validation ---------------------------------------------------------------------


def _changes(params: Obj, current: Obj, allowed: frozenset[str], now: int) -> Obj:
    """Validated new values for the fields `params` touches; due terms checked as a whole."""
    out: Obj = {}
    for name, raw in params.items():
        if name not in allowed:
            raise unknown_param(name)
        if name in _STRINGS:
            out[name] = string(raw, name, _STRINGS[name])
        elif name == "metadata":
            out[name] = merge_metadata(current["metadata"], raw)
        elif name == "auto_advance":
            out[name] = boolean(raw, name)
        elif name == "collection_method":
            if raw not in METHODS:
                raise invalid(f"Invalid collection_method: must be one of {', '.join(METHODS)}",
                              param=name)
            out[name] = raw
        elif name == "currency":
            out[name] = _currency(raw)
        elif name == "custom_fields":
            out[name] = _custom_fields(raw)
    method = out.get("collection_method", current["collection_method"])
    due = _due_date(params, now)
    if method == "send_invoice":
        due = due if due is not None else current["due_date"]
        if due is None:
            raise invalid(
                "Invoices with collection_method=send_invoice need a due_date or days_until_due.",
                param="days_until_due",
            )
        out["due_date"] = due
    elif due is not None:
        raise invalid("You can only set due_date or days_until_due when collection_method is send_invoice.",
                      param="due_date" if "due_date" in params else "days_until_due")
    else:
        out["due_date"] = None
    return out


def _due_date(params: Obj, now: int) -> int | None:
    if "due_date" in params and "days_until_due" in params:
        raise invalid("You may only specify one of these parameters: days_until_due, due_date.",
                      param="due_date")
    if "days_until_due" in params:
        return now + integer(params["days_until_due"], "days_until_due", minimum=0) * _DAY
    if "due_date" in params:
        return integer(params["due_date"], "due_date", minimum=0)
    return None


def _currency(raw: Any) -> str:
    code = raw.lower() if isinstance(raw, str) else raw
    if code not in totals.CURRENCIES:
        raise invalid(f"Invalid currency: {raw}. Stripe currently supports these currencies: "
                      + ", ".join(sorted(totals.CURRENCIES)), param="currency")
    return str(code)


def _custom_fields(raw: Any) -> list[Obj] | None:
    if raw == "":
        return None
    if not isinstance(raw, list) or len(raw) > 4:
        raise invalid("Invalid array", param="custom_fields")
    out = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or set(entry) != {"name", "value"}:
            raise invalid("Each custom field needs a name and a value.", param=f"custom_fields[{i}]")
        out.append({"name": str(entry["name"]), "value": str(entry["value"])})
    return out


def _check_currency_change(store: Store, invoice: Obj, changes: Obj) -> None:
    currency = changes.get("currency")
    if currency and currency != invoice["currency"] and store.book.attached.get(invoice["id"]):
        raise invalid("You cannot change the currency of an invoice that has invoice items.", param="currency")


def _advance_at(store: Store, invoice: Obj, now: int) -> int | None:
    if not invoice["auto_advance"] or invoice["status"] != DRAFT:
        return None
    return now + int(store.book.auto_finalize_after)


# -- resource calls -----------------------------------------------------------------


def create(store: Store, params: Obj, origin: Origin, reject: re.Pattern[str] | None = None) -> Obj:
    if "customer" not in params:
        for name in params:
            if name not in _CREATE:
                raise unknown_param(name)
        raise invalid("Missing required param: customer.", param="customer", code="parameter_missing")
    behavior = params.get("pending_invoice_items_behavior", "exclude")
    if behavior not in ("include", "exclude"):
        raise invalid("Invalid pending_invoice_items_behavior: must be one of include, exclude",
                      param="pending_invoice_items_behavior")
    now = int(time.time())
    rest = {k: v for k, v in params.items() if k not in ("customer", "pending_invoice_items_behavior")}
    for name in rest:
        if name not in _CREATE:
            raise unknown_param(name)
    customer = customer_or_404(store, params["customer"])
    invoice = _blank(customer, now, origin.livemode)
    invoice.update(_changes(rest, invoice, _EDITABLE, now))
    check_rejected({"description": invoice["description"]}, reject)
    invoice["automatically_finalizes_at"] = _advance_at(store, invoice, now)
    store.book.put_invoice(invoice)
    if behavior == "include":
        _take_pending(store, invoice, origin)
        invoice = {**invoice, **money(store, invoice)}
        store.book.put_invoice(invoice)
    return commit_invoice(store, None, [("invoice.created", invoice)], origin)


def _take_pending(store: Store, invoice: Obj, origin: Origin) -> None:
    """`pending_invoice_items_behavior=include`: the customer's pending items join the draft."""
    for item in list(store.book.items.values()):
        if item["customer"] == invoice["customer"] and item["invoice"] is None \
                and item["currency"] == invoice["currency"]:
            moved = {**item, "invoice": invoice["id"]}
            store.book.put_item(moved)
            store.record_event("invoiceitem.updated", moved, origin, {"invoice": None})


def retrieve(store: Store, ident: str) -> Obj:
    return render_invoice(store, invoice_or_404(store, ident))


def update(store: Store, ident: str, params: Obj, origin: Origin, reject: re.Pattern[str] | None = None) -> Obj:
    current = invoice_or_404(store, ident)
    for name in params:
        if name not in _EDITABLE:
            raise unknown_param(name)
    frozen = lifecycle.frozen_params(current["status"], params)
    if frozen:
        raise invalid(lifecycle.FROZEN_MESSAGE, param=frozen[0])
    now = int(time.time())
    if current["status"] == DRAFT:
        changes = _changes(params, current, _EDITABLE, now)
    else:
        changes = {}
        if "metadata" in params:
            changes["metadata"] = merge_metadata(current["metadata"], params["metadata"])
        if "auto_advance" in params:
            changes["auto_advance"] = boolean(params["auto_advance"], "auto_advance")
    _check_currency_change(store, current, changes)
    if "description" in changes:
        check_rejected({"description": changes["description"]}, reject)
    invoice = {**current, **changes}
    if "auto_advance" in changes:
        invoice["automatically_finalizes_at"] = _advance_at(store, invoice, now)
    if invoice == current:
        return render_invoice(store, current)  # nothing changed: no event, like customers
    return commit_invoice(store, current, [(None, invoice)], origin)


def delete(store: Store, ident: str, origin: Origin) -> Obj:
    invoice = invoice_or_404(store, ident)
    lifecycle.check_delete(invoice["status"])
    rendered = render_invoice(store, invoice)
    for item in store.book.attached_items(ident):
        store.book.remove_item(item["id"])
        store.record_event("invoiceitem.deleted", item, origin)
    store.book.remove_invoice(ident)
    store.record_event("invoice.deleted", rendered, origin)
    return deleted_stub("invoice", ident)


# -- lifecycle calls ----------------------------------------------------------------


def _finalized(store: Store, invoice: Obj, now: int) -> Obj:
    customer = store.customers.get(invoice["customer"])
    if customer is not None:
        seq = customer["next_invoice_sequence"]
        number = f"{customer['invoice_prefix']}-{seq:04d}"
        # Stripe bumps the customer's sequence without a customer.updated event.
        store.replace_customer({**customer, "next_invoice_sequence": seq + 1})
        copied = _customer_copy(customer)
    else:
        number = f"{invoice['id'][3:11].upper()}-0001"
        copied = {}
    secret = rand_id("test_" if not invoice["livemode"] else "live_", 40)
    return {
        **invoice,
        **copied,
        **money(store, invoice),
        "status": OPEN,
        "number": number,
        "effective_at": now,
        "ending_balance": 0,
        "automatically_finalizes_at": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_emulator/{secret}",
        "invoice_pdf": f"https://pay.stripe.com/invoice/acct_emulator/{secret}/pdf",
        "status_transitions": {**invoice["status_transitions"], "finalized_at": now},
    }


def _paid(invoice: Obj, now: int, out_of_band: bool) -> Obj:
    due = invoice["amount_due"]
    paid = {**invoice, "status": PAID, "amount_paid": due, "amount_remaining": 0,
            "amount_paid_off_stripe": due if out_of_band else 0,
            "status_transitions": {**invoice["status_transitions"], "paid_at": now}}
    return paid


def finalize(store: Store, ident: str, params: Obj, origin: Origin) -> Obj:
    for name in params:
        if name not in ("auto_advance", "expand"):
            raise unknown_param(name)
    invoice = invoice_or_404(store, ident)
    lifecycle.next_status(invoice["status"], "finalize")
    now = int(time.time())
    if "auto_advance" in params:
        invoice = {**invoice, "auto_advance": boolean(params["auto_advance"], "auto_advance")}
    opened = _finalized(store, invoice, now)
    steps: list[tuple[str | None, Obj]] = [("invoice.finalized", opened)]
    if opened["amount_due"] == 0:
        # Nothing to collect: Stripe marks a $0 invoice paid as it finalizes.
        steps.append(("invoice.paid", _paid(opened, now, out_of_band=False)))
    return commit_invoice(store, invoice_or_404(store, ident), steps, origin)


def pay(store: Store, ident: str, params: Obj, origin: Origin) -> Obj:
    for name in params:
        if name not in ("paid_out_of_band", "forgive", "off_session", "payment_method", "source", "mandate",
                        "expand"):
            raise unknown_param(name)
    for name in ("payment_method", "source"):
        if params.get(name):
            kind = "PaymentMethod" if name == "payment_method" else "source"
            raise missing(kind, str(params[name]), name)
    out_of_band = boolean(params.get("paid_out_of_band", "false"), "paid_out_of_band")
    invoice = invoice_or_404(store, ident)
    lifecycle.next_status(invoice["status"], "pay")
    owed = money(store, invoice) if invoice["status"] == DRAFT else invoice
    if owed["amount_due"] - owed["amount_paid"] > 0 and not out_of_band:
        # Checked before anything changes, so a failed pay leaves a draft a draft (see the README).
        raise StripeError(
            400,
            "This customer has no attached payment source or default payment method. Please consider adding "
            "a default payment method, or pass paid_out_of_band=true to record a payment made outside Stripe.",
            save=True,
        )
    now = int(time.time())
    steps: list[tuple[str | None, Obj]] = []
    current = invoice
    if current["status"] == DRAFT:
        # Paying a draft finalizes it first, so one invoice.updated goes draft -> paid.
        current = _finalized(store, current, now)
        steps.append(("invoice.finalized", current))
    steps.append(("invoice.paid", _paid(current, now, out_of_band)))
    return commit_invoice(store, invoice, steps, origin)


def send(store: Store, ident: str, params: Obj, origin: Origin) -> Obj:
    """`POST /v1/invoices/{id}/send`: a draft is finalized first; `invoice.sent` (no email goes out)."""
    _only_expand(params)
    invoice = invoice_or_404(store, ident)
    if invoice["collection_method"] != "send_invoice":
        raise invalid("You can only manually send an invoice if its collection method is 'send_invoice'.")
    if invoice["status"] == VOID:
        raise invalid("You can't send a void invoice.")
    now = int(time.time())
    steps: list[tuple[str | None, Obj]] = []
    current = invoice
    if current["status"] == DRAFT:
        current = _finalized(store, current, now)
        steps.append(("invoice.finalized", current))
        if current["amount_due"] == 0:
            current = _paid(current, now, out_of_band=False)
            steps.append(("invoice.paid", current))
    steps.append(("invoice.sent", current))
    return commit_invoice(store, invoice, steps, origin)


def void(store: Store, ident: str, params: Obj, origin: Origin) -> Obj:
    _only_expand(params)
    invoice = invoice_or_404(store, ident)
    lifecycle.next_status(invoice["status"], "void")
    now = int(time.time())
    voided = {**invoice, "status": VOID, "auto_advance": False,
              "status_transitions": {**invoice["status_transitions"], "voided_at": now}}
    return commit_invoice(store, invoice, [("invoice.voided", voided)], origin)


def mark_uncollectible(store: Store, ident: str, params: Obj, origin: Origin) -> Obj:
    _only_expand(params)
    invoice = invoice_or_404(store, ident)
    lifecycle.next_status(invoice["status"], "mark_uncollectible")
    now = int(time.time())
    marked = {**invoice, "status": UNCOLLECTIBLE,
              "status_transitions": {**invoice["status_transitions"], "marked_uncollectible_at": now}}
    return commit_invoice(store, invoice, [("invoice.marked_uncollectible", marked)], origin)


def _only_expand(params: Obj) -> None:
    for name in params:
        if name != "expand":
            raise unknown_param(name)


def advance_due(store: Store, now: float) -> int:
    """Finalize auto-advancing drafts whose time has come; returns how many (run by a timer)."""
    due = [i for i in store.book.invoices.values()
           if i["status"] == DRAFT and i["automatically_finalizes_at"] is not None
           and i["automatically_finalizes_at"] <= now]
    for invoice in due:
        finalize(store, invoice["id"], {}, Origin(None, livemode=invoice["livemode"]))
    return len(due)
