"""Unit tests of the emulator's pure parts: forms, search, paging, faults, signing, HTTP client."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import pytest

from twoway.emulators.stripe import customers
from twoway.emulators.stripe.errors import StripeError
from twoway.emulators.stripe.faults import Faults, TokenBucket
from twoway.emulators.stripe.forms import parse_form
from twoway.emulators.stripe.idempotency import IdempotencyCache, Saved
from twoway.emulators.stripe.search import search_customers
from twoway.emulators.stripe.state import Origin, Store
from twoway.emulators.stripe.transport import Connection
from twoway.emulators.stripe.webhooks import sign


def test_parse_form_brackets_lists_and_blanks() -> None:
    got = parse_form(
        "name=A+B&metadata[internal_id]=42&metadata[0]=x&enabled_events[0]=*&enabled_events[1]=customer.created"
        "&address[line1]=1+Main&created[gt]=5&tags[]=a&tags[]=b&description="
    )
    assert got == {
        "name": "A B",
        "metadata": {"internal_id": "42", "0": "x"},
        "enabled_events": ["*", "customer.created"],
        "address": {"line1": "1 Main"},
        "created": {"gt": "5"},
        "tags": ["a", "b"],
        "description": "",
    }
    assert parse_form("metadata=") == {"metadata": ""}


def _store_with(*people: tuple[str, str, dict[str, str]]) -> Store:
    store = Store()
    for name, email, meta in people:
        customers.create(store, {"name": name, "email": email, "metadata": meta}, Origin("req_x"))
    return store


def test_search_clauses() -> None:
    store = _store_with(("Jane Doe", "jane@x.com", {"k": "v"}), ("John Doe", "john@x.com", {}))

    def names(query: str) -> list[str]:
        return [c["name"] for c in search_customers(store, {"query": query})["data"]]

    assert names("email:'JANE@x.com'") == ["Jane Doe"]
    assert names("name~'doe'") == ["John Doe", "Jane Doe"]
    assert names("-metadata['k']:'v'") == ["John Doe"]
    assert names("name:'Jane Doe' OR name:'John Doe'") == ["John Doe", "Jane Doe"]
    with pytest.raises(StripeError):
        names("name:'a' AND email:'b' OR phone:'c'")
    with pytest.raises(StripeError):
        names("balance:0")


def test_search_pages_with_next_page() -> None:
    store = _store_with(*[(f"P{i}", f"p{i}@x.com", {}) for i in range(5)])
    first = search_customers(store, {"query": "email~'x.com'", "limit": "2"})
    assert first["has_more"] and first["next_page"]
    second = search_customers(store, {"query": "email~'x.com'", "limit": "2", "page": first["next_page"]})
    assert [c["name"] for c in first["data"] + second["data"]] == ["P4", "P3", "P2", "P1"]


def test_list_survives_cursor_on_deleted_customer() -> None:
    store = _store_with(*[(f"P{i}", f"p{i}@x.com", {}) for i in range(4)])
    ids = [c["id"] for c in customers.list_customers(store, {"limit": "2"})["data"]]
    customers.delete(store, ids[-1], Origin("req_x"))
    rest = customers.list_customers(store, {"starting_after": ids[-1]})["data"]
    assert [c["name"] for c in rest] == ["P1", "P0"]


def test_limit_out_of_range_is_400() -> None:
    with pytest.raises(StripeError) as exc:
        customers.list_customers(Store(), {"limit": "101"})
    assert exc.value.param == "limit"


def test_token_bucket_allows_rate_per_second() -> None:
    bucket = TokenBucket()
    assert sum(bucket.take(5, 0.0) for _ in range(20)) == 5
    assert bucket.take(5, 0.2) and not bucket.take(5, 0.2)


def test_faults_merge_validates_everything_first() -> None:
    faults = Faults()
    with pytest.raises(ValueError):
        faults.merge({"error_rate": 0.5, "reject_pattern": "("})
    assert faults.error_rate == 0
    with pytest.raises(ValueError):
        faults.merge({"nope": 1})
    faults.merge({"reject_pattern": "^X", "webhook_reorder": 3})
    assert faults.reject_regex is not None and faults.webhook_reorder == 3


def test_idempotency_cache_caps_entries() -> None:
    cache = IdempotencyCache(max_entries=2)
    for i in range(3):
        cache.put("sk", f"k{i}", Saved((), 200, b"{}", "req", time.time()))
    assert cache.get("sk", "k0") is None and cache.get("sk", "k2") is not None


def test_signature_matches_stripe_scheme() -> None:
    header = sign("whsec_s", b'{"a":1}', 1700000000)
    expected = hmac.new(b"whsec_s", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


async def test_connection_reads_chunked_and_reconnects_after_close() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ]
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            seen.append(await reader.readexactly(length))
            answer = answers.pop(0)
            writer.write(answer)
            await writer.drain()
            if b"close" in answer:
                break
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = Connection()
    url = f"http://127.0.0.1:{port}/hook"
    statuses = [await conn.post(url, f"b{i}".encode(), {"X": "1"}, 2.0) for i in range(3)]
    conn.close()
    server.close()
    assert statuses == [200, 503, 204] and seen == [b"b0", b"b1", b"b2"]
