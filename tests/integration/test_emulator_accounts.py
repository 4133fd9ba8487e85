"""Accounts in the Stripe emulator, through the official stripe SDK: each account's own objects, events,
idempotency keys and limits; Connect (the platform key + `Stripe-Account`, Connect webhook endpoints);
revoked and rolled keys; a deauthorized connected account; accounts in the state file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from tests.integration import test_emulator
from tests.integration.test_emulator import KEY, Emulator, Receiver, admin, sdk_for, wait_for
from tests.integration.test_emulator_limits import _refused

emulator = test_emulator.emulator  # the same module-scoped emulator fixture, one of this module's own


@pytest.fixture(autouse=True)
def _clean(emulator: Emulator) -> None:
    httpx.post(emulator.base + "/_emulator/reset", json={"endpoints": True, "accounts": True}).raise_for_status()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


def new_account(emu: Emulator) -> dict[str, str]:
    account = admin(emu, "POST", "/_emulator/accounts")
    assert account["id"].startswith("acct_") and account["secret_key"].startswith("sk_test_")
    return dict(account)


def client_for(emu: Emulator, key: str = KEY, stripe_account: str | None = None) -> Any:
    return stripe.StripeClient(key, base_addresses={"api": emu.base}, max_network_retries=0,
                               stripe_account=stripe_account)


def refusal(call: Any) -> stripe.StripeError:
    with pytest.raises(stripe.StripeError) as caught:
        call()
    return caught.value




def _receiver(receivers: list[Receiver]) -> Receiver:
    r = Receiver()
    receivers.append(r)
    return r


def test_two_accounts_see_only_their_own_objects_events_and_idempotency_keys(emulator: Emulator) -> None:
    a, b = new_account(emulator), new_account(emulator)
    ca, cb, platform = client_for(emulator, a["secret_key"]), client_for(emulator, b["secret_key"]), sdk_for(emulator)
    assert ca.v1.accounts.retrieve_current().id == a["id"]  # GET /v1/account: the key's account
    mine = ca.v1.customers.create({"name": "A's", "email": "same@example.com"}, {"idempotency_key": "k1"})
    # The same idempotency key (even with other parameters) in another account is another request.
    theirs = cb.v1.customers.create({"name": "B's", "email": "same@example.com"}, {"idempotency_key": "k1"})
    assert mine.id != theirs.id

    assert [c.id for c in ca.v1.customers.list().data] == [mine.id]
    assert [c.id for c in cb.v1.customers.list().data] == [theirs.id]
    assert platform.v1.customers.list().data == []
    assert refusal(lambda: cb.v1.customers.retrieve(mine.id)).http_status == 404
    assert [c.id for c in ca.v1.customers.search({"query": "email:'same@example.com'"}).data] == [mine.id]
    assert [e.data.object.id for e in ca.v1.events.list().data] == [mine.id]
    assert [e.data.object.id for e in cb.v1.events.list().data] == [theirs.id]
    assert admin(emulator, "GET", f"/_emulator/customers?account={b['id']}")[0]["id"] == theirs.id

    listed = {x["id"]: x for x in admin(emulator, "GET", "/_emulator/accounts")}
    assert listed[a["id"]]["customers"] == 1 and not listed[a["id"]]["platform"]
    assert sum(1 for x in listed.values() if x["platform"]) == 1


def test_the_platform_key_with_stripe_account_acts_on_that_account(emulator: Emulator) -> None:
    a, b = new_account(emulator), new_account(emulator)
    platform = sdk_for(emulator)
    via_connect = platform.v1.customers.create({"name": "by Connect"}, {"stripe_account": a["id"]})
    own = client_for(emulator, a["secret_key"])
    assert own.v1.customers.retrieve(via_connect.id).name == "by Connect"
    assert platform.v1.customers.list().data == []  # not the platform's
    connected = client_for(emulator, stripe_account=a["id"])  # StripeClient(..., stripe_account=...)
    assert [e.type for e in connected.v1.events.list().data] == ["customer.created"]
    assert connected.v1.accounts.retrieve_current().id == a["id"]

    # An account's own key reaches only its own account; an unknown account is no better.
    for exc in (refusal(lambda: own.v1.customers.list({}, {"stripe_account": b["id"]})),
                refusal(lambda: platform.v1.customers.list({}, {"stripe_account": "acct_nobody"}))):
        assert isinstance(exc, stripe.PermissionError) and exc.http_status == 403
        assert (exc.json_body or {})["error"]["code"] == "account_invalid"


def test_connect_endpoints_get_every_connected_accounts_events_with_account(
    emulator: Emulator, receivers: list[Receiver]
) -> None:
    a, b = new_account(emulator), new_account(emulator)
    platform = sdk_for(emulator)
    connect_hook, a_hook, platform_hook = (_receiver(receivers) for _ in range(3))
    connect = platform.v1.webhook_endpoints.create({"url": connect_hook.url, "enabled_events": ["*"], "connect": True})
    platform.v1.webhook_endpoints.create({"url": platform_hook.url, "enabled_events": ["*"]})
    own = client_for(emulator, a["secret_key"])
    a_endpoint = own.v1.webhook_endpoints.create({"url": a_hook.url, "enabled_events": ["customer.created"]})

    made_a = own.v1.customers.create({"name": "in A"})
    made_b = platform.v1.customers.create({"name": "in B"}, {"stripe_account": b["id"]})
    made_platform = platform.v1.customers.create({"name": "the platform's"})

    assert wait_for(lambda: len(connect_hook.got) == 2 and len(a_hook.got) == 1 and len(platform_hook.got) == 1)
    got = {}
    for headers, body in connect_hook.got:
        event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], connect.secret)
        got[event.data.object.id] = event.account
    assert got == {made_a.id: a["id"], made_b.id: b["id"]}
    headers, body = a_hook.got[0]
    own_event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], a_endpoint.secret)
    assert own_event.data.object.id == made_a.id and "account" not in own_event
    assert platform_hook.events()[0]["data"]["object"]["id"] == made_platform.id
    assert [e.id for e in own.v1.webhook_endpoints.list().data] == [a_endpoint.id]  # endpoints are per account


def test_revoked_keys_answer_401_and_a_rolled_key_works(emulator: Emulator) -> None:
    a = new_account(emulator)
    old = client_for(emulator, a["secret_key"])
    customer = old.v1.customers.create({"name": "kept"})
    admin(emulator, "POST", f"/_emulator/accounts/{a['id']}/revoke_keys")
    exc = refusal(lambda: old.v1.customers.list())
    assert isinstance(exc, stripe.AuthenticationError) and exc.http_status == 401
    assert "Invalid API Key" in (exc.json_body or {})["error"]["message"]
    # The platform still reaches it by Connect: a revoked key is the account's own, not the platform's.
    assert sdk_for(emulator).v1.customers.retrieve(customer.id, {}, {"stripe_account": a["id"]}).name == "kept"

    rolled = admin(emulator, "POST", f"/_emulator/accounts/{a['id']}/roll_keys")
    assert rolled["id"] == a["id"] and rolled["secret_key"] != a["secret_key"]
    assert client_for(emulator, rolled["secret_key"]).v1.customers.retrieve(customer.id).name == "kept"
    assert refusal(lambda: old.v1.customers.list()).http_status == 401
    assert httpx.post(emulator.base + "/_emulator/accounts/acct_nobody/revoke_keys").status_code == 404


def test_a_deauthorized_account_refuses_connect_calls_and_tells_connect_endpoints(
    emulator: Emulator, receivers: list[Receiver]
) -> None:
    a = new_account(emulator)
    hook = _receiver(receivers)
    platform = sdk_for(emulator)
    platform.v1.webhook_endpoints.create({"url": hook.url, "enabled_events": ["*"], "connect": True})
    connected = client_for(emulator, stripe_account=a["id"])
    connected.v1.customers.create({"name": "before"})

    answer = admin(emulator, "POST", f"/_emulator/accounts/{a['id']}/deauthorize")
    assert answer["deauthorized"] is True
    exc = refusal(lambda: connected.v1.customers.list())
    assert isinstance(exc, stripe.PermissionError) and exc.http_status == 403
    assert (exc.json_body or {})["error"]["code"] == "account_invalid"
    assert wait_for(lambda: len(hook.got) == 2)
    deauthorized = hook.events()[1]
    assert deauthorized["type"] == "account.application.deauthorized" and deauthorized["account"] == a["id"]
    assert deauthorized["id"] == answer["event"] and deauthorized["data"]["object"]["object"] == "application"
    # Its own key still works, and its events no longer reach the platform.
    client_for(emulator, a["secret_key"]).v1.customers.create({"name": "after"})

    admin(emulator, "POST", f"/_emulator/accounts/{a['id']}/authorize")  # connected again
    assert [c.name for c in connected.v1.customers.list().data] == ["after", "before"]
    assert len(hook.got) == 2


def test_limits_are_per_account() -> None:
    emu = Emulator("--limits", "live", "--endpoint-limit", "POST /v1/customers=3")
    try:
        a, b = new_account(emu), new_account(emu)
        ca, cb = client_for(emu, a["secret_key"]), client_for(emu, b["secret_key"])
        refusals = [_refused(lambda: ca.v1.customers.create({"name": "a"})) for _ in range(10)]
        assert sum(1 for r in refusals if r) >= 5  # A's bucket holds 3 and refills at 3/s
        platform = sdk_for(emu)
        for i in range(3):  # B's and the platform's buckets are their own, and full
            cb.v1.customers.create({"name": f"b{i}"})
            platform.v1.customers.create({"name": f"p{i}"})
        # Connect calls spend the connected account's budget: B's is (nearly) spent now.
        connect = [_refused(lambda: platform.v1.customers.create({"name": "b"}, {"stripe_account": b["id"]}))
                   for _ in range(5)]
        exc = next(r for r in connect if r)
        assert {k.lower(): v for k, v in (exc.headers or {}).items()}["twoway-emulator-limiter"] == \
            "endpoint:POST /v1/customers"
    finally:
        emu.stop()


def test_the_state_file_keeps_accounts_keys_and_their_objects(tmp_path: Path) -> None:
    state = tmp_path / "stripe.json"
    first = Emulator("--state-file", str(state))
    try:
        a, gone = new_account(first), new_account(first)
        customer = client_for(first, a["secret_key"]).v1.customers.create({"name": "durable"})
        admin(first, "POST", f"/_emulator/accounts/{gone['id']}/revoke_keys")
        admin(first, "POST", f"/_emulator/accounts/{gone['id']}/deauthorize")
        platform_id = client_for(first).v1.accounts.retrieve_current().id
    finally:
        first.stop()
    second = Emulator("--state-file", str(state))
    try:
        assert client_for(second, a["secret_key"]).v1.customers.retrieve(customer.id).name == "durable"
        assert client_for(second).v1.customers.list().data == []
        assert client_for(second).v1.accounts.retrieve_current().id == platform_id
        assert refusal(lambda: client_for(second, gone["secret_key"]).v1.customers.list()).http_status == 401
        assert refusal(lambda: client_for(second, stripe_account=gone["id"]).v1.customers.list()).http_status == 403
    finally:
        second.stop()
