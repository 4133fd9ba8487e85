"""Fast seeding of linked catalogs for the reconcile benchmark.

Stripe side: customers created through the emulator's public API (`POST /v1/customers`, form-encoded,
with `metadata[internal_id]`), by many lanes of the minimal keep-alive client in `bench.fasthttp`.
Our side: rows and links written by PostgreSQL COPY in one transaction, with `base` = the agreed
fields and `last_pushed_version` = the row's version, i.e. exactly what a finished sync leaves behind.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import asyncpg

from bench.cluster import Cluster
from bench.fasthttp import Pool
from twoway.kit.db import asyncpg_dsn


@dataclass
class Seeded:
    customers: int
    stripe_seconds: float
    db_seconds: float
    stripe_rate: float


def fields(i: int) -> tuple[str, str]:
    return f"Customer {i}", f"customer{i}@example.com"


async def seed_stripe(cluster: Cluster, n: int, concurrency: int = 64, first_id: int = 1,
                      deadline: float | None = None) -> list[str]:
    """Create up to n Stripe customers for internal ids first_id, first_id+1, ...; their ids, in that order.

    Past `deadline` (monotonic) no new create starts; the ones started finish, so the ids stay contiguous."""
    external: list[str] = [""] * n
    queue = iter(range(n))
    async with Pool(cluster.emulator_url, {"Authorization": f"Bearer {cluster.stripe_key}"}) as pool:
        async def lane() -> None:
            async with pool.connection() as conn:
                for i in queue:
                    if deadline is not None and time.monotonic() > deadline:
                        return
                    name, email = fields(first_id + i)
                    body = await conn.send_form("POST", "/v1/customers", {
                        "name": name, "email": email, "metadata[internal_id]": str(first_id + i)}, expect=200)
                    external[i] = body["id"]

        await asyncio.gather(*(lane() for _ in range(concurrency)))
    # A lane that saw the deadline consumed one index it did not create: cut at the first gap.
    return external[:external.index("")] if "" in external else external


async def seed_database(cluster: Cluster, external: list[str], first_id: int = 1) -> None:
    """Rows with explicit ids first_id.., each linked to its Stripe customer and in agreement with it."""
    conn = await asyncpg.connect(asyncpg_dsn(cluster.database_url))
    try:
        async with conn.transaction():
            ids = range(first_id, first_id + len(external))
            await conn.copy_records_to_table(
                "customers", columns=["id", "name", "email", "version"],
                records=((i, *fields(i), 1) for i in ids))
            await conn.execute("SELECT setval(pg_get_serial_sequence('customers', 'id'), "
                               "(SELECT max(id) FROM customers))")
            await conn.copy_records_to_table(
                "links", columns=["kind", "internal_id", "system", "external_id", "base", "last_pushed_version"],
                records=(("customer", i, "stripe", ext, _base(i), 1) for i, ext in zip(ids, external, strict=True)))
        await conn.execute("ANALYZE customers")
        await conn.execute("ANALYZE links")
    finally:
        await conn.close()


def _base(i: int) -> str:
    name, email = fields(i)
    return json.dumps({"name": name, "email": email})


async def seed_linked(cluster: Cluster, n: int, concurrency: int = 64, deadline: float | None = None) -> Seeded:
    """n linked customers in agreement on both sides (fewer if Stripe seeding passes `deadline`)."""
    started = time.monotonic()
    external = await seed_stripe(cluster, n, concurrency, deadline=deadline)
    stripe_seconds = time.monotonic() - started
    started = time.monotonic()
    await seed_database(cluster, external)
    db_seconds = time.monotonic() - started
    return Seeded(len(external), round(stripe_seconds, 1), round(db_seconds, 1), round(len(external) / stripe_seconds))
