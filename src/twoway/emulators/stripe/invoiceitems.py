"""Invoice item resource: pending on a customer or attached to a draft invoice, with events.

An item's money is `unit_amount_decimal` x `quantity_decimal` (from `amount`, `unit_amount_decimal`
or `price_data`); changing the items of a draft refreshes its totals (`invoice.updated`).
"""

from __future__ import annotations

import re
import time
from decimal import Decimal
from typing import Any

from twoway.emulators.stripe import lifecycle, totals
from twoway.emulators.stripe.billing import (
    check_rejected,
    customer_or_404,
    deleted_stub,
    invoice_or_404,
    previous_attributes,
    refresh_totals,
)
from twoway.emulators.stripe.errors import invalid, missing, unknown_param
from twoway.emulators.stripe.fields import boolean, integer, merge_metadata, string
from twoway.emulators.stripe.ids import rand_id
from twoway.emulators.stripe.paging import list_body, paginate, range_filter
from twoway.emulators.stripe.state import Obj, Origin, Store

_PRICE = frozenset({"amount", "quantity", "quantity_decimal", "unit_amount_decimal", "price_data", "pricing"})
_IGNORED = frozenset({"expand", "discounts", "tax_rates", "tax_behavior", "tax_code"})
_UPDATE = frozenset({*_PRICE, *_IGNORED, "description", "discountable", "metadata", "period"})
_CREATE = frozenset({*_UPDATE, "customer", "currency", "invoice", "subscription"})
_LIST = frozenset({"limit", "starting_after", "ending_before", "created", "customer", "invoice", "pending", "expand"})


def _item_or_404(store: Store, ident: str) -> Obj:
    item = store.book.items.get(ident)
    if item is None:
        raise missing("invoiceitem", ident)
    return item


def _invoice_status(store: Store, item: Obj) -> str | None:
    if item["invoice"] is None:
        return None
    invoice = store.book.invoices.get(item["invoice"])
    return None if invoice is None else str(invoice["status"])


# -- price --------------------------------------------------------------------------


def _price(params: Obj, unit: Decimal | None, quantity: Decimal) -> tuple[Decimal, Decimal, str | None, str | None]:
    """(unit amount, quantity, currency from price_data, product) after applying `params`."""
    currency = product = None
    if "quantity" in params and "quantity_decimal" in params:
        raise invalid("You may only specify one of these parameters: quantity, quantity_decimal.",
                      param="quantity")
    if "quantity" in params:
        quantity = Decimal(integer(params["quantity"], "quantity", minimum=0))
    if "quantity_decimal" in params:
        quantity = _decimal(params["quantity_decimal"], "quantity_decimal", negative=False)
    given = [n for n in ("amount", "unit_amount_decimal", "price_data", "pricing") if n in params]
    if len(given) > 1:
        raise invalid(f"You may only specify one of these parameters: {', '.join(given)}.", param=given[1])
    if "amount" in params:
        if ("quantity" in params or "quantity_decimal" in params) and quantity != 1:
            raise invalid("You cannot pass quantity together with amount; pass unit_amount_decimal and quantity.",
                          param="quantity")
        unit, quantity = Decimal(integer(params["amount"], "amount")), Decimal(1)
    elif "unit_amount_decimal" in params:
        unit = _decimal(params["unit_amount_decimal"], "unit_amount_decimal", negative=True)
    elif "price_data" in params:
        unit, currency, product = _price_data(params["price_data"])
    elif "pricing" in params:
        price = params["pricing"].get("price") if isinstance(params["pricing"], dict) else None
        raise missing("price", str(price), "pricing[price]")
    if unit is None:
        raise invalid("Missing required param: amount (or unit_amount_decimal, or price_data).",
                      param="amount", code="parameter_missing")
    return unit, quantity, currency, product


def _price_data(raw: Any) -> tuple[Decimal, str, str]:
    if not isinstance(raw, dict):
        raise invalid("Invalid hash", param="price_data")
    for name in raw:
        if name not in ("currency", "product", "unit_amount", "unit_amount_decimal", "tax_behavior"):
            raise unknown_param(f"price_data[{name}]")
    for name in ("currency", "product"):
        if not raw.get(name):
            raise invalid(f"Missing required param: price_data[{name}].", param=f"price_data[{name}]",
                          code="parameter_missing")
    if "unit_amount" in raw:
        unit = Decimal(integer(raw["unit_amount"], "price_data[unit_amount]", minimum=0))
    elif "unit_amount_decimal" in raw:
        unit = _decimal(raw["unit_amount_decimal"], "price_data[unit_amount_decimal]", negative=False)
    else:
        raise invalid("Missing required param: price_data[unit_amount].", param="price_data[unit_amount]",
                      code="parameter_missing")
    return unit, _currency(raw["currency"], "price_data[currency]"), str(raw["product"])


