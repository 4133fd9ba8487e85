"""Benchmarks over real processes: `python -m bench.run --out bench/results.json [--quick]`.

Targets are goals to measure against, never asserted. Each figure names its workload, sizes, machine,
target, whether it was met and by how much it was missed. Methods are described in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench import (
    cpu_per_change,
    ingest,
    invoices,
    outage,
    realistic_stripe,
    realistic_stripe_endpoints,
    relay,
    salesforce_client,
)
from bench.chaos import machine
from bench.cluster import Cluster, ClusterConfig
from bench.fasthttp import Pool
from bench.per_second import Seconds, describe
from bench.seed import seed_linked
from twoway.kit.db import asyncpg_dsn
from twoway.kit.embedded import free_port

UNTHROTTLED = 100_000.0


@dataclass
class Figure:
    workload: str
    metric: str
    value: float | None
    unit: str
    target: float | None
    higher_is_better: bool
    sizes: dict[str, Any]
    note: str = ""
    met: bool | None = None  # only when there is no value to compare (e.g. nothing arrived: a miss)

    def as_dict(self) -> dict[str, Any]:
        met = self.met if self.value is None or self.target is None else (
            self.value >= self.target if self.higher_is_better else self.value <= self.target)
        miss = None
        if met is False and self.value is not None and self.target:
            miss = round(abs(self.value - self.target) / self.target * 100, 1)
        return {"workload": self.workload, "metric": self.metric, "value": self.value, "unit": self.unit,
                "target": self.target, "target_is": ">=" if self.higher_is_better else "<=", "met": met,
                "missed_by_percent": miss, "sizes": self.sizes, "machine": machine(), "note": self.note}


def pct(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def api_pool(cluster: Cluster) -> Pool:
    """Keep-alive connections to our API, one per lane (bench/fasthttp.py: httpx would cost ~2 ms of CPU
    per request, on the same 2 cores as the system it measures)."""
    return Pool(cluster.api_url, {"Authorization": f"Bearer {cluster.api_key}"})


def stripe_pool(cluster: Cluster) -> Pool:
    """Raw form posts to the emulator: the driver must not be the bottleneck it measures."""
    return Pool(cluster.emulator_url, {"Authorization": f"Bearer {cluster.stripe_key}"})


async def paced(count: int, rate: float, job: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Start `count` jobs at `rate`/s (open loop: a slow system does not slow the arrivals)."""
    start = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(job(i)))
    await asyncio.gather(*tasks)


async def bounded(count: int, concurrency: int, job: Callable[[int], Awaitable[None]]) -> None:
    """Run `count` jobs with at most `concurrency` in flight (closed loop: as fast as it goes)."""
    queue = iter(range(count))

    async def lane() -> None:
        for i in queue:
            await job(i)

    await asyncio.gather(*(lane() for _ in range(concurrency)))


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(step)
    return False


