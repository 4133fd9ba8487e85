"""The Stripe emulator, driven over HTTP by the official stripe SDK."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

SRC = str(Path(__file__).resolve().parents[2] / "src")
KEY = "sk_test_emulator"


# -- harness ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    """A `python -m twoway.emulators.stripe` subprocess on a free port."""

    def __init__(self, *args: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cmd = [sys.executable, "-m", "twoway.emulators.stripe", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the readiness line
        assert f"listening on {self.base}" in line, line

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    emu = Emulator()
    yield emu
    emu.stop()


@pytest.fixture(autouse=True)
def _clean(emulator: Emulator) -> None:
    httpx.post(emulator.base + "/_emulator/reset", json={"endpoints": True}).raise_for_status()


def sdk_for(emulator: Emulator) -> Any:
    # No SDK retries: fault tests must see every injected error. Typed Any because
    # the SDK's Optional-heavy stubs would bury the assertions in casts.
    return stripe.StripeClient(KEY, base_addresses={"api": emulator.base}, max_network_retries=0)


@pytest.fixture
def client(emulator: Emulator) -> Any:
    return sdk_for(emulator)


def admin(emulator: Emulator, method: str, path: str, body: Any = None) -> Any:
    r = httpx.request(method, emulator.base + path, json=body)
    r.raise_for_status()
    return r.json()


def faults(emulator: Emulator, **knobs: Any) -> None:
    admin(emulator, "POST", "/_emulator/faults", knobs)


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _hooks(emulator: Any) -> dict[str, Any]:
    return dict(admin(emulator, "GET", "/_emulator/stats")["webhooks"])


class Receiver:
    """A webhook receiver recording (headers, body); fails the first `failures` posts."""

    def __init__(self, failures: int = 0) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.arrived: list[float] = []  # time.monotonic() of each post
        self.failures = failures
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    outer.got.append((dict(self.headers), body))
                    outer.arrived.append(time.monotonic())
                    fail = outer.failures > 0
                    outer.failures -= 1
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.got]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def subscribe(client: Any, url: str, events: list[str] | None = None) -> str:
    endpoint = client.v1.webhook_endpoints.create({"url": url, "enabled_events": events or ["*"]})
    assert endpoint.secret.startswith("whsec_")
    return endpoint.secret


# -- customers ----------------------------------------------------------------------

CUSTOMER_TYPES: dict[str, Any] = {
    "id": str,
    "object": str,
    "address": type(None),
    "balance": int,
    "created": int,
    "currency": type(None),
    "default_source": type(None),
    "delinquent": bool,
    "description": (str, type(None)),
    "discount": type(None),
    "email": (str, type(None)),
    "invoice_prefix": str,
    "invoice_settings": dict,
    "livemode": bool,
    "metadata": dict,
    "name": (str, type(None)),
    "next_invoice_sequence": int,
    "phone": (str, type(None)),
    "preferred_locales": list,
    "shipping": type(None),
    "tax_exempt": str,
    "test_clock": type(None),
}


def test_customer_has_stripes_fields_and_types(emulator: Emulator) -> None:
    r = httpx.post(
        emulator.base + "/v1/customers",
        data={"name": "Ada", "email": "ada@example.com", "metadata[internal_id]": "42"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 200
    assert r.headers["Request-Id"].startswith("req_")
    body = r.json()
    assert set(body) == set(CUSTOMER_TYPES)
    for field, kind in CUSTOMER_TYPES.items():
        assert isinstance(body[field], kind), field
    assert body["id"].startswith("cus_") and len(body["id"]) == 18
    assert body["object"] == "customer" and body["livemode"] is False
    assert len(body["invoice_prefix"]) == 8 and body["invoice_prefix"].isupper()
    assert body["metadata"] == {"internal_id": "42"}
    assert body["tax_exempt"] == "none" and body["preferred_locales"] == []
    assert body["invoice_settings"] == {
        "custom_fields": None,
        "default_payment_method": None,
        "footer": None,
        "rendering_options": None,
    }
    assert abs(body["created"] - time.time()) < 5


def test_crud_round_trip(client: Any) -> None:
    c = client.v1.customers.create(
        {
            "name": "Grace",
            "email": "grace@example.com",
            "phone": "+15550100",
            "address": {"line1": "1 Main St", "city": "Arlington", "country": "US"},
            "preferred_locales": ["en", "fr"],
        }
    )
    got = client.v1.customers.retrieve(c.id)
    assert (got.name, got.email, got.phone) == ("Grace", "grace@example.com", "+15550100")
    assert got.address.line1 == "1 Main St" and got.address.postal_code is None
    assert got.preferred_locales == ["en", "fr"]
    updated = client.v1.customers.update(c.id, {"name": "Grace H.", "description": "admiral"})
    assert (updated.name, updated.description, updated.email) == ("Grace H.", "admiral", "grace@example.com")
    cleared = client.v1.customers.update(c.id, {"phone": ""})
    assert cleared.phone is None
    deleted = client.v1.customers.delete(c.id)
    assert deleted.to_dict() == {"id": c.id, "object": "customer", "deleted": True}
    # Stripe answers a deleted customer with its deleted stub, and refuses updates.
    assert client.v1.customers.retrieve(c.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.update(c.id, {"name": "ghost"})
    assert exc.value.http_status == 404 and exc.value.code == "resource_missing"
    assert c.id not in [x.id for x in client.v1.customers.list({"limit": 100}).data]


def test_metadata_unset_with_empty_string(client: Any) -> None:
    c = client.v1.customers.create({"metadata": {"a": "1", "b": "2"}})
    c = client.v1.customers.update(c.id, {"metadata": {"a": "", "c": "3"}})
    assert c.metadata.to_dict() == {"b": "2", "c": "3"}
    c = client.v1.customers.update(c.id, {"metadata": ""})
    assert c.metadata.to_dict() == {}


def test_list_pages_newest_first_without_overlap(client: Any) -> None:
    created = [client.v1.customers.create({"name": f"P{i}"}).id for i in range(20)]
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 6}
        if after:
            params["starting_after"] = after
        page = client.v1.customers.list(params)
        pages += 1
        seen += [c.id for c in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert pages == 4
    assert seen == list(reversed(created))  # all seen, once, newest first
    # ending_before walks back towards newer objects.
    back = client.v1.customers.list({"limit": 6, "ending_before": seen[6]})
    assert [c.id for c in back.data] == seen[:6] and back.has_more is False
    assert len(list(client.v1.customers.list({"limit": 3}).auto_paging_iter())) == 20


def test_list_filters_email_and_created(client: Any) -> None:
    a = client.v1.customers.create({"email": "dup@example.com"})
    b = client.v1.customers.create({"email": "dup@example.com"})
    client.v1.customers.create({"email": "other@example.com"})
    got = client.v1.customers.list({"email": "dup@example.com"})
    assert [c.id for c in got.data] == [b.id, a.id]
    assert client.v1.customers.list({"email": "DUP@example.com"}).data == []  # case-sensitive
    now = int(time.time())
    assert len(client.v1.customers.list({"created": {"lte": now + 5}}).data) == 3
    assert client.v1.customers.list({"created": {"gt": now + 5}}).data == []


def test_search_by_email_name_and_metadata(client: Any) -> None:
    a = client.v1.customers.create({"name": "Jane Doe", "email": "jane@example.com", "metadata": {"k": "v"}})
    b = client.v1.customers.create({"name": "John Doe", "email": "john@example.com", "metadata": {"k": "w"}})
    ids = lambda q: [c.id for c in client.v1.customers.search({"query": q}).data]  # noqa: E731
    assert ids("email:'jane@example.com'") == [a.id]
    assert ids("name:'John Doe'") == [b.id]
    assert ids("metadata['k']:'w'") == [b.id]
    assert ids("name~'Doe' AND metadata['k']:'v'") == [a.id]
    assert ids("email:'nobody@example.com'") == []
    result = client.v1.customers.search({"query": "name~'Doe'"})
    assert result.object == "search_result" and result.next_page is None and not result.has_more


# -- events -------------------------------------------------------------------------


def test_events_record_created_updated_deleted(client: Any) -> None:
    c = client.v1.customers.create({"name": "Old", "metadata": {"keep": "1", "drop": "x"}})
    client.v1.customers.update(c.id, {"name": "New", "metadata": {"drop": "", "add": "y"}})
    client.v1.customers.update(c.id, {"name": "New"})  # no change: no event
    client.v1.customers.delete(c.id)
    events = client.v1.events.list({"type": "customer.*"}).data
    assert [e.type for e in events] == ["customer.deleted", "customer.updated", "customer.created"]
    deleted, updated, created = events
    assert created.data.object.id == c.id and created.data.object.name == "Old"
    assert updated.data.object.name == "New"
    assert updated.data.previous_attributes.to_dict() == {
        "name": "Old",
        "metadata": {"add": None, "drop": "x"},
    }
    assert deleted.data.object.id == c.id and deleted.data.object.name == "New"
    for e in events:
        assert e.id.startswith("evt_") and e.object == "event" and isinstance(e.created, int)
        assert e.request.id.startswith("req_") and e.livemode is False
    assert client.v1.events.retrieve(updated.id).id == updated.id
    only = client.v1.events.list({"types": ["customer.created", "customer.deleted"]}).data
    assert [e.type for e in only] == ["customer.deleted", "customer.created"]


# -- idempotency --------------------------------------------------------------------


def test_idempotent_create_replays(client: Any, emulator: Emulator) -> None:
    opts: Any = {"idempotency_key": "key-1"}
    a = client.v1.customers.create({"name": "Once", "email": "once@example.com"}, opts)
    b = client.v1.customers.create({"name": "Once", "email": "once@example.com"}, opts)
    assert a.id == b.id
    assert b.last_response.headers["Idempotent-Replayed"] == "true"
    stats = admin(emulator, "GET", "/_emulator/stats")
    assert stats["customers"] == 1 and stats["writes"] == 1 and stats["events"] == 1
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create({"name": "Other"}, opts)


def test_injected_errors_are_not_saved_under_the_key(client: Any, emulator: Emulator) -> None:
    faults(emulator, error_rate=1.0)
    with pytest.raises(stripe.APIError):
        client.v1.customers.create({"name": "Retry"}, {"idempotency_key": "key-2"})
    faults(emulator, error_rate=0)
    c = client.v1.customers.create({"name": "Retry"}, {"idempotency_key": "key-2"})
    assert c.name == "Retry"


# -- errors -------------------------------------------------------------------------


def test_missing_or_bad_key_is_401(emulator: Emulator) -> None:
    r = httpx.get(emulator.base + "/v1/customers")
    assert r.status_code == 401 and r.headers["Request-Id"].startswith("req_")
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "You did not provide an API key" in r.json()["error"]["message"]
    bad = httpx.get(emulator.base + "/v1/customers", headers={"Authorization": "Bearer pk_test_x"})
    assert bad.status_code == 401


def test_unknown_id_unknown_param_and_validation(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.retrieve("cus_nope")
    assert exc.value.http_status == 404 and exc.value.code == "resource_missing"
    assert exc.value.param == "id" and "No such customer: 'cus_nope'" in str(exc.value)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"favourite_colour": "red"}, "favourite_colour"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a" * 510 + "@example.com"}, "email"),
        ({"name": "n" * 257}, "name"),
    ]
    for params, param in cases:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.customers.create(params)
        assert exc.value.http_status == 400 and exc.value.param == param


# -- webhooks -----------------------------------------------------------------------


def test_webhooks_are_signed_and_verifiable(client: Any, receiver: Receiver) -> None:
    secret = subscribe(client, receiver.url)
    c = client.v1.customers.create({"name": "Hooked"})
    client.v1.customers.update(c.id, {"name": "Hooked 2"})
    assert wait_for(lambda: len(receiver.got) == 2)
    for headers, body in receiver.got:
        assert headers["Content-Type"].startswith("application/json")
        assert headers["User-Agent"].startswith("Stripe/")
        event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], secret)
        assert event.data.object.id == c.id
    assert sorted(e["type"] for e in receiver.events()) == ["customer.created", "customer.updated"]
    headers, body = receiver.got[0]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body.replace(b"Hooked", b"Hacked"), headers["Stripe-Signature"], secret)


def test_webhook_retries_until_2xx(client: Any, emulator: Emulator) -> None:
    receiver = Receiver(failures=2)
    try:
        subscribe(client, receiver.url)
        c = client.v1.customers.create({"name": "Flaky"})
        assert wait_for(lambda: len(receiver.got) >= 3, timeout=15)
        # Settled when the emulator says so (not after a pause): then no further attempt can come.
        assert wait_for(lambda: _hooks(emulator)["delivered"] == 1 and _hooks(emulator)["pending"] == 0)
        assert len(receiver.got) == 3
        assert {e["id"] for e in receiver.events()} == {receiver.events()[0]["id"]}
        assert receiver.events()[0]["data"]["object"]["id"] == c.id
        hooks = admin(emulator, "GET", "/_emulator/stats")["webhooks"]
        assert hooks["delivered"] == 1 and hooks["failed_attempts"] == 2 and hooks["pending"] == 0
    finally:
        receiver.close()


def test_webhook_endpoints_crud_and_event_filter(client: Any, emulator: Emulator, receiver: Receiver) -> None:
    we = client.v1.webhook_endpoints.create({"url": receiver.url, "enabled_events": ["customer.deleted"]})
    assert we.object == "webhook_endpoint" and we.status == "enabled"
    assert "secret" not in client.v1.webhook_endpoints.retrieve(we.id).to_dict()
    assert [x.id for x in client.v1.webhook_endpoints.list().data] == [we.id]
    c = client.v1.customers.create({"name": "Filtered"})
    client.v1.customers.delete(c.id)
    assert wait_for(lambda: len(receiver.got) >= 1)
    assert wait_for(lambda: _hooks(emulator)["pending"] == 0)
    assert [e["type"] for e in receiver.events()] == ["customer.deleted"]
    assert client.v1.webhook_endpoints.delete(we.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.webhook_endpoints.retrieve(we.id)


# -- fault injection ----------------------------------------------------------------


def test_error_rate_one_gives_only_5xx(client: Any, emulator: Emulator) -> None:
    faults(emulator, error_rate=1.0)
    statuses = []
    for _ in range(10):
        with pytest.raises(stripe.APIError) as exc:
            client.v1.customers.list()
        statuses.append(exc.value.http_status)
    assert set(statuses) <= {500, 503}
    assert admin(emulator, "GET", "/_emulator/stats")["customers"] == 0


def test_rate_limit_gives_429(client: Any, emulator: Emulator) -> None:
    faults(emulator, rate_limit_per_second=5)
    ok = limited = 0
    for _ in range(50):
        try:
            client.v1.customers.list({"limit": 1})
            ok += 1
        except stripe.RateLimitError as exc:
            assert exc.http_status == 429
            assert (exc.headers or {}).get("Twoway-Emulator-Limiter") == "global"
            limited += 1
    assert limited >= 30 and ok >= 1
    responses = admin(emulator, "GET", "/_emulator/stats")["responses"]["GET /v1/customers"]
    assert responses["429"] == limited


def test_latency_is_added(client: Any, emulator: Emulator) -> None:
    faults(emulator, latency_ms=200)
    start = time.monotonic()
    for _ in range(3):
        client.v1.customers.list({"limit": 1})
    assert time.monotonic() - start >= 3 * 0.15


def test_reject_pattern_gives_permanent_400(client: Any, emulator: Emulator) -> None:
    faults(emulator, reject_pattern="^REJECT")
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.create({"name": "REJECT me"})
    assert exc.value.http_status == 400 and exc.value.param == "name"
    c = client.v1.customers.create({"name": "fine", "email": "fine@example.com"})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.update(c.id, {"name": "REJECT later"})


def test_dropped_webhooks_are_counted(client: Any, emulator: Emulator, receiver: Receiver) -> None:
    subscribe(client, receiver.url)
    faults(emulator, webhook_drop_rate=1.0)
    for i in range(3):
        client.v1.customers.create({"name": f"D{i}"})
    assert wait_for(lambda: _hooks(emulator)["dropped"] == 3)
    assert receiver.got == []


def test_duplicated_webhooks_arrive_twice(client: Any, emulator: Emulator, receiver: Receiver) -> None:
    subscribe(client, receiver.url)
    faults(emulator, webhook_duplicate_rate=1.0)
    for i in range(3):
        client.v1.customers.create({"name": f"Dup{i}"})
    assert wait_for(lambda: len(receiver.got) >= 6)
    ids = [e["id"] for e in receiver.events()]
    assert len(set(ids)) == 3 and all(ids.count(i) == 2 for i in ids)
    assert admin(emulator, "GET", "/_emulator/stats")["webhooks"]["duplicated"] == 3


def test_reordered_webhooks_arrive_out_of_order(client: Any, emulator: Emulator, receiver: Receiver) -> None:
    subscribe(client, receiver.url)
    faults(emulator, webhook_reorder=5)
    names = [f"R{i}" for i in range(5)]
    for name in names:
        client.v1.customers.create({"name": name})
    assert wait_for(lambda: len(receiver.got) >= 5)
    got = [e["data"]["object"]["name"] for e in receiver.events()]
    assert sorted(got) == names and got != names
    assert admin(emulator, "GET", "/_emulator/stats")["webhooks"]["reordered"] >= 2


def test_delayed_webhooks(client: Any, emulator: Emulator, receiver: Receiver) -> None:
    subscribe(client, receiver.url)
    faults(emulator, webhook_delay_ms=600)
    before = time.monotonic()
    client.v1.customers.create({"name": "Later"})
    assert wait_for(lambda: len(receiver.got) == 1, timeout=5)
    # Measured, not sampled after a pause (a busy machine could oversleep past the delay).
    assert receiver.arrived[0] - before >= 0.6 - 0.02


# -- admin, UI, persistence ---------------------------------------------------------


def test_stats_shape_and_reset(client: Any, emulator: Emulator) -> None:
    c = client.v1.customers.create({"name": "S"})
    client.v1.customers.retrieve(c.id)
    client.v1.customers.update(c.id, {"name": "S2"})
    client.v1.customers.delete(c.id)
    stats = admin(emulator, "GET", "/_emulator/stats")
    assert set(stats) == {"requests", "responses", "writes", "webhooks", "per_second", "peak_per_second", "customers",
                          "invoices", "invoiceitems", "events"}
    for route in ("POST /v1/customers", "GET /v1/customers/{id}", "POST /v1/customers/{id}"):
        assert stats["requests"][route] == 1 and stats["responses"][route] == {"200": 1}
    assert stats["requests"]["DELETE /v1/customers/{id}"] == 1
    assert stats["writes"] == 3 and stats["customers"] == 0 and stats["events"] == 3
    assert set(stats["webhooks"]) == {"delivered", "failed_attempts", "dropped", "duplicated", "reordered", "pending"}
    faults(emulator, latency_ms=5)
    assert admin(emulator, "GET", "/_emulator/faults")["latency_ms"] == 5
    admin(emulator, "POST", "/_emulator/reset", {})
    assert admin(emulator, "GET", "/_emulator/faults")["latency_ms"] == 0
    assert admin(emulator, "GET", "/_emulator/stats")["events"] == 0


def test_html_page_edits_through_the_api_path(client: Any, emulator: Emulator) -> None:
    with httpx.Client(base_url=emulator.base) as ui:
        assert ui.post("/_emulator/ui/customers", data={"name": "Web", "email": "web@example.com"}).status_code == 303
        [c] = admin(emulator, "GET", "/_emulator/customers")
        page = ui.get("/")
        assert page.status_code == 200 and c["id"] in page.text and "web@example.com" in page.text
        ui.post(f"/_emulator/ui/customers/{c['id']}", data={"name": "Web 2", "email": "web@example.com"})
        assert client.v1.customers.retrieve(c["id"]).name == "Web 2"
        ui.post(f"/_emulator/ui/customers/{c['id']}/delete")
    types = [e.type for e in client.v1.events.list().data]
    assert types == ["customer.deleted", "customer.updated", "customer.created"]


def test_state_file_survives_restart(tmp_path: Path) -> None:
    state = tmp_path / "stripe.json"
    first = Emulator("--state-file", str(state))
    try:
        sdk = sdk_for(first)
        c = sdk.v1.customers.create({"name": "Durable", "metadata": {"k": "v"}})
    finally:
        first.stop()
    second = Emulator("--state-file", str(state))
    try:
        sdk = sdk_for(second)
        again = sdk.v1.customers.retrieve(c.id)
        assert again.name == "Durable" and again.metadata.to_dict() == {"k": "v"}
        assert [x.id for x in sdk.v1.customers.list().data] == [c.id]
    finally:
        second.stop()


def test_startup_webhook_endpoint_uses_given_secret(receiver: Receiver) -> None:
    secret = "whsec_known_in_advance"
    emu = Emulator("--webhook-url", receiver.url, "--webhook-secret", secret)
    try:
        sdk = sdk_for(emu)
        sdk.v1.customers.create({"name": "Boot"})
        assert wait_for(lambda: len(receiver.got) == 1)
        headers, body = receiver.got[0]
        assert stripe.Webhook.construct_event(body, headers["Stripe-Signature"], secret).type == "customer.created"
    finally:
        emu.stop()