def _decimal(raw: Any, param: str, negative: bool) -> Decimal:
    value = totals.parse_decimal(raw)
    if value is None:
        raise invalid(f"Invalid decimal: {raw}", param=param)
    if value < 0 and not negative:
        raise invalid("This value must be greater than or equal to 0.", param=param)
    return value


def _currency(raw: Any, param: str = "currency") -> str:
    code = raw.lower() if isinstance(raw, str) else raw
    if code not in totals.CURRENCIES:
        raise invalid(f"Invalid currency: {raw}.", param=param)
    return str(code)


def _period(raw: Any, now: int) -> Obj:
    if raw is None:
        return {"end": now, "start": now}
    if not isinstance(raw, dict) or set(raw) != {"start", "end"}:
        raise invalid("A period needs a start and an end.", param="period")
    start, end = integer(raw["start"], "period[start]"), integer(raw["end"], "period[end]")
    if end < start:
        raise invalid("The period's end must not be before its start.", param="period[end]")
    return {"end": end, "start": start}


def _priced(item: Obj, unit: Decimal, quantity: Decimal, product: str | None) -> Obj:
    details = item["pricing"]["price_details"] if item.get("pricing") else None
    if details is None or (product is not None and details["product"] != product):
        details = {"price": rand_id("price_", 24), "product": product or rand_id("prod_", 14)}
    amount = totals.line_amount(unit, quantity)
    return {
        **item,
        "amount": amount,
        "net_amount": None if item["discountable"] else amount,
        "pricing": {"price_details": details, "type": "price_details",
                    "unit_amount_decimal": totals.decimal_text(unit)},
        "quantity": int(quantity),
        "quantity_decimal": totals.decimal_text(quantity),
    }


# -- resource calls -----------------------------------------------------------------


def build_new(
    store: Store, params: Obj, origin: Origin, reject: re.Pattern[str] | None = None, queued: int = 0
) -> Obj:
    """A validated new item for `params`, not yet stored (`queued`: items being added with it)."""
    for name in params:
        if name not in _CREATE:
            raise unknown_param(name)
    if not params.get("customer"):
        raise invalid("Missing required param: customer.", param="customer", code="parameter_missing")
    customer = customer_or_404(store, params["customer"])
    invoice = None
    if params.get("invoice"):
        invoice = invoice_or_404(store, str(params["invoice"]), "invoice")
        if invoice["customer"] != customer["id"]:
            raise invalid(f"The invoice item's customer ({customer['id']}) must match the invoice's customer "
                          f"({invoice['customer']}).", param="invoice")
        if lifecycle.items_locked(invoice["status"]):
            raise lifecycle.locked_items_error("add")
        if len(store.book.attached.get(invoice["id"], ())) + queued >= totals.MAX_ITEMS_PER_INVOICE:
            raise invalid(f"An invoice can have at most {totals.MAX_ITEMS_PER_INVOICE} invoice items.",
                          param="invoice")
    if params.get("subscription"):
        raise missing("subscription", str(params["subscription"]), "subscription")
    unit, quantity, priced_currency, product = _price(params, None, Decimal(1))
    currency = _currency(params["currency"]) if params.get("currency") else priced_currency
    if currency is None:
        currency = invoice["currency"] if invoice else customer.get("currency") or "usd"
    if invoice is not None and currency != invoice["currency"]:
        raise invalid(f"The currency of the invoice item ({currency}) must match the currency of the invoice "
                      f"({invoice['currency']}).", param="currency")
    now = int(time.time())
    description = string(params["description"], "description") if "description" in params else None
    check_rejected({"description": description}, reject)
    discountable = boolean(params["discountable"], "discountable") if "discountable" in params else unit >= 0
    base: Obj = {
        "id": rand_id("ii_", 24),
        "object": "invoiceitem",
        "currency": currency,
        "customer": customer["id"],
        "customer_account": None,
        "date": now,
        "description": description,
        "discountable": discountable,
        "discounts": [],
        "frozen_fields": None,
        "invoice": invoice["id"] if invoice else None,
        "invoicing_rules": None,
        "livemode": origin.livemode,
        "metadata": merge_metadata({}, params["metadata"]) if "metadata" in params else {},
        "parent": None,
        "period": _period(params.get("period"), now),
        "proration": False,
        "proration_details": {"credited_items": None},
        "tax_rates": [],
        "test_clock": None,
    }
    return _priced(base, unit, quantity, product)