async def db_value(cluster: Cluster, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(asyncpg_dsn(cluster.database_url))
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def create_customers(cluster: Cluster, count: int, prefix: str, concurrency: int = 32) -> list[int]:
    ids: list[int] = []
    async with api_pool(cluster) as api:
        async def one(i: int) -> None:
            async with api.connection() as conn:
                body = await conn.send_json("POST", "/api/v1/customers",
                                            {"name": f"{prefix}{i}", "email": f"{prefix}{i}@ex.io"})
            ids.append(body["id"])
        await bounded(count, concurrency, one)
    return ids


BACKLOG = """
    SELECT (SELECT count(*) FROM outbox WHERE sent_at IS NULL)
         + (SELECT count(*) FROM inbox WHERE processed_at IS NULL)
         + (SELECT count(*) FROM customers c
            LEFT JOIN links l ON l.kind = 'customer' AND l.system = 'stripe' AND l.internal_id = c.id
            WHERE c.deleted_at IS NULL AND (l.id IS NULL OR l.last_pushed_version < c.version))
"""


async def settle(cluster: Cluster, timeout: float = 300) -> float:
    """Wait until nothing is left to do (no unsent outbox row, no unprocessed inbox event, every live row
    linked and pushed), so one workload's tail (e.g. 5,000 echo webhooks) does not land in the next one's
    figures. Returns the seconds it took."""
    started = time.monotonic()

    async def idle() -> bool:
        return int(await db_value(cluster, BACKLOG)) == 0
    await wait_for(idle, timeout, 0.5)
    return round(time.monotonic() - started, 1)


async def linked_count(cluster: Cluster) -> int:
    return int(await db_value(cluster, "SELECT count(*) FROM links"))


# -- outbound ----------------------------------------------------------------------------------------


async def outbound_throughput(cluster: Cluster, n: int) -> Figure:
    before = int((await asyncio.to_thread(cluster.emulator_stats))["customers"])
    started = time.monotonic()
    await create_customers(cluster, n, "thr", concurrency=64)
    submitted = time.monotonic() - started

    async def arrived() -> bool:
        return int((await asyncio.to_thread(cluster.emulator_stats))["customers"]) >= before + n
    done = await wait_for(arrived, timeout=max(120, n / 50), step=0.2)
    elapsed = time.monotonic() - started
    return Figure("outbound_throughput", "changes_per_s", round(n / elapsed, 1) if done else None, "changes/s",
                  1000, True, {"creates": n, "workers": cluster.config.workers, "api_concurrency": 64},
                  f"API accepted them at {n / submitted:.0f}/s; end to end = first POST to last Stripe create")


class Receiver:
    """A webhook endpoint of our own at the emulator: when Stripe holds a value, it tells us at once."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []
        self.port = free_port()

        async def hook(request: Request) -> Response:
            event = json.loads(await request.body())
            name = ((event.get("data") or {}).get("object") or {}).get("name") or ""
            self.seen.append((name, time.monotonic()))
            return Response("{}", media_type="application/json")

        config = uvicorn.Config(Starlette(routes=[Route("/hook", hook, methods=["POST"])]), host="127.0.0.1",
                                port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)

    async def __aenter__(self) -> Receiver:
        self.task = asyncio.create_task(self.server.serve())
        await wait_for(lambda: _true(self.server.started), 10, 0.05)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.server.should_exit = True
        await self.task


async def _true(value: bool) -> bool:
    return value


def tag(record: int, seq: int) -> str:
    return f"lat-{record}-{seq}"


def untag(name: str) -> tuple[int, int] | None:
    parts = name.split("-")
    return (int(parts[1]), int(parts[2])) if len(parts) == 3 and parts[0] == "lat" else None


def latencies_ms(sent: dict[int, tuple[int, float]], seen: list[tuple[str, float]],
                 versions: dict[int, int] | None = None) -> list[float]:
    """A change has landed when the other side holds it or a later value of the same record: the
    engine coalesces changes to one record, so an overwritten value may never be seen on its own.
    "Later" is by the version our API answered when `versions` (change -> version) is given: concurrent
    PATCHes to one record are applied in any order, so sending order says nothing. Otherwise by sending
    order (inbound: the emulator applies one record's updates in the order it answers them)."""
    order = versions if versions is not None else {seq: seq for seq in sent}
    landed: dict[int, list[tuple[int, float]]] = {}
    for name, at in seen:
        parsed = untag(name)
        if parsed is not None and parsed[1] in order:
            landed.setdefault(parsed[0], []).append((order[parsed[1]], at))
    out = []
    for seq, (record, t0) in sent.items():
        times = [at for s, at in landed.get(record, []) if s >= order[seq]]
        if times:
            out.append((min(times) - t0) * 1000)
    return out


async def outbound_latency(cluster: Cluster, n: int, rate: float) -> Figure:
    ids = await create_customers(cluster, 200, "lat-seed")
    await settle(cluster)
    async with Receiver() as receiver, stripe_pool(cluster) as st, api_pool(cluster) as api:
        async with st.connection() as conn:
            endpoint = await conn.send_form("POST", "/v1/webhook_endpoints", {
                "url": f"http://127.0.0.1:{receiver.port}/hook", "enabled_events[]": "customer.updated"})
        sent: dict[int, tuple[int, float]] = {}
        versions: dict[int, int] = {}  # change -> the version our API answered for it

        async def change(i: int) -> None:
            record = i % len(ids)
            async with api.connection() as conn:
                body = await conn.send_json("PATCH", f"/api/v1/customers/{ids[record]}", {"name": tag(record, i)})
            sent[i] = (record, time.monotonic())
            versions[i] = body["version"]
        await paced(n, rate, change)
        await wait_for(lambda: _true(len(latencies_ms(sent, receiver.seen, versions)) >= len(sent)), 120, 0.2)
        latencies = latencies_ms(sent, receiver.seen, versions)
        async with st.connection() as conn:
            await conn.send_json("DELETE", f"/v1/webhook_endpoints/{endpoint['id']}")
    return _latency_figure("outbound_latency", latencies, n, rate, "change accepted by our API (200) to the "
                           "emulator's customer.updated webhook (this value, or one our API answered with a "
                           "later version) reaching a local receiver")


def _latency_figure(workload: str, latencies: list[float], n: int, rate: float, method: str) -> Figure:
    lost = n - len(latencies)
    if not latencies:
        return Figure(workload, "p99_ms", None, "ms", 250, False, {"changes": n, "rate_per_s": rate},
                      f"{method}; NOT MET: none of {n} changes arrived within 120 s of the last one", met=False)
    note = f"{method}; p50={pct(latencies, 0.5)} ms, p95={pct(latencies, 0.95)} ms, max={pct(latencies, 1.0)} ms"
    return Figure(workload, "p99_ms", pct(latencies, 0.99), "ms", 250, False,
                  {"changes": n, "rate_per_s": rate}, note + (f"; {lost} never arrived" if lost else ""))


# -- inbound -----------------------------------------------------------------------------------------


async def inbound_latency(cluster: Cluster, n: int, rate: float) -> Figure:
    pairs = [tuple(r) for r in json.loads(await db_value(
        cluster, "SELECT coalesce(json_agg(json_build_array(internal_id, external_id)), '[]') FROM "
                 "(SELECT internal_id, external_id FROM links ORDER BY internal_id LIMIT 200) x"))]
    sent: dict[int, tuple[int, float]] = {}
    seen: list[tuple[str, float]] = []
    async with stripe_pool(cluster) as st:
        async def change(i: int) -> None:
            record = i % len(pairs)
            async with st.connection() as conn:
                await conn.send_form("POST", f"/v1/customers/{pairs[record][1]}", {"name": tag(record, i)})
            sent[i] = (record, time.monotonic())
        watcher = asyncio.create_task(_watch_rows(cluster, [int(p[0]) for p in pairs], seen))
        await paced(n, rate, change)
        await wait_for(lambda: _true(len(latencies_ms(sent, seen)) >= len(sent)), 120, 0.2)
        watcher.cancel()
    return _latency_figure("inbound_latency", latencies_ms(sent, seen), n, rate, "Stripe update answered by the "
                           "emulator to our row holding it or a later value (rows polled every 5 ms)")


async def _watch_rows(cluster: Cluster, ids: list[int], seen: list[tuple[str, float]]) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(cluster.database_url))
    last: dict[int, str] = {}
    try:
        while True:
            rows = await conn.fetch("SELECT id, name FROM customers WHERE id = ANY($1::bigint[])", ids)
            now = time.monotonic()
            for row in rows:
                if last.get(row["id"]) != row["name"]:
                    last[row["id"]] = row["name"]
                    seen.append((row["name"], now))
            await asyncio.sleep(0.005)
    finally:
        await conn.close()


# -- rate-limited ------------------------------------------------------------------------------------


async def rate_limited(cluster: Cluster, customers: int, updates: int, limit: float,
                       endpoint_limit: float | None = None) -> list[Figure]:
    """`endpoint_limit`: the emulator limits each endpoint too (rate_limited_endpoints), so the updates'
    endpoint, not the account, bounds the drain: its share of that limit is a figure of its own."""
    workload = "rate_limited" if endpoint_limit is None else "rate_limited_endpoints"
    ids = await create_customers(cluster, customers, "rl")
    # every row pushed, every echo webhook merged
    await settle(cluster, customers / min(limit, endpoint_limit or limit) * 4 + 60)
    before = await asyncio.to_thread(cluster.emulator_stats)
    since = time.time()
    started = time.monotonic()
    async with api_pool(cluster) as api, Seconds(cluster) as seconds:
        async def update(i: int) -> None:
            async with api.connection() as conn:
                await conn.send_json("PATCH", f"/api/v1/customers/{ids[i % len(ids)]}", {"name": f"rl-{i}"})
        await bounded(updates, 32, update)
        final = {ids[i % len(ids)]: f"rl-{i}" for i in range(updates)}
        await wait_for(lambda: _stripe_holds(cluster, final), 600, 1.0)
        elapsed = time.monotonic() - started
        async with api.connection() as conn:
            failures = await conn.send_json("GET", "/api/v1/sync/failures")
    after = await asyncio.to_thread(cluster.emulator_stats)
    writes = after["writes"] - before["writes"]
    requests = sum(after["requests"].values()) - sum(before["requests"].values())
    ok = _ok_requests(after) - _ok_requests(before)
    sizes = {"customers": customers, "updates": updates, "limit_per_s": limit, "elapsed_s": round(elapsed, 1)}
    used = round(ok / (elapsed * limit) * 100, 1)
    note = f"{requests} requests ({requests - ok} answered 429), {writes} writes, {len(failures)} dead letters"
    figures = [Figure(workload, "stripe_writes", writes, "writes", updates * 0.11, False, sizes, note),
               Figure(workload, "dead_letters", len(failures), "count", 0, False, sizes, note)]
    if endpoint_limit is None:
        return [Figure(workload, "limit_used_percent", used, "%", 95, True, sizes, note), *figures]
    # Updates and the reads of their echoes are two endpoints: together at most 2 x 25/s of the 100/s.
    sizes["endpoint_limit_per_s"] = endpoint_limit
    span = seconds.span(realistic_stripe_endpoints.UPDATE, since)
    routes = describe(seconds.spans(since), {"*": limit, "": endpoint_limit})
    note += f"; per route over its own active window: {routes}"
    share = round(span.rate / endpoint_limit * 100, 1) if span else None
    return [Figure(workload, "limit_used_percent", used, "%", None, True, sizes,
                   note + "; calls answered / (elapsed from the first PATCH to Stripe holding every name x 100/s)"),
            Figure(workload, "update_endpoint_used_percent", share, "%", 95, True, sizes, note,
                   met=None if span else False),
            *figures]


def _ok_requests(stats: dict[str, Any]) -> int:
    return sum(n for by_status in stats["responses"].values() for code, n in by_status.items() if code != "429")


async def _stripe_holds(cluster: Cluster, final: dict[int, str]) -> bool:
    theirs = {c.get("metadata", {}).get("internal_id"): c.get("name")
              for c in await asyncio.to_thread(cluster.emulator_customers)}
    return all(theirs.get(str(i)) == name for i, name in final.items())


# -- reconcile ---------------------------------------------------------------------------------------


async def reconcile_workload(cluster: Cluster, size: int, seed_budget_s: float) -> list[Figure]:
    """`size` customers on each side, all linked and in agreement; time `twoway reconcile --dry-run --json`."""
    cluster.set_faults(webhook_drop_rate=1.0)  # no workers, and the API need not ingest 100k created events
    seeded = await seed_linked(cluster, size, deadline=time.monotonic() + seed_budget_s)
    started = time.monotonic()
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "twoway", "reconcile", "stripe", "--dry-run", "--json"],
        env=cluster.env, capture_output=True, text=True, check=True, timeout=900)
    wall = time.monotonic() - started
    report = json.loads(out.stdout)
    sizes = {"ours": seeded.customers, "theirs": seeded.customers, "linked": seeded.customers,
             "requested": size, "scanned_external": report["scanned_external"],
             "scanned_internal": report["scanned_internal"], "drift": len(report["drifts"]),
             "seed_stripe_s": seeded.stripe_seconds, "seed_db_s": seeded.db_seconds}
    seeding = (f"seeded {seeded.customers:,} Stripe customers through the emulator's public API (POST /v1/customers "
               f"with metadata[internal_id], 64 keep-alive lanes of bench/fasthttp.py, {seeded.stripe_rate}/s, "
               f"{seeded.stripe_seconds} s) and the same number of rows + links by COPY in one transaction "
               f"(base = {{name, email}}, last_pushed_version = version; {seeded.db_seconds} s)")
    scale = "" if seeded.customers == size else \
        f"; SCALED DOWN from {size:,}: seeding hit its {seed_budget_s:.0f} s budget"
    note = (f"wall time of the `twoway reconcile stripe --dry-run --json` process (its own scan: "
            f"{report['seconds']} s); {seeding}; drift found: {len(report['drifts'])} (expected 0){scale}")
    return [Figure("reconcile", "seconds", round(wall, 1), "s", 60, False, sizes, note),
            Figure("reconcile", "peak_rss_mb", report["peak_rss_mb"], "MB", 300, False, sizes,
                   "ru_maxrss of the reconcile process, as its JSON report gives it; " + seeding + scale)]


