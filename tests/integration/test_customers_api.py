"""Issue 2: the customer API, its validation, auth, and the outbox message each write leaves."""

from __future__ import annotations

import json

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import text

from tests.conftest import wait_until


async def _count(db, sql: str, **params) -> int:  # type: ignore[no-untyped-def]
    async with db() as s:
        return int((await s.execute(text(sql), params)).scalar() or 0)


async def test_crud_round_trip(client: httpx.AsyncClient, db) -> None:  # type: ignore[no-untyped-def]
    r = await client.post("/api/v1/customers", json={"name": "Ada Lovelace", "email": "ada@example.com"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["version"] == 1 and created["deleted_at"] is None
    cid = created["id"]

    r = await client.get(f"/api/v1/customers/{cid}")
    assert r.status_code == 200 and r.json()["email"] == "ada@example.com"

    r = await client.patch(f"/api/v1/customers/{cid}", json={"name": "Ada King"})
    assert r.status_code == 200 and r.json()["name"] == "Ada King" and r.json()["version"] == 2

    r = await client.get("/api/v1/customers", params={"email": "ada@example.com"})
    assert [c["id"] for c in r.json()["data"]] == [cid]

    r = await client.delete(f"/api/v1/customers/{cid}")
    assert r.status_code == 204
    r = await client.get("/api/v1/customers", params={"email": "ada@example.com"})
    assert r.json()["data"] == []
    r = await client.get("/api/v1/customers", params={"email": "ada@example.com", "include_deleted": True})
    assert r.json()["data"][0]["deleted_at"] is not None and r.json()["data"][0]["version"] == 3
    r = await client.patch(f"/api/v1/customers/{cid}", json={"name": "x"})
    assert r.status_code == 404
    # create, update, delete: one outbox row each, keyed by the record
    rows = await _count(db, "SELECT count(*) FROM outbox WHERE key = :k", k=f"customer:{cid}")
    assert rows == 3


async def test_noop_patch_writes_nothing(client: httpx.AsyncClient, db) -> None:  # type: ignore[no-untyped-def]
    cid = (await client.post("/api/v1/customers", json={"name": "A", "email": "a@example.com"})).json()["id"]
    r = await client.patch(f"/api/v1/customers/{cid}", json={"name": "A"})
    assert r.status_code == 200 and r.json()["version"] == 1
    assert await _count(db, "SELECT count(*) FROM outbox") == 1


async def test_cursor_pagination(client: httpx.AsyncClient) -> None:
    ids = [(await client.post("/api/v1/customers", json={"name": f"P{i}", "email": f"p{i}@example.com"})).json()["id"]
           for i in range(7)]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/customers", params=params)).json()
        seen += [c["id"] for c in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == ids


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "x", "email": "not-an-email"}, 422),
        ({"name": "", "email": "a@example.com"}, 422),
        ({"name": "   ", "email": "a@example.com"}, 422),
        ({"name": "x" * 257, "email": "a@example.com"}, 422),
        ({"name": "x", "email": "a@example.com", "bogus": 1}, 422),
        ({"email": "a@example.com"}, 422),
    ],
)
async def test_bad_input_is_rejected_and_changes_nothing(client: httpx.AsyncClient, db, body, status) -> None:  # type: ignore[no-untyped-def]
    r = await client.post("/api/v1/customers", json=body)
    assert r.status_code == status
    assert r.json()["error"]["type"] == "validation_error"
    assert await _count(db, "SELECT count(*) FROM customers") == 0
    assert await _count(db, "SELECT count(*) FROM outbox") == 0


async def test_malformed_json_and_oversized_body(client: httpx.AsyncClient, db) -> None:  # type: ignore[no-untyped-def]
    r = await client.post("/api/v1/customers", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_json"
    big = json.dumps({"name": "x", "email": "a@example.com", "pad": "y" * (2 * 1024 * 1024)})
    r = await client.post("/api/v1/customers", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
    r = await client.post("/api/v1/customers", content=b"", headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500
    assert await _count(db, "SELECT count(*) FROM customers") == 0


async def test_unknown_ids_are_404(client: httpx.AsyncClient) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        kwargs = {"json": {"name": "x"}} if method == "PATCH" else {}
        r = await client.request(method, "/api/v1/customers/987654321", **kwargs)
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = await client.get("/api/v1/customers/99999999999999999999999")
    assert r.status_code in (404, 422)
    r = await client.get("/api/v1/customers/abc")
    assert r.status_code == 422


async def test_auth_required(client: httpx.AsyncClient) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        r = await client.get("/api/v1/customers", headers=headers)
        assert r.status_code == 401
    r = await client.get("/health", headers={"Authorization": ""})
    assert r.status_code == 200


async def test_ready_checks_database_and_broker(client: httpx.AsyncClient) -> None:
    r = await client.get("/ready")
    assert r.status_code == 200 and r.json()["checks"] == {"database": True, "broker": True}


async def test_failed_transaction_leaves_no_outbox_row(db) -> None:  # type: ignore[no-untyped-def]
    from twoway.customers import service

    with pytest.raises(RuntimeError):
        async with db() as session:
            await service.create(session, {"name": "Lost", "email": "lost@example.com"})
            raise RuntimeError("the request failed after the write")
    assert await _count(db, "SELECT count(*) FROM customers") == 0
    assert await _count(db, "SELECT count(*) FROM outbox") == 0


async def test_each_write_reaches_the_topic_once(client: httpx.AsyncClient, settings, db) -> None:  # type: ignore[no-untyped-def]
    from tests.helpers import running_worker

    cid = (await client.post("/api/v1/customers", json={"name": "K", "email": "k@example.com"})).json()["id"]
    await client.patch(f"/api/v1/customers/{cid}", json={"email": "k2@example.com"})
    await client.delete(f"/api/v1/customers/{cid}")
    async with running_worker(settings, components=["relay"]):
        assert await wait_until(lambda: _count(db, "SELECT count(*) = 0 FROM outbox WHERE sent_at IS NULL"))
    consumer = AIOKafkaConsumer("sync.outbound", bootstrap_servers=settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        mine = []
        async def drained() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            mine.extend(m for msgs in batch.values() for m in msgs if m.key == f"customer:{cid}".encode())
            return len(mine) >= 3 and not batch
        assert await wait_until(drained, timeout=20)
    finally:
        await consumer.stop()
    assert len(mine) == 3
    assert {json.loads(m.value)["id"] for m in mine} == {cid}
