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
        samples: list[tuple[float, dict[str, int], int]] = []  # the profile: calls by route, invoices done
        drained = before  # the calls made until every invoice was seen open
        while time.monotonic() - restarted < 900:
            now = time.monotonic()
            stats = await asyncio.to_thread(cluster.emulator_stats)
            if first_call is None and sum(stats["requests"].values()) > sum(before["requests"].values()):
                first_call = now
            done = await db_value(cluster, "SELECT count(*) FROM invoices WHERE id = ANY($1::bigint[]) "
                                           "AND status = 'open' AND number IS NOT NULL", ids)
            samples.append((now - restarted, stats["requests"], int(done)))
            drained = stats
            if int(done) >= n:
                held = True
                break
            await asyncio.sleep(0.25)
        finished = time.monotonic()
        print(profile(samples, before["requests"]), flush=True)
        print(await passes(cluster, ids, restarted), flush=True)
        async with api.connection() as conn:
            failures = await conn.send_json("GET", "/api/v1/sync/failures")
    # The share counts the calls made while draining; the cost per invoice counts every call the batch
    # caused, the merges of Stripe's events that land after the last number came back included.
    settled = await settle(cluster, 300)
    after = await asyncio.to_thread(cluster.emulator_stats)
    drain = finished - (first_call or restarted)
    requests = {k: after["requests"].get(k, 0) - before["requests"].get(k, 0) for k in after["requests"]}
    total = sum(requests.values())

    def rate_limited(stats: dict[str, Any]) -> int:
        return sum(by.get("429", 0) for by in stats["responses"].values()) - sum(
            by.get("429", 0) for by in before["responses"].values())
    limited = rate_limited(after)
    ok = total - limited
    ok_draining = sum(drained["requests"].values()) - sum(before["requests"].values()) - rate_limited(drained)
    writes = after["writes"] - before["writes"]
    sizes = {"invoices": n, "lines_each": len(LINES), "limit_per_s": LIMIT, "latency_ms": "300 ± 25 %",
             "drain_s": round(drain, 1), "api_s": round(api_s, 1), "workers": len(workers)}
    top = ", ".join(f"{k} {v}" for k, v in sorted(requests.items(), key=lambda kv: -kv[1])[:6] if v)
    note = (f"drain of a full backlog (workers stopped while the API took {api_s:.1f} s for {n} creates + "
            f"finalizes; {(first_call or restarted) - restarted:.1f} s from restart to the first Stripe call); "
            f"{ok_draining} Stripe calls while draining, {total} requests in all after {settled} s to settle "
            f"({limited} answered 429), {writes} writes, {len(failures)} dead letters; "
            f"{'all' if held else 'NOT all'} open with numbers; by route: {top}")
    share = round(ok_draining / (drain * LIMIT) * 100, 1)
    return [Figure("invoices", "limit_used_percent", share, "%", 90, True, sizes, note),
            Figure("invoices", "stripe_calls_per_invoice", round(ok / n, 2), "calls", 7, False, sizes, note),
            Figure("invoices", "stripe_writes_per_invoice", round(writes / n, 2), "writes", 7, False, sizes, note),
            Figure("invoices", "seconds_until_all_open", round(finished - restarted, 1) if held else None, "s",
                   None, False, sizes, note + "; counted from the workers' restart", met=None if held else False)]


SHORT = {"POST /v1/invoices": "create", "POST /v1/invoices/{id}/add_lines": "lines",
         "POST /v1/invoices/{id}/finalize": "final", "GET /v1/invoices/{id}": "read"}


def profile(samples: list[tuple[float, dict[str, int], int]], before: dict[str, int]) -> str:
    """Calls per second of the drain, by route, and invoices done: where the limit went unused."""
    lines = ["[invoices] profile: second, calls/s by route (create lines final read other), invoices done"]
    mark, prev = 0.0, dict(before)
    for t, requests, done in samples:
        if t < mark + 1.0 and (t, requests, done) != samples[-1]:
            continue
        by = {k: requests.get(k, 0) - prev.get(k, 0) for k in requests}
        span = max(t - mark, 1e-6)
        named = [by.get(r, 0) for r in SHORT]
        other = sum(by.values()) - sum(named)
        lines.append(f"  {t:5.1f}s {sum(by.values()) / span:6.1f}/s  " + " ".join(f"{v:4d}" for v in named)
                     + f" {other:4d}  done {done}")
        mark, prev = t, dict(requests)
    return "\n".join(lines)


async def passes(cluster: Cluster, ids: list[int], restarted: float) -> str:
    """From the sync log: how long each invoice's outbound pass took (create trace to write-back) and how
    long after it its number came back to our row (the inbound tail)."""
    import asyncpg

    from twoway.kit.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(cluster.database_url))
    try:
        row = await conn.fetchrow("""
            WITH s AS (SELECT internal_id, min(created_at) AS at FROM sync_events WHERE kind = 'invoice'
                       AND direction = 'outbound' AND operation = 'create' AND status IN ('started', 'superseded')
                       AND internal_id = ANY($1::bigint[])
                       GROUP BY internal_id),
                 o AS (SELECT internal_id, min(created_at) AS at, count(*) AS n FROM sync_events
                       WHERE kind = 'invoice' AND direction = 'outbound' AND status = 'ok'
                       AND internal_id = ANY($1::bigint[]) GROUP BY internal_id),
                 d AS (SELECT o.internal_id, extract(epoch FROM o.at - s.at) AS pass,
                              extract(epoch FROM i.updated_at - o.at) AS back, o.n
                       FROM o JOIN s USING (internal_id) JOIN invoices i ON i.id = o.internal_id)
            SELECT count(*) AS n, percentile_cont(0.5) WITHIN GROUP (ORDER BY pass) AS pass50,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY pass) AS pass95, max(pass) AS passmax,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY back) AS back50,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY back) AS back95, max(back) AS backmax,
                   avg(n) AS oks FROM d""", ids)
        kinds = await conn.fetch("SELECT direction, operation, status, count(*) FROM sync_events WHERE kind = "
                                 "'invoice' GROUP BY 1, 2, 3 ORDER BY 4 DESC")
    finally:
        await conn.close()
    f = {k: round(float(v), 2) if v is not None else None for k, v in dict(row).items()}
    return (f"[invoices] outbound pass (trace to write-back) p50 {f['pass50']} s, p95 {f['pass95']} s, "
            f"max {f['passmax']} s over {f['n']} invoices ({f['oks']} ok rows each); number back in our row "
            f"after it: p50 {f['back50']} s, p95 {f['back95']} s, max {f['backmax']} s; sync log: "
            + ", ".join(f"{r[0]} {r[1]} {r[2]} {r[3]}" for r in kinds))


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
