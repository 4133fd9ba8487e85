"""Event listing and retrieval (events are recorded by the resources themselves)."""

from __future__ import annotations

from collections.abc import Callable

from twoway.emulators.stripe.errors import invalid, missing, unknown_param
from twoway.emulators.stripe.paging import list_body, paginate, range_filter
from twoway.emulators.stripe.state import Obj, Store

_LIST_PARAMS = frozenset(
    {"limit", "starting_after", "ending_before", "type", "types", "created", "delivery_success", "expand"}
)


def retrieve(store: Store, ident: str) -> Obj:
    event = store.events.get(ident)
    if event is None:
        raise missing("event", ident)
    return event


def type_matcher(pattern: str) -> Callable[[str], bool]:
    # Stripe allows one `*` wildcard, e.g. `customer.*`.
    if "*" in pattern:
        head, _, tail = pattern.partition("*")
        return lambda t: t.startswith(head) and t.endswith(tail) and len(t) >= len(head) + len(tail)
    return lambda t: t == pattern


def list_events(store: Store, params: Obj) -> Obj:
    for name in params:
        if name not in _LIST_PARAMS:
            raise unknown_param(name)
    checks: list[Callable[[Obj], bool]] = []
    type_, types = params.get("type"), params.get("types")
    if type_ is not None and types is not None:
        raise invalid("You may only specify one of these parameters: type, types.", param="types")
    if isinstance(type_, str):
        match = type_matcher(type_)
        checks.append(lambda e: match(e["type"]))
    if types is not None:
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise invalid("Invalid array", param="types")
        wanted = set(types)
        checks.append(lambda e: e["type"] in wanted)
    created = range_filter(params, "created")
    if created is not None:
        checks.append(lambda e: created(e["created"]))
    keep = (lambda e: all(c(e) for c in checks)) if checks else None
    log = store.event_log
    page, more = paginate(log.ids, log.index, store.events.get, keep, params, "event")
    return list_body(page, more, "/v1/events")
