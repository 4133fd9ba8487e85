"""Customer resource: validation, create/update/delete, list, with events recorded."""

from __future__ import annotations

import re
import time
from typing import Any

from twoway.emulators.stripe.errors import invalid, missing, unknown_param
from twoway.emulators.stripe.fields import merge_metadata
from twoway.emulators.stripe.ids import invoice_prefix, rand_id
from twoway.emulators.stripe.paging import list_body, paginate, range_filter
from twoway.emulators.stripe.state import Obj, Origin, Store

_STRING_LIMITS = {"name": 256, "email": 512, "description": 350, "phone": 20}
_WRITABLE = frozenset({*_STRING_LIMITS, "metadata", "address", "preferred_locales", "expand"})
_LIST_PARAMS = frozenset({"limit", "starting_after", "ending_before", "email", "created", "expand", "test_clock"})
_ADDRESS_KEYS = ("city", "country", "line1", "line2", "postal_code", "state")
# Stripe is lenient about email shape; this rejects the obviously broken.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _blank() -> Obj:
    return {
        "id": rand_id("cus_"),
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": int(time.time()),
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "invoice_prefix": invoice_prefix(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


# -- validation ---------------------------------------------------------------------


def _changes(params: Obj, current: Obj) -> Obj:
    """Validated new values for the fields `params` touches (metadata merged)."""
    out: Obj = {}
    for name, raw in params.items():
        if name not in _WRITABLE:
            raise unknown_param(name)
        if name in _STRING_LIMITS:
            out[name] = _string(name, raw)
        elif name == "metadata":
            out[name] = merge_metadata(current["metadata"], raw)
        elif name == "address":
            out[name] = _address(raw)
        elif name == "preferred_locales":
            out[name] = _locales(raw)
    if out.get("email") is not None and not _EMAIL.match(out["email"]):
        raise invalid(f"Invalid email address: {out['email']}", param="email", code="email_invalid")
    return out


def _string(name: str, raw: Any) -> str | None:
    if not isinstance(raw, str):
        raise invalid(f"Invalid string: {raw!r}", param=name)
    limit = _STRING_LIMITS[name]
    if len(raw) > limit:
        shown = raw[:limit] + "..."
        if name == "email":
            raise invalid(f"Invalid email address: {shown}", param=name, code="email_invalid")
        raise invalid(f"Invalid string: {shown}; must be at most {limit} characters", param=name)
    # Stripe treats an empty string as "unset this field".
    return raw or None


def _address(raw: Any) -> Obj | None:
    if raw == "":
        return None
    if not isinstance(raw, dict):
        raise invalid("Invalid hash", param="address")
    for key, value in raw.items():
        if key not in _ADDRESS_KEYS:
            raise unknown_param(f"address[{key}]")
        if not isinstance(value, str):
            raise invalid(f"Invalid string: {value!r}", param=f"address[{key}]")
    return {key: (raw.get(key) or None) for key in _ADDRESS_KEYS}


def _locales(raw: Any) -> list[str]:
    if raw == "":
        return []
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise invalid("Invalid array", param="preferred_locales")
    return list(raw)


def _check_rejected(customer: Obj, pattern: re.Pattern[str] | None) -> None:
    if pattern is None:
        return
    for field in ("name", "email"):
        value = customer.get(field)
        if value and pattern.search(value):
            raise invalid(f"Invalid {field}: '{value}' is not allowed by this account.", param=field)


# -- operations ---------------------------------------------------------------------


def create(store: Store, params: Obj, origin: Origin, reject: re.Pattern[str] | None = None) -> Obj:
    customer = _blank()
    customer.update(_changes(params, customer))
    customer["livemode"] = origin.livemode
    _check_rejected(customer, reject)
    store.add_customer(customer)
    store.record_event("customer.created", customer, origin)
    return customer


def update(store: Store, ident: str, params: Obj, origin: Origin, reject: re.Pattern[str] | None = None) -> Obj:
    current = store.customers.get(ident)
    if current is None:
        raise missing("customer", ident)
    changes = _changes(params, current)
    previous = _previous(current, changes)
    if not previous:
        # Nothing changed: Stripe answers with the object and records no event.
        return current
    customer = {**current, **changes}
    _check_rejected(customer, reject)
    store.replace_customer(customer)
    store.record_event("customer.updated", customer, origin, previous)
    return customer


def _previous(current: Obj, changes: Obj) -> Obj:
    """`previous_attributes`: old values of changed fields; metadata per changed key."""
    previous: Obj = {}
    for name, value in changes.items():
        old = current[name]
        if value == old:
            continue
        if name == "metadata":
            keys = {k for k in old.keys() | value.keys() if old.get(k) != value.get(k)}
            previous[name] = {k: old.get(k) for k in sorted(keys)}
        else:
            previous[name] = old
    return previous


def delete(store: Store, ident: str, origin: Origin) -> Obj:
    if ident not in store.customers:
        raise missing("customer", ident)
    old = store.remove_customer(ident)
    # The event carries the customer as it was, like Stripe's customer.deleted.
    store.record_event("customer.deleted", old, origin)
    return deleted_stub(ident)


def deleted_stub(ident: str) -> Obj:
    return {"id": ident, "object": "customer", "deleted": True}


def retrieve(store: Store, ident: str) -> Obj:
    customer = store.customers.get(ident)
    if customer is not None:
        return customer
    if ident in store.deleted:
        return deleted_stub(ident)
    raise missing("customer", ident)


def list_customers(store: Store, params: Obj) -> Obj:
    for name in params:
        if name not in _LIST_PARAMS:
            raise unknown_param(name)
    created = range_filter(params, "created")
    keep = (lambda c: created(c["created"])) if created else None
    email = params.get("email")
    log = store.customer_log
    get = store.customers.get
    if isinstance(email, str):
        page, more = _list_by_email(store, email, keep, params)
    else:
        page, more = paginate(log.ids, log.index, get, keep, params, "customer")
    return list_body(page, more, "/v1/customers")


def _list_by_email(store: Store, email: str, keep: Any, params: Obj) -> tuple[list[Obj], bool]:
    ids = store.by_email.get(email, [])
    cursor = params.get("starting_after") or params.get("ending_before")
    if cursor and cursor not in ids:
        # Cursor is not in the index (its email changed): fall back to a full scan.
        def keep_email(c: Obj) -> bool:
            return bool(c.get("email") == email and (keep is None or keep(c)))

        log = store.customer_log
        return paginate(log.ids, log.index, store.customers.get, keep_email, params, "customer")

    def index_of(ident: str) -> int | None:
        return ids.index(ident) if ident in ids else None

    return paginate(ids, index_of, store.customers.get, keep, params, "customer")