# -- the run -----------------------------------------------------------------------------------------


def progress(figure: Figure) -> Figure:
    print(f"[bench] {figure.workload} {figure.metric} = {figure.value} {figure.unit} ({figure.note})", flush=True)
    return figure


def with_cluster(config: ClusterConfig, body: Callable[[Cluster], Coroutine[Any, Any, Any]]) -> Any:
    cluster = Cluster(config).start()
    try:
        started = time.monotonic()
        result: Any = asyncio.run(body(cluster))
        print(f"[bench] cluster run took {time.monotonic() - started:.0f} s", flush=True)
        for figure in result if isinstance(result, list) else [result]:
            progress(figure)
        return result
    finally:
        cluster.stop()
        cluster.cleanup()


# Workloads in their own modules: name -> run(quick) -> figures. `--only NAME[,NAME]` picks any of these
# or of the names in run_all below.
EXTRA: dict[str, Callable[[bool], list[Any]]] = {
    "realistic_stripe": realistic_stripe.run, "cpu_per_change": cpu_per_change.run, "outage": outage.run,
    "invoices": invoices.run, "realistic_stripe_endpoints": realistic_stripe_endpoints.run,
}
SYNC_PATHS = ("outbound_throughput", "outbound_latency", "inbound_latency")
NAMES = (*SYNC_PATHS, "ingest", "salesforce_client", "relay", "rate_limited", "rate_limited_endpoints", "reconcile",
         *EXTRA)


