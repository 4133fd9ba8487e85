"""Change-to-Stripe latency on a subset of changes: from our API's 2xx to Stripe showing the change.

A pool of customers of our own is made before the run, linked to Stripe (and Salesforce), and kept
out of every actor's reach (`Sides.reserved`), so nobody else edits them and the value the probe
waits for can only come from its own change. Every `every` seconds one idle customer of the pool gets
a new name through our API; the probe then reads it from the emulator (`GET /v1/customers/{id}`,
through the emulator's faults: in a Stripe outage it waits, as the sync does) until the name is there.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from bench.chaos import Tally
from bench.cluster import Cluster
from twoway.kit.db import asyncpg_dsn

LINKS_SQL = """SELECT internal_id, system, external_id FROM links
               WHERE kind = 'customer' AND internal_id = ANY($1::bigint[])"""


@dataclass
class Sighting:
    at_s: float  # when our API answered, seconds since the run started
    latency_s: float | None  # None: not seen within the probe's timeout


class Probe:
    def __init__(self, cluster: Cluster, tally: Tally, systems: tuple[str, ...], pool: int = 40,
                 every: float = 0.5, timeout: float = 180.0) -> None:
        self.cluster = cluster
        self.tally = tally
        self.systems = systems
        self.pool_size = pool
        self.every = every
        self.timeout = timeout
        self.api = httpx.AsyncClient(base_url=cluster.api_url, timeout=30,
                                     headers={"Authorization": f"Bearer {cluster.api_key}"})
        self.stripe = httpx.AsyncClient(base_url=cluster.emulator_url, timeout=10,
                                        headers={"Authorization": f"Bearer {cluster.stripe_key}"})
        self.stripe_id: dict[int, str] = {}
        self.idle: list[int] = []
        self.reserved: set[Any] = set()  # our ids and every external id of the pool
        self.sightings: list[Sighting] = []
        self.skipped = 0  # every customer of the pool was still waiting for its last change
        self.serial = 0
        self.started = time.monotonic()

    async def close(self) -> None:
        await self.api.aclose()
        await self.stripe.aclose()

    async def setup(self, wait: float = 120.0) -> None:
        """Make the pool and wait until every customer of it is linked in every system."""
        ids = []
        for i in range(self.pool_size):
            r = await self.api.post("/api/v1/customers", json={"name": f"probe {i}", "email": f"probe{i}@example.com"})
            r.raise_for_status()
            ids.append(r.json()["id"])
        self.reserved.update(ids)
        deadline = time.monotonic() + wait
        conn = await asyncpg.connect(asyncpg_dsn(self.cluster.database_url))
        try:
            while True:
                rows = await conn.fetch(LINKS_SQL, ids)
                if len(rows) >= len(ids) * len(self.systems):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"probe customers not linked within {wait} s: {len(rows)} links")
                await asyncio.sleep(0.5)
        finally:
            await conn.close()
        self.reserved.update(r["external_id"] for r in rows)
        self.stripe_id = {int(r["internal_id"]): r["external_id"] for r in rows if r["system"] == "stripe"}
        self.idle = list(ids)

    async def run(self, started: float, until: float) -> None:
        self.started = started
        pending: set[asyncio.Task[None]] = set()
        while time.monotonic() < until:
            if self.idle:
                task = asyncio.create_task(self._one(self.idle.pop(0)))
                pending.add(task)
                task.add_done_callback(pending.discard)
            else:
                self.skipped += 1
            await asyncio.sleep(self.every)
        await asyncio.gather(*pending, return_exceptions=True)

    async def _one(self, cid: int) -> None:
        self.serial += 1
        name = f"probe {cid} #{self.serial}"
        try:
            r = await self.api.patch(f"/api/v1/customers/{cid}", json={"name": name})
            r.raise_for_status()
        except httpx.HTTPError:
            self.tally.ops["probe.update.failed"] += 1
            self.idle.append(cid)
            return
        answered = time.monotonic()
        self.tally.ops["probe.update"] += 1
        seen = await self._seen(self.stripe_id[cid], name, answered + self.timeout)
        self.sightings.append(Sighting(round(answered - self.started, 3),
                                       None if seen is None else round(seen - answered, 4)))
        self.idle.append(cid)

    async def _seen(self, stripe_id: str, name: str, deadline: float) -> float | None:
        """When Stripe first showed `name` (polled every 50 ms at first, backing off to 0.5 s)."""
        first = time.monotonic()
        while time.monotonic() < deadline:
            try:
                r = await self.stripe.get(f"/v1/customers/{stripe_id}")
                if r.status_code == 200 and r.json().get("name") == name:
                    return time.monotonic()
            except (httpx.HTTPError, ValueError):
                pass  # the emulator is answering 503 (an outage): keep looking
            await asyncio.sleep(min(0.5, 0.05 + (time.monotonic() - first) / 10))
        return None
