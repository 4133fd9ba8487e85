"""Connectors are chosen by name: a plain lookup, so a new system is a new entry, not an engine change."""

from __future__ import annotations

from collections.abc import Callable

from twoway.connectors.base import Connector
from twoway.settings import Settings


def _stripe(settings: Settings) -> Connector:
    from twoway.connectors.stripe.connector import StripeConnector

    return StripeConnector.from_settings(settings)


def _salesforce(settings: Settings) -> Connector:
    from twoway.connectors.salesforce.connector import SalesforceConnector

    return SalesforceConnector.from_settings(settings)


FACTORIES: dict[str, Callable[[Settings], Connector]] = {"stripe": _stripe, "salesforce": _salesforce}
CONFIGURED: dict[str, Callable[[Settings], bool]] = {
    "stripe": lambda s: bool(s.stripe_key()),
    "salesforce": lambda s: s.salesforce_configured(),
}


def enabled_systems(settings: Settings) -> list[str]:
    """TWOWAY_CONNECTORS when set (unknown names are an error); otherwise every configured system."""
    chosen = settings.connector_names()
    if chosen is None:
        return [name for name in FACTORIES if CONFIGURED[name](settings)]
    unknown = [n for n in chosen if n not in FACTORIES]
    if unknown:
        raise ValueError(f"unknown connector(s) in TWOWAY_CONNECTORS: {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(FACTORIES))}")
    return list(dict.fromkeys(chosen))


def build(name: str, settings: Settings) -> Connector:
    try:
        factory = FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown connector {name!r}; known: {', '.join(sorted(FACTORIES))}")
    return factory(settings)
