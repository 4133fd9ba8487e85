"""Bench `invoices`: drafts of 5 lines created through our API, then finalized, against an emulator at
Stripe's speed (300 ms ± 25 % per call, 429s above 100 requests/s).

Figures: the share of the rate limit used while the work drains (target ≥ 90 %), Stripe calls per invoice
(target ≤ 7: one create, five items, one finalize; we add lines in one call), and the time until Stripe
holds every invoice open with its number back in our rows.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.cluster import Cluster, ClusterConfig

LIMIT = 100.0
LINES = [{"description": f"line {n}", "quantity": n + 1, "unit_amount": 100 * (n + 1)} for n in range(5)]


def config() -> ClusterConfig:
    return ClusterConfig(workers=2, inbound_mode="webhook", stripe_rate_limit=LIMIT,
                         emulator_args=["--rate-limit-per-second", str(int(LIMIT)), "--latency-ms", "300"])


async def invoices_workload(cluster: Cluster, n: int) -> list[Any]:
    """The API writes the whole batch while the workers are stopped, so what is measured is the drain of
    a full backlog (create, lines, finalize for every invoice) and not the speed of the load generator."""
    from bench.run import Figure, api_pool, bounded, create_customers, db_value, settle

    customers = await create_customers(cluster, 20, "inv")
    await settle(cluster, 300)  # the parents are linked: what follows is invoices alone
    workers = cluster.worker_names()
    for name in workers:
        await asyncio.to_thread(cluster.terminate, name)
    started = time.monotonic()
    ids: list[int] = []
    async with api_pool(cluster) as api:
        async def draft(i: int) -> None:
            async with api.connection() as conn:
                body = await conn.send_json("POST", "/api/v1/invoices", {
                    "customer_id": customers[i % len(customers)], "currency": "usd", "description": f"bench {i}",
                    "collection_method": "send_invoice", "days_until_due": 30, "lines": LINES})
                ids.append(int(body["id"]))
                await conn.send_json("POST", f"/api/v1/invoices/{body['id']}/finalize")
        await bounded(n, 32, draft)
        api_s = time.monotonic() - started
        before = await asyncio.to_thread(cluster.emulator_stats)
        restarted = time.monotonic()
        for name in workers:
            await asyncio.to_thread(cluster.restart, name)
        first_call: float | None = None
        held = False
        while time.monotonic() - restarted < 900:
            now = time.monotonic()
            if first_call is None:
                stats = await asyncio.to_thread(cluster.emulator_stats)
                if sum(stats["requests"].values()) > sum(before["requests"].values()):
                    first_call = now
            done = await db_value(cluster, "SELECT count(*) FROM invoices WHERE id = ANY($1::bigint[]) "
                                           "AND status = 'open' AND number IS NOT NULL", ids)
            if int(done) >= n:
                held = True
                break
            await asyncio.sleep(0.5)
        finished = time.monotonic()
        async with api.connection() as conn:
            failures = await conn.send_json("GET", "/api/v1/sync/failures")
    after = await asyncio.to_thread(cluster.emulator_stats)
    drain = finished - (first_call or restarted)
    requests = {k: after["requests"].get(k, 0) - before["requests"].get(k, 0) for k in after["requests"]}
    total = sum(requests.values())
    limited = sum(by.get("429", 0) for by in after["responses"].values()) - sum(
        by.get("429", 0) for by in before["responses"].values())
    ok = total - limited
    writes = after["writes"] - before["writes"]
    sizes = {"invoices": n, "lines_each": len(LINES), "limit_per_s": LIMIT, "latency_ms": "300 ± 25 %",
             "drain_s": round(drain, 1), "api_s": round(api_s, 1), "workers": len(workers)}
    top = ", ".join(f"{k} {v}" for k, v in sorted(requests.items(), key=lambda kv: -kv[1])[:6] if v)
    note = (f"drain of a full backlog (workers stopped while the API took {api_s:.1f} s for {n} creates + "
            f"finalizes; {(first_call or restarted) - restarted:.1f} s from restart to the first Stripe call); "
            f"{total} Stripe requests ({limited} answered 429), {writes} writes, {len(failures)} dead letters; "
            f"{'all' if held else 'NOT all'} open with numbers; by route: {top}")
    return [Figure("invoices", "limit_used_percent", round(ok / (drain * LIMIT) * 100, 1), "%", 90, True, sizes,
                   note),
            Figure("invoices", "stripe_calls_per_invoice", round(ok / n, 2), "calls", 7, False, sizes, note),
            Figure("invoices", "stripe_writes_per_invoice", round(writes / n, 2), "writes", 7, False, sizes, note),
            Figure("invoices", "seconds_until_all_open", round(finished - restarted, 1) if held else None, "s",
                   None, False, sizes, note + "; counted from the workers' restart", met=None if held else False)]


def run(quick: bool) -> list[Any]:
    from bench.run import with_cluster

    figures: list[Any] = with_cluster(config(), lambda c: invoices_workload(c, 100 if quick else 500))
    return figures


def main() -> None:
    """`python -m bench.invoices [N]`: this workload alone, printed (`make bench` runs it with the rest)."""
    import sys

    from bench.run import with_cluster

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    with_cluster(config(), lambda c: invoices_workload(c, n))


if __name__ == "__main__":
    main()
