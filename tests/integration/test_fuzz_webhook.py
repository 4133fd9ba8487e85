"""Random bodies and headers at the webhook endpoint: always a 4xx, never a stored event."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.conftest import WEBHOOK_SECRET

URL = "/api/v1/webhooks/stripe"


def sign(body: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    stamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def event(object_id: str = "cus_fuzz") -> dict:
    return {"id": "evt_fuzz_" + object_id, "object": "event", "type": "customer.updated", "livemode": False,
            "created": int(time.time()), "data": {"object": {"id": object_id, "object": "customer",
                                                              "name": "N", "email": "n@example.com"}}}


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=12)
bodies = st.one_of(
    st.binary(max_size=2048),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(event, st.text(min_size=1, max_size=30)).map(lambda e: json.dumps(e).encode()),
)


@st.composite
def signatures(draw: st.DrawFn, body: bytes) -> dict[str, str | bytes]:
    """Headers a forger or a broken proxy could send: none, garbage, wrong secret, stale, tampered."""
    kind = draw(st.sampled_from(["none", "garbage", "wrong_secret", "stale", "tampered", "empty_v1"]))
    if kind == "none":
        return {}
    if kind == "garbage":
        # Any byte a header may carry on the wire (latin-1), not only ASCII.
        raw = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200)
        return {"Stripe-Signature": draw(raw).encode("latin-1")}
    if kind == "wrong_secret":
        return {"Stripe-Signature": sign(body, secret=draw(st.text(min_size=1, max_size=40)) + "x")}
    if kind == "stale":
        return {"Stripe-Signature": sign(body, at=int(time.time()) - draw(st.integers(301, 10**8)))}
    if kind == "tampered":
        return {"Stripe-Signature": sign(body + draw(st.binary(min_size=1, max_size=8)))}
    return {"Stripe-Signature": f"t={int(time.time())},v1="}


async def inbox_count(db: object) -> int:
    async with db() as session:  # type: ignore[operator]
        return int((await session.execute(text("SELECT count(*) FROM inbox"))).scalar() or 0)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), body=bodies)
async def test_unverifiable_deliveries_are_rejected_and_never_stored(client: httpx.AsyncClient, db: object,
                                                                    data: st.DataObject, body: bytes) -> None:
    headers = {"Content-Type": data.draw(st.sampled_from(["application/json", "text/plain", "x/y"])),
               **data.draw(signatures(body))}
    response = await client.post(URL, content=body, headers=headers)
    assert response.status_code in (400, 413), (response.status_code, response.text)
    assert await inbox_count(db) == 0


async def test_an_oversized_body_is_413(client: httpx.AsyncClient, db: object) -> None:
    body = json.dumps({**event(), "pad": "x" * (1024 * 1024 + 1)}).encode()
    response = await client.post(URL, content=body, headers={"Stripe-Signature": sign(body)})
    assert response.status_code == 413
    assert await inbox_count(db) == 0


async def test_a_correctly_signed_event_is_stored_once(client: httpx.AsyncClient, db: object) -> None:
    """The control: the same checks see a stored event when there is one."""
    body = json.dumps(event()).encode()
    for _ in range(2):
        response = await client.post(URL, content=body, headers={"Stripe-Signature": sign(body)})
        assert response.status_code == 200, response.text
    assert await inbox_count(db) == 1