def run_all(quick: bool, only: set[str] | None = None) -> tuple[list[Figure], dict[str, Any]]:
    def want(name: str) -> bool:
        return only is None or name in only

    s = {"throughput": 500 if quick else 5000, "latency": 400 if quick else 2000, "ingest": 3000 if quick else 20000,
         "rl_customers": 200 if quick else 1000, "rl_updates": 2000 if quick else 10000,
         "reconcile": 10_000 if quick else 100_000}
    figures: list[Figure] = []
    unthrottled = ClusterConfig(workers=2, inbound_mode="webhook", stripe_rate_limit=UNTHROTTLED)

    async def sync_paths(c: Cluster) -> list[Figure]:
        out = []
        # Warm up first: a cold broker makes the first publish and the first fetch wait for metadata (~5 s
        # each on the dev broker), which is start-up, not throughput.
        await create_customers(c, 20, "warm")
        await settle(c)
        if want("outbound_throughput"):
            out.append(progress(await outbound_throughput(c, s["throughput"])))
            print(f"[bench] settled in {await settle(c)} s", flush=True)
        if want("outbound_latency"):
            out.append(progress(await outbound_latency(c, s["latency"], 200)))
            print(f"[bench] settled in {await settle(c)} s", flush=True)
        if want("inbound_latency"):
            if not want("outbound_latency"):
                await create_customers(c, 200, "inb-seed")  # the records it changes in Stripe
                await settle(c)
            out.append(progress(await inbound_latency(c, s["latency"], 200)))
        return out
    if any(want(name) for name in SYNC_PATHS):
        figures += with_cluster(unthrottled, sync_paths)
    if want("ingest"):
        figures += ingest.run(quick)  # webhook_ingest, api_writes, webhook_flood at 1 and 2 API processes
    if want("salesforce_client"):
        figures += salesforce_client.run(quick)  # simple-salesforce in threads vs plain async HTTP, per call
    if want("relay"):
        figures += with_cluster(relay.config(), lambda c: relay.relay(c, 20_000 if quick else 100_000))
    limited = ClusterConfig(workers=2, inbound_mode="webhook", stripe_rate_limit=100,
                            emulator_args=["--rate-limit-per-second", "100"])
    if want("rate_limited"):
        figures += with_cluster(limited, lambda c: rate_limited(c, s["rl_customers"], s["rl_updates"], 100))
    if want("rate_limited_endpoints"):  # Stripe's live limiters, and ours at their live defaults
        figures += with_cluster(realistic_stripe_endpoints.limited(latency_ms=0), lambda c: rate_limited(
            c, s["rl_customers"], s["rl_updates"], 100, endpoint_limit=realistic_stripe_endpoints.ENDPOINT))
    # No workers and no relay: reconcile is measured alone, against a quiet database and emulator.
    if want("reconcile"):
        figures += with_cluster(ClusterConfig(workers=0, split_relay=False, inbound_mode="webhook"),
                                lambda c: reconcile_workload(c, s["reconcile"], seed_budget_s=60 if quick else 300))
    figures += [f for name, run in EXTRA.items() if want(name) for f in run(quick)]
    return figures, s


