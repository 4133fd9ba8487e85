"""Bench `salesforce_client`: what a call costs through simple-salesforce (synchronous, `requests`, run in
a thread pool as the connector does) against plain async HTTP (aiohttp when installed, and httpx),
on the Salesforce emulator over TLS. `python -m bench.salesforce_client [--quick]`.

Figures: client CPU per call (one call at a time, no added latency: the library's own cost), and calls/s
at 8 in flight with 100 ms of server latency (what a worker sees against real Salesforce).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from twoway.connectors.salesforce.client import make_session
from twoway.kit.embedded import free_port, wait_for_port

SECRET = "bench-secret"
CLIENT_ID = "bench"


class Emulator:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="twoway-sfbench-"))
        self.port = free_port()
        env = {**os.environ, "SALESFORCE_EMULATOR_CLIENT_SECRET": SECRET}
        self.proc = subprocess.Popen([sys.executable, "-m", "twoway.emulators.salesforce", "--port", str(self.port),
                                      "--tls-dir", str(self.dir / "tls"), "--client-id", CLIENT_ID,
                                      "--daily-api-requests", "10000000"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, 30, self.proc)
        self.base = f"https://127.0.0.1:{self.port}"
        self.ca = str(self.dir / "tls" / "ca.pem")

    def control(self, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=self.ca), timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def _measure(n: int, concurrency: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(calls per second, client CPU ms per call) for n calls, `concurrency` at a time."""
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await call()
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return n / wall, cpu / n * 1000


async def run_clients(emu: Emulator, n: int, concurrency: int) -> dict[str, tuple[float, float]]:
    from simple_salesforce import Salesforce

    tok = emu.control("/_emulator/token", {"username": "bench@twoway.test"})
    token, url = tok["access_token"], tok["instance_url"]
    session = make_session(emu.ca, 30, max(8, concurrency))
    sf = Salesforce(instance_url=url, session_id=token, session=session, version="60.0")
    ident = sf.Account.create({"Name": "Bench"})["id"]
    path = f"/services/data/v60.0/sobjects/Account/{ident}"
    headers = {"Authorization": f"Bearer {token}", "Sforce-Call-Options": "client=twoway"}
    out: dict[str, tuple[float, float]] = {}

    pool = ThreadPoolExecutor(concurrency)
    loop = asyncio.get_running_loop()

    async def ss_call() -> None:
        await loop.run_in_executor(pool, sf.Account.get, ident)
    await _measure(20, concurrency, ss_call)  # warm the connection pool
    out["simple-salesforce (threads)"] = await _measure(n, concurrency, ss_call)
    pool.shutdown()

    import httpx

    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=emu.ca), headers=headers,
                                 limits=httpx.Limits(max_connections=concurrency)) as hx:
        async def hx_call() -> None:
            (await hx.get(url + path)).raise_for_status()
        await _measure(20, concurrency, hx_call)
        out["httpx (async)"] = await _measure(n, concurrency, hx_call)

    try:
        import aiohttp
    except ImportError:
        return out
    connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=emu.ca), limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as ah:
        async def ah_call() -> None:
            async with ah.get(url + path) as r:
                r.raise_for_status()
                await r.read()
        await _measure(20, concurrency, ah_call)
        out["aiohttp (async)"] = await _measure(n, concurrency, ah_call)
    return out


def run(quick: bool = False) -> list[Any]:
    from bench.run import Figure

    emu = Emulator()
    figures: list[Any] = []
    try:
        n = 300 if quick else 2000
        cost = asyncio.run(run_clients(emu, n, 1))
        for name, (_rate, cpu_ms) in cost.items():
            figures.append(Figure("salesforce_client", f"client CPU per call, {name}", round(cpu_ms, 3), "ms",
                                  None, False, {"calls": n, "in_flight": 1, "server_latency_ms": 0}))
        emu.control("/_emulator/faults", {"latency_ms": 100})
        n = 200 if quick else 800
        waits = asyncio.run(run_clients(emu, n, 8))
        for name, (rate, _cpu) in waits.items():
            figures.append(Figure("salesforce_client", f"calls/s at 8 in flight, {name}", round(rate, 1), "calls/s",
                                  None, True, {"calls": n, "in_flight": 8, "server_latency_ms": 100}))
    finally:
        emu.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for f in run(args.quick):
        print(f"{f.metric:55s} {f.value:>10} {f.unit}")


if __name__ == "__main__":
    main()
