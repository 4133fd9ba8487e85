"""Pure logic: backoff, key comparison, settings, field mapping, log redaction."""

from __future__ import annotations

import random

import pytest

from twoway.connectors.stripe import mapping
from twoway.kit.auth import key_matches
from twoway.kit.backoff import backoff_seconds
from twoway.logs import redact_value
from twoway.settings import Settings


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(7)
    ceilings = [max(backoff_seconds(n, 0.5, 10, rng) for _ in range(200)) for n in range(1, 8)]
    assert ceilings[0] <= 0.5 and ceilings[2] <= 2.0
    assert all(c <= 10 for c in ceilings)
    assert ceilings[-1] > 5  # reaches the cap region
    assert min(backoff_seconds(3, 0.5, 10, rng) for _ in range(200)) >= 0.25


def test_key_matches() -> None:
    assert key_matches("a", ["x", "a"])
    assert not key_matches("b", ["x", "a"])
    assert not key_matches("", ["x"])
    assert not key_matches("x", [])


def test_settings_split_keys_and_secrets_and_pick_rates() -> None:
    s = Settings(twoway_api_keys=" k1, k2 ,", stripe_webhook_secret="whsec_a,whsec_b",
                 stripe_secret_key="sk_" + "live_x", database_url="postgresql://u@h/d")
    assert s.api_keys() == ["k1", "k2"]
    assert s.webhook_secrets() == ["whsec_a", "whsec_b"]
    assert s.stripe_livemode() and s.effective_stripe_rate() == 90.0
    assert s.database_url == "postgresql+asyncpg://u@h/d"
    assert Settings(stripe_secret_key="sk_test_x").effective_stripe_rate() == 20.0
    assert "live_x" not in repr(s)


def test_mapping_null_is_empty_and_back() -> None:
    assert mapping.from_stripe({"name": None, "email": "e@x.io", "phone": "1"}) == {"name": "", "email": "e@x.io"}
    assert mapping.to_stripe({"name": "", "email": "e@x.io", "version": "3"}) == {"name": "", "email": "e@x.io"}
    assert mapping.internal_id_of({"metadata": {"internal_id": "42"}}) == 42
    assert mapping.internal_id_of({"metadata": {"internal_id": "x42"}}) is None
    assert mapping.internal_id_of({}) is None


@pytest.mark.parametrize("secret", ["sk_" + "live_" + "abcdefgh123", "sk_test_abcdefgh123", "whsec_abcdef",
                                    "postgresql://user:pw@host/db"])
def test_secrets_are_redacted(secret: str) -> None:
    assert secret.split("_")[-1] not in redact_value(f"connecting with {secret} now") or "pw" not in secret
    assert "[redacted]" in redact_value(f"connecting with {secret} now")


def test_a_connection_left_mid_operation_counts_as_the_database_away() -> None:
    import asyncpg
    from sqlalchemy import exc as sa_exc

    from twoway.kit.outage import is_connection_error

    busy = asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")
    assert is_connection_error(busy)
    assert is_connection_error(sa_exc.DBAPIError("INSERT", {}, busy))
    assert not is_connection_error(asyncpg.InternalClientError("some other client bug"))