def scaled_down(quick: bool, figures: list[Figure]) -> str:
    """What ran below the sizes the targets are stated for, and why; "none" when nothing did."""
    out = []
    if quick:
        out.append("--quick run: every workload at its smoke size (see sizes); reconcile at 10k/10k, not 100k/100k")
    for f in figures:
        if f.workload == "reconcile" and f.metric == "seconds" and f.sizes["ours"] < f.sizes["requested"]:
            out.append(f"reconcile ran at {f.sizes['ours']:,}/{f.sizes['ours']:,} instead of "
                       f"{f.sizes['requested']:,}: seeding the emulator hit its time budget (make bench must stay "
                       "under ~25 min)")
    return "; ".join(out) or "none: reconcile ran at the full 100k ours / 100k theirs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", help=f"comma-separated workloads, of: {', '.join(NAMES)} (then --out is "
                                       "written only when given)")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    if only and only - set(NAMES):
        parser.error(f"unknown workload(s): {', '.join(sorted(only - set(NAMES)))}; known: {', '.join(NAMES)}")
    started = time.monotonic()
    figures, sizes = run_all(args.quick, only)
    result = {"machine": machine(), "quick": args.quick, "sizes": sizes, "wall_s": round(time.monotonic() - started),
              "scaled_down": scaled_down(args.quick, figures) + (f"; --only {args.only}" if only else ""),
              "figures": [f.as_dict() for f in figures], "pid": os.getpid()}
    if not only or "--out" in (argv if argv is not None else sys.argv):
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    show(result["figures"])
    return 0


def show(figures: list[dict[str, Any]]) -> None:
    table = Table(title="twoway benchmarks")
    for column in ("workload", "metric", "value", "target", "met", "missed by %"):
        table.add_column(column)
    for f in figures:
        met = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "-"}[f["met"]]
        table.add_row(f["workload"], f["metric"], f"{f['value']} {f['unit']}", f"{f['target_is']} {f['target']}",
                      met, str(f["missed_by_percent"] or ""))
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
