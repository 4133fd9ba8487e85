"""Backfill at scale: N customers already in Stripe (the emulator) and N in our database, none linked.

`twoway reconcile` (a real process, so its peak RSS is its own) enqueues the work; workers drain it; the
run ends with 2N customers on each side, each linked once, and a second reconcile that finds no drift.

    python -m bench.reconcile_backfill --customers 10000 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import asyncpg
import stripe

from bench.cluster import Cluster, ClusterConfig
from twoway.kit.db import asyncpg_dsn


async def _seed_stripe(cluster: Cluster, n: int, concurrency: int = 32) -> None:
    client = stripe.StripeClient(cluster.stripe_key, base_addresses={"api": cluster.emulator_url},
                                 max_network_retries=2, http_client=stripe.HTTPXClient())
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await client.v1.customers.create_async({"name": f"Theirs {i}", "email": f"theirs{i}@example.com"})

    await asyncio.gather(*(one(i) for i in range(n)))


async def _sql(cluster: Cluster, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(asyncpg_dsn(cluster.database_url))
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


def _reconcile(cluster: Cluster, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "twoway", "reconcile", "stripe", "--json", *args], env=cluster.env,
                         capture_output=True, text=True, check=True, timeout=3600)
    return json.loads(out.stdout)


async def _wait_drained(cluster: Cluster, n: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        links = await _sql(cluster, "SELECT count(*) FROM links")
        unsent = await _sql(cluster, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        if links == 2 * n and unsent == 0 and len(cluster.emulator_customers()) == 2 * n:
            return True
        await asyncio.sleep(1)
    return False


def run(customers: int = 10_000, workers: int = 2, timeout: float = 1800) -> dict[str, Any]:
    # No workers yet, and no webhooks, so nothing links the seeded data before reconcile does.
    cluster = Cluster(ClusterConfig(workers=0, split_relay=False, inbound_mode="webhook"))
    cluster.start()
    try:
        cluster.set_faults(webhook_drop_rate=1.0)
        started = time.monotonic()
        asyncio.run(_seed_stripe(cluster, customers))
        asyncio.run(_sql(cluster, "INSERT INTO customers (name, email) SELECT 'Ours ' || g, 'ours' || g || "
                                  "'@example.com' FROM generate_series(1, $1) g", customers))
        seeded = time.monotonic() - started

        report = _reconcile(cluster)
        cluster.config.workers = workers
        drain_started = time.monotonic()
        cluster.start_workers()
        drained = asyncio.run(_wait_drained(cluster, customers, timeout))
        drain_seconds = time.monotonic() - drain_started
        theirs = cluster.emulator_customers()
        ours_emails = asyncio.run(_sql(cluster, "SELECT count(DISTINCT email) FROM customers"))
        again = _reconcile(cluster, "--dry-run")
        return {
            "customers_each_side": customers, "workers": workers, "seed_seconds": round(seeded, 1),
            "reconcile_seconds": report["seconds"], "reconcile_peak_rss_mb": report["peak_rss_mb"],
            "reconcile_counts": report["counts"], "enqueued": report["enqueued"],
            "drained": drained, "drain_seconds": round(drain_seconds, 1),
            "stripe_customers": len(theirs), "stripe_distinct_emails": len({c["email"] for c in theirs}),
            "our_distinct_emails": ours_emails, "second_run_drift": len(again["drifts"]),
            "second_run_seconds": again["seconds"], "second_run_peak_rss_mb": again["peak_rss_mb"],
        }
    finally:
        cluster.stop()
        cluster.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000, help="customers on each side")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    result = run(args.customers, args.workers, args.timeout)
    print(json.dumps(result, indent=2))
    ok = result["drained"] and result["second_run_drift"] == 0 and result["stripe_customers"] == 2 * args.customers
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
