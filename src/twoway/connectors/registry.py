"""Connectors are chosen by name: a plain lookup, so a new system is a new entry, not an engine change."""

from __future__ import annotations

from collections.abc import Callable

from twoway.connectors.base import Connector
from twoway.settings import Settings


def _stripe(settings: Settings) -> Connector:
    from twoway.connectors.stripe.connector import StripeConnector

    return StripeConnector.from_settings(settings)


FACTORIES: dict[str, Callable[[Settings], Connector]] = {"stripe": _stripe}


def enabled_systems(settings: Settings) -> list[str]:
    return [name for name in FACTORIES if name != "stripe" or settings.stripe_key()]


def build(name: str, settings: Settings) -> Connector:
    try:
        factory = FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown connector {name!r}; known: {', '.join(sorted(FACTORIES))}")
    return factory(settings)
