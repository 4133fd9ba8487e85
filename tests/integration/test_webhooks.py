"""Issue 5: the webhook endpoint verifies, stores once, and rejects bad deliveries without changing anything."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import WEBHOOK_SECRET

URL = "/api/v1/webhooks/stripe"


def event(event_id: str = "evt_1", type_: str = "customer.created", livemode: bool = False) -> dict:
    return {"id": event_id, "object": "event", "type": type_, "livemode": livemode, "created": int(time.time()),
            "data": {"object": {"id": "cus_abc", "object": "customer", "name": "N", "email": "n@example.com",
                                "metadata": {}}}}


def sign(body: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    t = at if at is not None else int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


async def _counts(db) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    async with db() as s:
        inbox = (await s.execute(text("SELECT count(*) FROM inbox"))).scalar()
        outbox = (await s.execute(text("SELECT count(*) FROM outbox"))).scalar()
        rejected = (await s.execute(text("SELECT count(*) FROM webhook_rejections"))).scalar()
    return int(inbox or 0), int(outbox or 0), int(rejected or 0)


async def test_valid_event_is_stored_once_with_its_outbox_row(client: httpx.AsyncClient, db) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps(event()).encode()
    for _ in range(2):
        r = await client.post(URL, content=body, headers={"Stripe-Signature": sign(body), "Authorization": ""})
        assert r.status_code == 200
    assert r.json()["duplicate"] is True
    assert await _counts(db) == (1, 1, 0)


async def test_rotated_secrets_are_all_accepted(settings, db) -> None:  # type: ignore[no-untyped-def]
    from pydantic import SecretStr

    from twoway.api import create_app

    app = create_app(settings.model_copy(update={"stripe_webhook_secret": SecretStr(f"whsec_new,{WEBHOOK_SECRET}")}))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for i, secret in enumerate(("whsec_new", WEBHOOK_SECRET)):
            body = json.dumps(event(f"evt_rot{i}")).encode()
            r = await c.post(URL, content=body, headers={"Stripe-Signature": sign(body, secret)})
            assert r.status_code == 200
    assert (await _counts(db))[0] == 2


async def test_other_event_types_are_acknowledged_and_ignored(client: httpx.AsyncClient, db) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps(event(type_="charge.succeeded")).encode()
    r = await client.post(URL, content=body, headers={"Stripe-Signature": sign(body)})
    assert r.status_code == 200 and r.json()["ignored"] is True
    assert await _counts(db) == (0, 0, 0)


def _bad_case(why: str) -> tuple[bytes, dict[str, str], str]:
    """Built when the test runs: a signature made at collection time would be stale by then."""
    good = json.dumps(event()).encode()
    tampered = good.replace(b'"N"', b'"M"')
    live = json.dumps(event(livemode=True)).encode()
    return {
        "missing signature": (good, {}, "missing Stripe-Signature header"),
        "wrong secret": (good, {"Stripe-Signature": sign(good, "whsec_other")}, "signature does not match"),
        "tampered body": (tampered, {"Stripe-Signature": sign(good)}, "signature does not match"),
        "stale timestamp": (good, {"Stripe-Signature": sign(good, at=int(time.time()) - 301)},
                            "timestamp outside the tolerance zone"),
        "garbage header": (good, {"Stripe-Signature": "nonsense"}, "malformed Stripe-Signature header"),
        "not json": (b"{oops", {"Stripe-Signature": sign(b"{oops")}, "body is not JSON"),
        "livemode mismatch": (live, {"Stripe-Signature": sign(live)}, "livemode"),
    }[why]


BAD = ["missing signature", "wrong secret", "tampered body", "stale timestamp", "garbage header", "not json",
       "livemode mismatch"]


@pytest.mark.parametrize("why", BAD)
async def test_bad_deliveries_get_400_and_change_nothing(client, db, why) -> None:  # type: ignore[no-untyped-def]
    body, headers, reason = _bad_case(why)
    r = await client.post(URL, content=body, headers=headers)
    assert r.status_code == 400, why
    assert reason in r.json()["error"]["message"]
    assert await _counts(db) == (0, 0, 1)
    async with db() as s:
        stored = (await s.execute(text("SELECT reason, body_size FROM webhook_rejections"))).one()
    assert WEBHOOK_SECRET not in stored.reason and stored.body_size == len(body)


async def test_oversized_webhook_is_413(client: httpx.AsyncClient, db) -> None:  # type: ignore[no-untyped-def]
    body = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    r = await client.post(URL, content=body, headers={"Stripe-Signature": sign(body)})
    assert r.status_code == 413
    assert (await _counts(db))[:2] == (0, 0)


async def test_unknown_system_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/webhooks/salesforce", content=b"{}")
    assert r.status_code == 404
