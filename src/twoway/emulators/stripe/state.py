"""One account's data, in memory: customers, invoices (in `book`), events, webhook endpoints.

Customer and event dicts are never mutated after they are stored (updates store a
new dict), so events can share them and a state snapshot is a cheap shallow copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twoway.emulators.stripe.book import InvoiceBook
from twoway.emulators.stripe.ids import rand_id
from twoway.emulators.stripe.order import Log

API_VERSION = "2026-10-28.endive"

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a change came from; it ends up in the event's `request` field."""

    request_id: str | None
    idempotency_key: str | None = None
    livemode: bool = False


def endpoint_matches(endpoint: Obj, event_type: str) -> bool:
    if endpoint.get("status") != "enabled":
        return False
    enabled = endpoint["enabled_events"]
    return "*" in enabled or event_type in enabled


@dataclass(frozen=True, slots=True)
class Target:
    """Where one event goes: an endpoint, looked up again in its account's `endpoints` at each attempt (it may
    be gone or disabled by then), and the connected account a Connect endpoint's copy names (`account`)."""

    endpoints: dict[str, Obj]
    endpoint_id: str
    account: str | None = None


def no_targets(_event_type: str) -> list[Target]:
    return []


class Store:
    def __init__(self, max_events: int = 100_000) -> None:
        self.max_events = max_events
        self.customers: dict[str, Obj] = {}
        self.deleted: set[str] = set()
        self.customer_log = Log()
        self.by_email: dict[str, list[str]] = {}
        self.events: dict[str, Obj] = {}
        self.event_log = Log()
        self.endpoints: dict[str, Obj] = {}
        # Called with each recorded event and its targets, chosen when it is recorded (so an account
        # deauthorized right after its `account.application.deauthorized` event still sends that event).
        self.listeners: list[Callable[[Obj, list[Target]], None]] = []
        # The platform's Connect endpoints that also get this account's events (set by accounts.py).
        self.upstream: Callable[[str], list[Target]] = no_targets
        self.book = InvoiceBook(self._touch)
        self.dirty = False

    def _touch(self) -> None:
        self.dirty = True

    # -- customers -------------------------------------------------------------------

    def add_customer(self, customer: Obj) -> None:
        self.customers[customer["id"]] = customer
        self.customer_log.append(customer["id"])
        self._index_email(customer["id"], None, customer.get("email"))
        self.dirty = True

    def replace_customer(self, customer: Obj) -> Obj:
        old = self.customers[customer["id"]]
        self.customers[customer["id"]] = customer
        self._index_email(customer["id"], old.get("email"), customer.get("email"))
        self.dirty = True
        return old

    def remove_customer(self, ident: str) -> Obj:
        old = self.customers.pop(ident)
        self.deleted.add(ident)
        self._index_email(ident, old.get("email"), None)
        self.dirty = True
        return old

    def _index_email(self, ident: str, old: str | None, new: str | None) -> None:
        if old == new:
            return
        if old is not None:
            ids = self.by_email.get(old, [])
            if ident in ids:
                ids.remove(ident)
            if not ids:
                self.by_email.pop(old, None)
        if new is not None:
            ids = self.by_email.setdefault(new, [])
            ids.append(ident)
            # Keep creation order so the email-filtered list pages like the full one;
            # only an update moving an older customer onto this email breaks it.
            pos = self.customer_log.index
            if len(ids) > 1 and (pos(ids[-2]) or 0) > (pos(ident) or 0):
                ids.sort(key=lambda i: pos(i) or 0)

    # -- events ----------------------------------------------------------------------

    def audience(self, event_type: str) -> list[Target]:
        """This account's own endpoints (not its Connect ones: those get connected accounts' events only)."""
        own = [
            Target(self.endpoints, ep["id"])
            for ep in self.endpoints.values()
            if not ep.get("connect") and endpoint_matches(ep, event_type)
        ]
        return own + self.upstream(event_type)

    def record_event(self, type_: str, obj: Obj, origin: Origin, previous: Obj | None = None) -> Obj:
        data: Obj = {"object": obj}
        targets = self.audience(type_)
        if previous is not None:
            data["previous_attributes"] = previous
        event: Obj = {
            "id": rand_id("evt_", 24),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": data,
            "livemode": origin.livemode,
            "pending_webhooks": len(targets),
            "request": {"id": origin.request_id, "idempotency_key": origin.idempotency_key},
            "type": type_,
        }
        self.add_event(event)
        for listener in self.listeners:
            listener(event, targets)
        return event

    def add_event(self, event: Obj) -> None:
        self.events[event["id"]] = event
        self.event_log.append(event["id"])
        # Trim in chunks so the list copy is amortised over many appends.
        if len(self.event_log.ids) > self.max_events + max(1, self.max_events // 10):
            for ident in self.event_log.trim(self.max_events):
                self.events.pop(ident, None)

    # -- lifecycle -------------------------------------------------------------------

    def reset(self, endpoints: bool) -> None:
        self.customers.clear()
        self.deleted.clear()
        self.customer_log.clear()
        self.by_email.clear()
        self.events.clear()
        self.event_log.clear()
        self.book.clear()
        if endpoints:
            self.endpoints.clear()
        self.dirty = True

    def snapshot(self, max_events: int = 10_000) -> Obj:
        """A JSON-ready copy; shallow is enough since stored dicts are never mutated."""
        event_ids = self.event_log.ids[-max_events:]
        return {
            "order": list(self.customer_log.ids),
            "customers": dict(self.customers),
            "endpoints": list(self.endpoints.values()),
            "events": [self.events[i] for i in event_ids if i in self.events],
            "billing": self.book.snapshot(),
        }

    def restore(self, data: Obj) -> None:
        self.reset(endpoints=True)
        live: dict[str, Obj] = data.get("customers", {})
        for ident in data.get("order", []):
            if ident in live:
                self.add_customer(live[ident])
            else:
                self.customer_log.append(ident)
                self.deleted.add(ident)
        for ep in data.get("endpoints", []):
            self.endpoints[ep["id"]] = ep
        for event in data.get("events", []):
            self.add_event(event)
        self.book.restore(data.get("billing", {}))
        self.dirty = False
