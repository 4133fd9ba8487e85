"""Each connector dispatches by kind through its handler table: the table covers exactly the kinds it
declares, and every event type it parses has one handler. Built from settings; no call goes out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import timedelta
from typing import Any

import pytest

from twoway.connectors import registry
from twoway.connectors.base import BatchWrites, Connector, EventTable, InboundEvent
from twoway.connectors.stripe import connector as stripe_connector
from twoway.settings import Settings

SETTINGS = Settings(stripe_secret_key="sk_test_x", salesforce_client_id="c", salesforce_client_secret="s",
                    database_url=None)


@pytest.fixture(params=sorted(registry.FACTORIES))
async def connector(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    built = registry.build(request.param, SETTINGS)
    yield built
    await built.close()


def _patterns(connector: Any) -> Iterator[tuple[str, Any]]:
    for handler in connector.handlers.values():
        for pattern in handler.event_types:
            yield pattern, handler


async def test_the_table_covers_exactly_the_declared_kinds(connector: Any) -> None:
    assert connector.kinds and set(connector.handlers) == set(connector.kinds)
    assert all(handler.kind == kind for kind, handler in connector.handlers.items())


async def test_each_event_type_has_one_handler(connector: Any) -> None:
    table = EventTable(connector.handlers.values())  # raises when two handlers claim a type
    for pattern, handler in _patterns(connector):
        example = pattern.replace("*", "anything")
        assert table.handler(example) is handler, pattern


async def test_capabilities_are_declared_fields(connector: Connector) -> None:
    assert connector.batch_writes == isinstance(connector, BatchWrites)
    assert isinstance(connector.webhooks, bool) and isinstance(connector.polls, bool)
    assert connector.webhooks or connector.polls  # changes reach us one way or another
    assert connector.max_in_flight is None or connector.max_in_flight > 0
    assert timedelta(0) < connector.idempotency_window


def test_stripe_events_go_to_their_kind() -> None:
    table = stripe_connector.EVENTS
    assert stripe_connector.KINDS == ("customer", "invoice")
    assert {t: getattr(table.handler(t), "kind", None) for t in (
        "customer.updated", "customer.deleted", "invoice.paid", "invoiceitem.created",
        "customer.subscription.created", "charge.succeeded", None)} == {
        "customer.updated": "customer", "customer.deleted": "customer", "invoice.paid": "invoice",
        "invoiceitem.created": "invoice", "customer.subscription.created": None, "charge.succeeded": None,
        None: None}
    # Stripe keeps idempotency keys for 24 h.
    assert stripe_connector.StripeConnector.idempotency_window == timedelta(hours=23)


class _Parses:
    def __init__(self, kind: str, *event_types: str) -> None:
        self.kind = kind
        self.event_types = event_types

    def event(self, payload: Mapping[str, Any]) -> InboundEvent | None:
        return None


@pytest.mark.parametrize("claims", [
    [("a", "x.created"), ("b", "x.created")],
    [("a", "x.created"), ("b", "x.*")],
    [("a", "x.*"), ("b", "x.created")],
    [("a", "x.*"), ("b", "x.y.*")],
])
def test_a_type_claimed_twice_is_refused(claims: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError, match="two handlers"):
        EventTable(_Parses(kind, pattern) for kind, pattern in claims)


def test_prefixes_stop_at_the_dot() -> None:
    table = EventTable([_Parses("invoice", "invoice.*"), _Parses("item", "invoiceitem.*")])
    assert getattr(table.handler("invoiceitem.created"), "kind", None) == "item"
    assert getattr(table.handler("invoice.created"), "kind", None) == "invoice"
