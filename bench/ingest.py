"""Ingest at line rate (issue 12): `webhook_ingest`, `api_writes`, `webhook_flood`, each at 1 and 2 API processes.

`python -m bench.ingest [--quick] [--workers 1,2] [--profile]` runs them alone; `bench.run` runs them in
`make bench`. API CPU is read from /proc for the API's whole process group (uvicorn's supervisor and
its workers), before and after each workload.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from bench.cluster import Cluster, ClusterConfig
from bench.fasthttp import HTTPError, Pool

TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User+system CPU of every live process in the group (uvicorn workers are children of the supervisor)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: the process group
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def api_cpu(cluster: Cluster) -> float:
    return group_cpu_seconds(cluster.procs["api"].pid)


def cpu_split(cluster: Cluster) -> dict[str, float]:
    """CPU seconds so far of the API, PostgreSQL (postmaster and backends) and this driver."""
    import resource

    import psutil

    pg = 0.0
    if cluster.pg is not None:
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            postmaster = psutil.Process(int((cluster.pg.data_dir / "postmaster.pid").read_text().split()[0]))
            for proc in [postmaster, *postmaster.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    pg += times.user + times.system
    me = resource.getrusage(resource.RUSAGE_SELF)
    return {"api": api_cpu(cluster), "postgres": pg, "driver": me.ru_utime + me.ru_stime}


def per_item_ms(before: dict[str, float], after: dict[str, float], count: int) -> str:
    return ", ".join(f"{k} {(after[k] - before[k]) / max(count, 1) * 1000:.2f}" for k in before)


def signed(secret: bytes, body: bytes) -> str:
    stamp = int(time.time())
    return f"t={stamp},v1={hmac.new(secret, f'{stamp}.'.encode() + body, hashlib.sha256).hexdigest()}"


def event_body(i: int, prefix: str) -> bytes:
    return json.dumps({"id": f"evt_{prefix}_{i}", "object": "event", "type": "customer.updated", "livemode": False,
                       "created": int(time.time()),
                       "data": {"object": {"id": f"cus_{prefix}_{i % 500}", "object": "customer",
                                           "name": f"n{i}", "email": f"n{i}@ex.io"}}}).encode()


async def webhook_ingest(cluster: Cluster, n: int, label: str, senders: int = 32) -> list[Any]:
    from bench.run import Figure, bounded, db_value, pct

    latencies: list[float] = []
    secret = cluster.webhook_secret.encode()
    prefix = "wi" + secrets.token_hex(3)
    split0 = cpu_split(cluster)
    async with Pool(cluster.api_url) as api:
        async def send(i: int) -> None:
            body = event_body(i, prefix)
            async with api.connection() as conn:
                t0 = time.monotonic()
                status, answer = await conn.request("POST", "/api/v1/webhooks/stripe", body, {
                    "Content-Type": "application/json", "Stripe-Signature": signed(secret, body)})
                latencies.append((time.monotonic() - t0) * 1000)
            if status != 200:
                raise HTTPError("POST", "/api/v1/webhooks/stripe", status, answer)
        started = time.monotonic()
        await bounded(n, senders, send)
        elapsed = time.monotonic() - started
    split = per_item_ms(split0, cpu_split(cluster), n)
    stored = int(await db_value(cluster, f"SELECT count(*) FROM inbox WHERE event_id LIKE 'evt_{prefix}_%'"))
    queued = int(await db_value(cluster, "SELECT count(*) FROM outbox WHERE payload->>'event_id' LIKE $1",
                                f"evt_{prefix}_%"))
    sizes = {"events": n, "senders": senders, "stored": stored, "with_outbox_row": queued, "setup": label}
    note = (f"{label}; p50={pct(latencies, 0.5)} ms; CPU ms per event: {split}; each answered 200 after the "
            "group commit holding its inbox + outbox rows")
    return [Figure("webhook_ingest", "events_per_s", round(stored / elapsed, 1), "events/s", 3000, True, sizes, note),
            Figure("webhook_ingest", "p99_ms", pct(latencies, 0.99), "ms", 50, False, sizes, note)]


async def api_writes(cluster: Cluster, n: int, label: str, clients: int = 64) -> list[Any]:
    from bench.run import Figure, api_pool, bounded, pct

    latencies: list[float] = []
    prefix = "aw" + secrets.token_hex(3)
    accepted = 0
    split0 = cpu_split(cluster)
    async with api_pool(cluster) as api:
        async def create(i: int) -> None:
            nonlocal accepted
            body = json.dumps({"name": f"{prefix} {i}", "email": f"{prefix}{i}@ex.io"}).encode()
            async with api.connection() as conn:
                t0 = time.monotonic()
                status, answer = await conn.request("POST", "/api/v1/customers", body,
                                                    {"Content-Type": "application/json"})
                latencies.append((time.monotonic() - t0) * 1000)
            if status != 201:
                raise HTTPError("POST", "/api/v1/customers", status, answer)
            accepted += 1
        started = time.monotonic()
        await bounded(n, clients, create)
        elapsed = time.monotonic() - started
    split1 = cpu_split(cluster)
    cpu_ms = (split1["api"] - split0["api"]) / max(accepted, 1) * 1000
    sizes = {"creates": n, "clients": clients, "setup": label}
    note = (f"{label}; p50={pct(latencies, 0.5)} ms; CPU ms per create: {per_item_ms(split0, split1, accepted)}; "
            "each answered 201 after the commit holding its row + outbox row")
    return [Figure("api_writes", "creates_per_s", round(accepted / elapsed, 1), "creates/s", 1500, True, sizes, note),
            Figure("api_writes", "p99_ms", pct(latencies, 0.99), "ms", 50, False, sizes, note),
            Figure("api_writes", "api_cpu_ms_per_write", round(cpu_ms, 3), "ms", 0.5, False, sizes, note)]


REJECTION_BYTES = """
SELECT pg_total_relation_size('webhook_rejections') + pg_total_relation_size('webhook_rejection_counts')
"""


async def webhook_flood(cluster: Cluster, seconds: float, label: str, forgers: int = 32,
                        genuine_rate: float = 200) -> list[Any]:
    """Genuine events at `genuine_rate`/s (open loop): first alone (the control), then while `forgers`
    lanes send forged deliveries (wrong secret) as fast as they are answered."""
    from bench.run import Figure, db_value, paced, pct

    secret = cluster.webhook_secret.encode()
    prefix = "fl" + secrets.token_hex(3)
    before = int(await db_value(cluster, REJECTION_BYTES))
    rows_before = int(await db_value(cluster, "SELECT count(*) FROM webhook_rejections"))
    failures: list[int] = []
    forged = 0
    stop = asyncio.Event()
    async with Pool(cluster.api_url) as api:
        async def forger(lane: int) -> None:
            nonlocal forged
            # One forged delivery per lane, sent again and again: the driver's CPU goes to sending.
            body = event_body(lane, prefix + "x")
            headers = {"Content-Type": "application/json", "Stripe-Signature": signed(b"whsec_forged", body)}
            async with api.connection() as conn:
                while not stop.is_set():
                    status, _ = await conn.request("POST", "/api/v1/webhooks/stripe", body, headers)
                    forged += 1
                    if status != 400:
                        failures.append(status)

        async def genuine(count: int, offset: int) -> list[float]:
            latencies: list[float] = []

            async def real(i: int) -> None:
                body = event_body(offset + i, prefix)
                async with api.connection() as conn:
                    t0 = time.monotonic()
                    status, _ = await conn.request("POST", "/api/v1/webhooks/stripe", body, {
                        "Content-Type": "application/json", "Stripe-Signature": signed(secret, body)})
                    latencies.append((time.monotonic() - t0) * 1000)
                if status != 200:
                    failures.append(status)
            await paced(count, genuine_rate, real)
            return latencies
        n = int(seconds * genuine_rate)
        alone = await genuine(n // 2, 0)
        flooding = [asyncio.create_task(forger(k)) for k in range(forgers)]
        started = time.monotonic()
        flooded = await genuine(n, n)
        elapsed = time.monotonic() - started
        stop.set()
        await asyncio.gather(*flooding)
    await asyncio.sleep(1.5)  # the rejection counters are flushed once a second
    growth = int(await db_value(cluster, REJECTION_BYTES)) - before
    rows = int(await db_value(cluster, "SELECT count(*) FROM webhook_rejections"))
    counted = int(await db_value(cluster, "SELECT coalesce(sum(count), 0) FROM webhook_rejection_counts"))
    stored = int(await db_value(cluster, f"SELECT count(*) FROM inbox WHERE event_id LIKE 'evt_{prefix}_%'"))
    sizes = {"seconds": round(elapsed, 1), "forgers": forgers, "forged_sent": forged,
             "forged_per_s": round(forged / elapsed), "genuine": len(flooded), "genuine_alone": len(alone),
             "genuine_stored": stored, "sample_rows": rows, "sample_rows_before": rows_before,
             "rejections_counted": counted, "rejection_storage_growth_bytes": growth,
             "unexpected_statuses": sorted(set(failures)), "setup": label}
    note = (f"{label}; {forged:,} forged ({forged / elapsed:.0f}/s) rejected 400; genuine p50/p99 "
            f"{pct(flooded, 0.5)}/{pct(flooded, 0.99)} ms under the flood vs {pct(alone, 0.5)}/{pct(alone, 0.99)} ms "
            f"alone; rejection tables grew {growth / 1024:.0f} KiB; {rows} sample rows kept (cap 1000)")
    return [Figure("webhook_flood", "genuine_p99_ms", pct(flooded, 0.99), "ms", 100, False, sizes, note),
            Figure("webhook_flood", "rejection_sample_rows", rows, "rows", 1000, False, sizes, note)]


def config(api_workers: int, sync_workers: int = 0) -> ClusterConfig:
    return ClusterConfig(workers=sync_workers, split_relay=sync_workers > 0, inbound_mode="webhook",
                         env={"API_WORKERS": str(api_workers)})


def run(quick: bool, api_workers: tuple[int, ...] = (1, 2)) -> list[Any]:
    """Every workload at each API process count (no sync workers), then ingest with the workers running."""
    from bench.run import with_cluster

    sizes = {"ingest": 3000 if quick else 20000, "writes": 3000 if quick else 20000, "flood_s": 8 if quick else 20}
    figures: list[Any] = []
    for count in api_workers:
        label = f"{count} API process{'es' if count > 1 else ''}, no sync workers"

        async def body(c: Cluster, label: str = label) -> list[Any]:
            out = await webhook_ingest(c, sizes["ingest"], label)
            out += await api_writes(c, sizes["writes"], label)
            out += await webhook_flood(c, sizes["flood_s"], label)
            return out
        figures += with_cluster(config(count), body)
    with_workers = f"{max(api_workers)} API processes, relay + 2 sync workers running"

    figures += with_cluster(config(max(api_workers), 2), lambda c: webhook_ingest(c, sizes["ingest"], with_workers))
    return figures


def main() -> int:
    import argparse

    from bench.run import show

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", default="1,2", help="API process counts to measure")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    figures = [f.as_dict() for f in run(args.quick, tuple(int(w) for w in args.workers.split(",")))]
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    show(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