def create(store: Store, params: Obj, origin: Origin, reject: re.Pattern[str] | None = None) -> Obj:
    item = build_new(store, params, origin, reject)
    store.book.put_item(item)
    store.record_event("invoiceitem.created", item, origin)
    if item["invoice"] is not None:
        refresh_totals(store, item["invoice"], origin)
    return item


def retrieve(store: Store, ident: str) -> Obj:
    return _item_or_404(store, ident)


def build_update(store: Store, current: Obj, params: Obj, reject: re.Pattern[str] | None = None) -> Obj:
    """The item after `params`, validated, not yet stored."""
    for name in params:
        if name not in _UPDATE:
            raise unknown_param(name)
    if lifecycle.items_locked(_invoice_status(store, current)):
        raise lifecycle.locked_items_error("update")
    item = dict(current)
    if "description" in params:
        item["description"] = string(params["description"], "description")
        check_rejected({"description": item["description"]}, reject)
    if "metadata" in params:
        item["metadata"] = merge_metadata(current["metadata"], params["metadata"])
    if "discountable" in params:
        item["discountable"] = boolean(params["discountable"], "discountable")
    if "period" in params:
        item["period"] = _period(params["period"], current["date"])
    if _PRICE & params.keys() or item["discountable"] != current["discountable"]:
        unit = Decimal(current["pricing"]["unit_amount_decimal"])
        quantity = Decimal(current["quantity_decimal"])
        unit, quantity, priced_currency, product = _price(
            {k: v for k, v in params.items() if k in _PRICE} or {"unit_amount_decimal": str(unit)}, unit, quantity
        )
        if priced_currency is not None and priced_currency != current["currency"]:
            raise invalid("The price's currency must match the invoice item's currency.",
                          param="price_data[currency]")
        item = _priced(item, unit, quantity, product)
    return item


def update(store: Store, ident: str, params: Obj, origin: Origin, reject: re.Pattern[str] | None = None) -> Obj:
    current = _item_or_404(store, ident)
    item = build_update(store, current, params, reject)
    if not save_update(store, current, item, origin):
        return current
    if item["invoice"] is not None:
        refresh_totals(store, item["invoice"], origin)
    return item


def save_update(store: Store, current: Obj, item: Obj, origin: Origin) -> bool:
    """Store a changed item with its `invoiceitem.updated`; False when nothing changed."""
    previous = previous_attributes(current, item)
    if not previous:
        return False
    store.book.put_item(item)
    store.record_event("invoiceitem.updated", item, origin, previous)
    return True


def delete(store: Store, ident: str, origin: Origin) -> Obj:
    item = _item_or_404(store, ident)
    if lifecycle.items_locked(_invoice_status(store, item)):
        raise lifecycle.locked_items_error("delete")
    store.book.remove_item(ident)
    store.record_event("invoiceitem.deleted", item, origin)
    if item["invoice"] is not None:
        refresh_totals(store, item["invoice"], origin)
    return deleted_stub("invoiceitem", ident)


def list_items(store: Store, params: Obj) -> Obj:
    for name in params:
        if name not in _LIST:
            raise unknown_param(name)
    checks: list[Any] = []
    for field in ("customer", "invoice"):
        value = params.get(field)
        if isinstance(value, str):
            checks.append(lambda i, f=field, v=value: i[f] == v)
    if "pending" in params:
        pending = boolean(params["pending"], "pending")
        checks.append(lambda i: (i["invoice"] is None) == pending)
    created = range_filter(params, "created")
    if created is not None:
        checks.append(lambda i: created(i["date"]))
    keep = (lambda i: all(c(i) for c in checks)) if checks else None
    log = store.book.item_log
    page, more = paginate(log.ids, log.index, store.book.items.get, keep, params, "invoiceitem")
    return list_body(page, more, "/v1/invoiceitems")
