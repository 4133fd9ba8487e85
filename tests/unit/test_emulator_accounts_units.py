"""The Stripe emulator's accounts without I/O: which account a key (and `Stripe-Account`) acts on, the targets
of a connected account's events, the state file's round trip, and limit buckets per account."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from twoway.emulators.stripe import customers, endpoints
from twoway.emulators.stripe.accounts import DEAUTHORIZED, Accounts
from twoway.emulators.stripe.errors import StripeError
from twoway.emulators.stripe.faults import Faults
from twoway.emulators.stripe.limits import Limiters
from twoway.emulators.stripe.state import Obj, Origin, Target

Heard = list[tuple[str, list[Target]]]


def _accounts() -> tuple[Accounts, Heard]:
    heard: Heard = []
    return Accounts(1000, 3600, lambda event, targets: heard.append((event["type"], targets))), heard


def _status(call: Callable[[], object]) -> int:
    with pytest.raises(StripeError) as caught:
        call()
    return caught.value.status


def test_keys_and_the_stripe_account_header_choose_the_account() -> None:
    accounts, _ = _accounts()
    a, a_key = accounts.create()
    b, b_key = accounts.create()
    platform = accounts.platform
    assert accounts.resolve("sk_test_anything", None) is platform  # any key nobody owns: as before accounts
    assert accounts.resolve(a_key, None) is a and accounts.resolve(a_key, a.id) is a
    assert accounts.resolve("sk_test_anything", b.id) is b  # Connect
    assert _status(lambda: accounts.resolve(a_key, b.id)) == 403  # an account's key reaches only itself
    assert _status(lambda: accounts.resolve("sk_test_anything", "acct_nobody")) == 403

    new_key = accounts.roll_keys(a)
    assert _status(lambda: accounts.resolve(a_key, None)) == 401 and accounts.resolve(new_key, None) is a
    accounts.revoke_keys(b)
    assert _status(lambda: accounts.resolve(b_key, None)) == 401
    accounts.deauthorize(b)
    assert _status(lambda: accounts.resolve("sk_test_anything", b.id)) == 403
    accounts.authorize(b)
    assert accounts.resolve("sk_test_anything", b.id) is b


def test_connected_accounts_events_reach_the_platforms_connect_endpoints_until_deauthorized() -> None:
    accounts, heard = _accounts()
    a, _ = accounts.create()
    platform = accounts.platform.store
    hook: Obj = {"url": "http://127.0.0.1:9/h", "enabled_events": ["*"]}
    connect = endpoints.create(platform, {**hook, "connect": "true"}, Origin(None))
    own = endpoints.create(platform, hook, Origin(None))
    customers.create(a.store, {"name": "x"}, Origin(None), None)
    customers.create(platform, {"name": "y"}, Origin(None), None)
    accounts.deauthorize(a)
    customers.create(a.store, {"name": "z"}, Origin(None), None)

    def ends(targets: list[Target]) -> list[tuple[str, str | None]]:
        return [(t.endpoint_id, t.account) for t in targets]

    assert [(t, ends(targets)) for t, targets in heard] == [
        ("customer.created", [(connect["id"], a.id)]),
        ("customer.created", [(own["id"], None)]),  # the platform's own events skip its Connect endpoints
        (DEAUTHORIZED, [(connect["id"], a.id)]),  # sent before the account is cut off
        ("customer.created", []),
    ]


def test_the_state_file_round_trip_keeps_accounts_keys_and_data() -> None:
    accounts, _ = _accounts()
    a, key = accounts.create()
    b, old = accounts.create()
    accounts.roll_keys(b)
    accounts.deauthorize(b)
    made = customers.create(a.store, {"name": "kept"}, Origin(None), None)
    snapshot = accounts.snapshot()
    again, _ = _accounts()
    again.restore(snapshot)
    assert again.platform.id == accounts.platform.id and not again.dirty
    assert again.resolve(key, None).store.customers[made["id"]]["name"] == "kept"
    assert _status(lambda: again.resolve(old, None)) == 401
    assert _status(lambda: again.resolve("sk_test_anything", b.id)) == 403


def test_limit_buckets_are_per_account() -> None:
    limiters, faults = Limiters(), Faults()
    faults.merge({"limits": "live", "endpoint_limits": {"POST /v1/customers": 2}})
    got = {acct: [limiters.admit(faults, "POST /v1/customers", False, acct) is None for _ in range(3)]
           for acct in ("acct_a", "acct_b")}
    assert got == {"acct_a": [True, True, False], "acct_b": [True, True, False]}
