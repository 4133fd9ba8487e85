"""Cost per call of our HTTP clients: the Stripe SDK's (section 1) and the plain ones (section 2).

`python -m bench.client_costs [--calls 2000] [--concurrency 32]`. Section 1: for each variant, `calls` creates
(with an idempotency key, as the connector sends them) then `calls` retrieves, `concurrency` at a
time, in this process; prints wall time and this process's CPU per call (the emulator runs in its
own process, so its CPU is not counted). Variants:

- httpx: the SDK's default async client (`stripe.HTTPXClient`).
- httpx-pool: the same with a pool that keeps every connection alive (the default keeps 20).
- aiohttp: `stripe.AIOHTTPClient` on one shared aiohttp session.
- aiohttp-raw: the same client, calls through `StripeClient.raw_request_async` (the SDK still
  encodes, authenticates, sends the idempotency key and raises its own errors) with the JSON body
  read as a dict, skipping the StripeObject tree the connector turns back into a dict anyway.

Section 2, the plain clients, `calls` requests `concurrency` at a time against a bare uvicorn
receiver in its own process: the emulator's webhook delivery (a signed ~1.5 KB JSON POST, status
only) and the bench drivers' form POST / JSON GET, each with the hand-written HTTP/1.1 clients
(`emulators/stripe/transport.py`, `bench/fasthttp.py`) and with one aiohttp session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import stripe

from twoway.kit.embedded import free_port, wait_for_port

KEY = "sk_test_bench"


def start_emulator() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "twoway.emulators.stripe", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port(port, 30, proc)
    return proc, f"http://127.0.0.1:{port}"


def make_client(variant: str, base: str) -> stripe.StripeClient:
    if variant.startswith("httpx"):
        http: stripe.HTTPClient = stripe.HTTPXClient(timeout=20)
        if variant == "httpx-pool":  # keep every connection alive: the default keeps 20
            import httpx

            http._client_async = httpx.AsyncClient(  # type: ignore[attr-defined]
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=200))
    else:
        http = stripe.AIOHTTPClient(timeout=20)
    return stripe.StripeClient(KEY, base_addresses={"api": base}, max_network_retries=0,  # type: ignore[typeddict-item]
                               http_client=http)


def operations(variant: str, client: stripe.StripeClient) -> tuple[Callable[[int], Awaitable[str]],
                                                                   Callable[[str], Awaitable[Any]]]:
    if variant.endswith("-raw"):
        async def create(i: int) -> str:
            resp = await client.raw_request_async("post", "/v1/customers", name=f"Bench {i}",
                                                  email=f"b{i}@example.com", metadata={"internal_id": str(i)},
                                                  idempotency_key=f"bench:{variant}:{i}:{time.time_ns()}")
            return str(resp.data["id"])

        async def retrieve(cid: str) -> Any:
            return (await client.raw_request_async("get", f"/v1/customers/{cid}")).data
        return create, retrieve

    async def create_obj(i: int) -> str:
        obj = await client.v1.customers.create_async(
            {"name": f"Bench {i}", "email": f"b{i}@example.com", "metadata": {"internal_id": str(i)}},
            {"idempotency_key": f"bench:{variant}:{i}:{time.time_ns()}"})
        obj.to_dict()  # the connector reads every answer as a dict
        return str(obj.id)

    async def retrieve_obj(cid: str) -> Any:
        return (await client.v1.customers.retrieve_async(cid)).to_dict()
    return create_obj, retrieve_obj


async def _phase(calls: int, concurrency: int, fn: Callable[[int], Awaitable[Any]]) -> tuple[float, float, list[Any]]:
    results: list[Any] = [None] * calls
    it = iter(range(calls))

    async def lane() -> None:
        for i in it:
            results[i] = await fn(i)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.process_time() - cpu0, time.perf_counter() - wall0, results


async def measure(variant: str, base: str, calls: int, concurrency: int) -> dict[str, Any]:
    client = make_client(variant, base)
    create, retrieve = operations(variant, client)
    await _phase(50, concurrency, create)  # warm-up: connections, imports, caches
    c_cpu, c_wall, ids = await _phase(calls, concurrency, create)
    r_cpu, r_wall, _ = await _phase(calls, concurrency, lambda i: retrieve(ids[i]))
    await client._requestor._client.close_async()  # type: ignore[union-attr]
    return {"variant": variant, "calls": calls, "concurrency": concurrency,
            "create_cpu_ms": round(c_cpu / calls * 1000, 3), "create_wall_per_s": round(calls / c_wall, 1),
            "retrieve_cpu_ms": round(r_cpu / calls * 1000, 3), "retrieve_wall_per_s": round(calls / r_wall, 1)}


VARIANTS = ("httpx", "httpx-pool", "aiohttp", "aiohttp-raw")


async def main_async(calls: int, concurrency: int, variants: tuple[str, ...], rounds: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for start, known, measure_one in ((start_emulator, VARIANTS, measure), (start_receiver, PLAIN, measure_plain)):
        proc, base = start()
        try:
            for _ in range(rounds):
                for variant in variants:
                    if variant in known:
                        rows.append(await measure_one(variant, base, calls, concurrency))
                        print(rows[-1], flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
    return rows


# -- section 2: plain HTTP clients ---------------------------------------------------------------

PLAIN = ("delivery-handwritten", "delivery-aiohttp", "driver-handwritten", "driver-aiohttp")
EVENT = json.dumps({"id": "evt_" + "x" * 24, "object": "event", "type": "customer.updated", "data": {"object": {
    "id": "cus_" + "y" * 14, "object": "customer", "name": "Ada Lovelace", "email": "ada@example.com",
    "metadata": {"internal_id": "42"}, "address": None, "balance": 0, "created": 1764000000,
    "description": None, "livemode": False, "phone": None, "preferred_locales": [], "shipping": None,
    "tax_exempt": "none", "invoice_prefix": "ABCD1234", "currency": None, "delinquent": False}},
    "previous_attributes": {"name": "Ada"}, "livemode": False, "pending_webhooks": 1, "created": 1764000000,
    "api_version": "2026-01-28.clover", "request": {"id": "req_" + "z" * 14, "idempotency_key": None}}).encode()


def start_receiver() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.client_costs", "--serve", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port(port, 30, proc)
    return proc, f"http://127.0.0.1:{port}"


def serve(port: int) -> None:
    """A bare ASGI receiver: answers every request 200 with a small JSON body (like our webhook route)."""
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"received":true}'})
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def measure_plain(variant: str, base: str, calls: int, concurrency: int) -> dict[str, Any]:
    import aiohttp

    from bench.fasthttp import Pool
    from twoway.emulators.stripe.transport import Connection

    headers = {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": "t=1,v1=" + "a" * 64,
               "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}
    closers: list[Callable[[], Awaitable[None]]] = []
    one: Callable[[int], Awaitable[Any]]
    if variant == "delivery-handwritten":
        conns = [Connection() for _ in range(concurrency)]
        free = list(conns)

        async def one(i: int) -> Any:
            conn = free.pop()
            try:
                assert await conn.post(base + "/webhooks", EVENT, headers, 10) == 200
            finally:
                free.append(conn)

        async def close_conns() -> None:
            for c in conns:
                c.close()
        closers.append(close_conns)
    elif variant == "driver-handwritten":
        pool = Pool(base)

        async def one(i: int) -> Any:
            async with pool.connection() as conn:
                if i % 2:
                    return await conn.send_form("POST", "/v1/customers", {"name": f"n{i}", "email": f"e{i}@x.io"})
                return await conn.send_json("GET", f"/api/v1/customers/{i}")

        async def close_pool() -> None:
            pool.close()
        closers.append(close_pool)
    else:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar(),
                                        auto_decompress=False,
                                        timeout=aiohttp.ClientTimeout(total=10))
        closers.append(session.close)
        if variant == "delivery-aiohttp":
            async def one(i: int) -> Any:
                async with session.post(base + "/webhooks", data=EVENT, headers=headers) as r:
                    await r.read()
                    assert r.status == 200
        else:
            async def one(i: int) -> Any:
                if i % 2:
                    async with session.post(base + "/v1/customers", data={"name": f"n{i}", "email": f"e{i}@x.io"}) as r:
                        return await r.json()
                async with session.get(base + f"/api/v1/customers/{i}") as r:
                    return await r.json()
    await _phase(100, concurrency, one)  # warm-up
    cpu, wall, _ = await _phase(calls, concurrency, one)
    for close in closers:
        await close()
    return {"variant": variant, "calls": calls, "concurrency": concurrency,
            "cpu_ms": round(cpu / calls * 1000, 3), "per_s": round(calls / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS + PLAIN))
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main_async(args.calls, args.concurrency, tuple(args.variants.split(",")), args.rounds))


if __name__ == "__main__":
    main()
