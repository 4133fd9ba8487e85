"""`realistic_stripe_endpoints`: Stripe's limits as documented, and a mixed backlog that must fill them.

The emulator answers every call in 300 ms ± 25 % with Stripe's live limiters (`--limits live`: 100 req/s
for the account, 25/s per endpoint, i.e. per method and route); two workers pace by our own defaults for
a live key (account 90/s, each endpoint 24/s). Two phases on one cluster:

1. creates only: N customers through our API as fast as it takes them; the figure is `POST /v1/customers`
   per second at the emulator while they drain, as a share of its 25/s. They are the next phase's records.
2. mixed: 1,000 creates, 3,000 updates over 1,000 customers, 500 deletes through our API, and 500 edits
   in Stripe's dashboard (the emulator's UI form: Stripe counts no dashboard edit against the API's
   limits) of other customers, all shuffled and sent at once; plus what they cause (inbound reads of
   each echo and edit). Until Stripe holds every final state, our rows hold every edit and nothing is
   left to do. Figures: calls/s at the emulator over the drain as a share of 100/s, 429s, Stripe writes
   per updated customer; the note gives each endpoint's rate over its own active window.

`--quick` runs a fifth of the sizes. `python -m bench.realistic_stripe_endpoints [--quick]` runs it alone.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

from bench.cluster import Cluster, ClusterConfig
from bench.fasthttp import Pool
from bench.per_second import ALL, Seconds, ceiling, describe

WORKLOAD = "realistic_stripe_endpoints"
GLOBAL = 100.0  # Stripe's live limit, and the emulator's with --limits live
ENDPOINT = 25.0  # Stripe's default per endpoint
OUR_ACCOUNT = 90.0  # our default for a live key (settings.effective_stripe_rate)
OUR_ENDPOINT = 24.0  # our default per endpoint (settings.STRIPE_ENDPOINT_RATE)
LATENCY_MS = 300
CREATE = "POST /v1/customers"
UPDATE = "POST /v1/customers/{id}"


def limited(latency_ms: int = LATENCY_MS) -> ClusterConfig:
    """Two workers at our live defaults against the emulator's live limiters (also rate_limited_endpoints')."""
    return ClusterConfig(workers=2, inbound_mode="webhook", stripe_rate_limit=OUR_ACCOUNT,
                         env={"STRIPE_ENDPOINT_RATE_LIMIT_PER_SECOND": str(OUR_ENDPOINT)},
                         emulator_args=["--limits", "live", "--latency-ms", str(latency_ms)])


def sizes(quick: bool) -> dict[str, int]:
    full = {"creates": 1000, "updates": 3000, "updated_customers": 1000, "deletes": 500, "stripe_edits": 500}
    return {k: v // 5 for k, v in full.items()} if quick else full


def _calls(stats: dict[str, Any]) -> tuple[int, int]:
    """(answered, answered 429) over every route."""
    by_route = stats["responses"].values()
    return sum(n for by in by_route for n in by.values()), sum(by.get("429", 0) for by in by_route)


def _ok(stats: dict[str, Any], route: str) -> int:
    return sum(n for code, n in stats["responses"].get(route, {}).items() if code != "429")


async def creates_only(cluster: Cluster, n: int) -> tuple[list[int], Any]:
    """n creates through our API; (our ids, the figure for `POST /v1/customers`' share of 25/s)."""
    from bench.run import Figure, create_customers, settle, wait_for

    before = await asyncio.to_thread(cluster.emulator_stats)
    since = time.time()
    async with Seconds(cluster) as seconds:
        started = time.monotonic()
        ids = await create_customers(cluster, n, "seed", concurrency=64)
        accepted = time.monotonic() - started

        async def created() -> bool:
            return _ok(await asyncio.to_thread(cluster.emulator_stats), CREATE) - _ok(before, CREATE) >= n
        done = await wait_for(created, max(300.0, 4 * n / ENDPOINT), 0.5)
        until = time.time()
    after = await asyncio.to_thread(cluster.emulator_stats)
    span = seconds.span(CREATE, since, until)
    limited = after["responses"].get(CREATE, {}).get("429", 0) - before["responses"].get(CREATE, {}).get("429", 0)
    figure_sizes = {"creates": n, "workers": cluster.config.workers, "latency_ms": LATENCY_MS,
                    "endpoint_limit_per_s": ENDPOINT, "our_endpoint_rate": OUR_ENDPOINT,
                    "api_accepted_s": round(accepted, 1)}
    if not done or span is None:
        figure = Figure(WORKLOAD, "creates_only_endpoint_used_percent", None, "%", 95, True, figure_sizes,
                        f"NOT MET: creates did not all reach Stripe within the wait ({span})", met=False)
    else:
        figure_sizes["drain_s"] = span.seconds
        figure = Figure(WORKLOAD, "creates_only_endpoint_used_percent", round(span.rate / ENDPOINT * 100, 1), "%",
                        95, True, figure_sizes,
                        f"{span.rate:.1f} creates/s at Stripe over {span.seconds} whole seconds of the drain "
                        f"(peak {seconds.peak(CREATE, since, until)}/s); {limited} creates answered 429; "
                        f"the API took all {n} in {accepted:.1f} s")
    print(f"[bench] creates settled in {await settle(cluster)} s", flush=True)
    return ids, figure


async def mixed(cluster: Cluster, seeded: list[int], s: dict[str, int]) -> list[Any]:
    from bench.run import Figure, api_pool, bounded, settle, wait_for

    updated = seeded[:s["updated_customers"]]
    deleted = seeded[len(updated):len(updated) + s["deletes"]]
    edited = seeded[len(updated) + len(deleted):len(updated) + len(deleted) + s["stripe_edits"]]
    external = dict(await _links(cluster, edited))
    update_jobs = [("update", updated[i % len(updated)], f"mx-{i}") for i in range(s["updates"])]
    jobs: list[tuple[str, int, str]] = (
        [("create", i, f"mxc-{i}") for i in range(s["creates"])] + update_jobs
        + [("delete", i, "") for i in deleted] + [("edit", i, f"edit-{i}") for i in edited])
    random.Random(23).shuffle(jobs)
    # Shuffled among the rest, the updates keep their order (one customer's are len(updated) apart).
    in_order = iter(update_jobs)
    ordered = [next(in_order) if j[0] == "update" else j for j in jobs]

    before = await asyncio.to_thread(cluster.emulator_stats)
    since = time.time()
    started = time.monotonic()
    async with Seconds(cluster) as seconds, api_pool(cluster) as api, \
            Pool(cluster.emulator_url) as dashboard:
        async def job(k: int) -> None:
            kind, ident, name = ordered[k]
            if kind == "edit":
                async with dashboard.connection() as conn:
                    await conn.request("POST", f"/_emulator/ui/customers/{external[ident]}", f"name={name}".encode(),
                                       {"Content-Type": "application/x-www-form-urlencoded"})
                return
            async with api.connection() as conn:
                if kind == "create":
                    await conn.send_json("POST", "/api/v1/customers", {"name": name, "email": f"{name}@ex.io"})
                elif kind == "update":
                    await conn.send_json("PATCH", f"/api/v1/customers/{ident}", {"name": name})
                else:
                    await conn.send_json("DELETE", f"/api/v1/customers/{ident}")
        await bounded(len(ordered), 32, job)
        accepted = time.monotonic() - started

        async def drained() -> bool:
            return await _drained(cluster, updated, set(deleted), {i: f"edit-{i}" for i in edited}, s["creates"])
        done = await wait_for(drained, 900, 1.0)
        until = time.time()
        elapsed = time.monotonic() - started
    after = await asyncio.to_thread(cluster.emulator_stats)
    async with api.connection() as conn:
        failures = await conn.send_json("GET", "/api/v1/sync/failures")
    calls, limited = (a - b for a, b in zip(_calls(after), _calls(before), strict=True))
    update_writes = _ok(after, UPDATE) - _ok(before, UPDATE)
    writes = after["writes"] - before["writes"]
    spans = seconds.spans(since, until)
    total = next((x for x in spans if x.route == ALL), None)
    figure_sizes = {**s, "workers": cluster.config.workers, "latency_ms": LATENCY_MS, "global_limit_per_s": GLOBAL,
                    "endpoint_limit_per_s": ENDPOINT, "our_account_rate": OUR_ACCOUNT,
                    "our_endpoint_rate": OUR_ENDPOINT, "api_accepted_s": round(accepted, 1),
                    "elapsed_s": round(elapsed, 1)}
    limits = {ALL: GLOBAL, "": ENDPOINT}
    by_route = {route: _ok(after, route) - _ok(before, route) for route in after["responses"]}
    by_route = {route: n for route, n in by_route.items() if n}
    note = (f"{'' if done else 'NOT DRAINED within 900 s; '}{calls} calls ({limited} answered 429), {writes} Stripe "
            f"writes ({update_writes} updates), {len(failures)} dead letters; the API took the backlog in "
            f"{accepted:.1f} s; calls per route: {by_route}; the most this mix can use of {GLOBAL:g}/s at "
            f"{ENDPOINT:g}/s per endpoint: {ceiling(by_route, GLOBAL, ENDPOINT) * 100:.0f} %; per route over its "
            f"own active window: {describe(spans, limits)}")
    print(f"[bench] mixed backlog settled in {await settle(cluster)} s", flush=True)
    return [
        Figure(WORKLOAD, "global_limit_used_percent", round(total.rate / GLOBAL * 100, 1) if total else None, "%",
               85, True, {**figure_sizes, "drain_s": total.seconds if total else None}, note,
               met=None if total else False),
        Figure(WORKLOAD, "rate_limited_percent", round(limited / calls * 100, 2) if calls else None, "%", 1, False,
               figure_sizes, note),
        Figure(WORKLOAD, "update_writes_per_customer", round(update_writes / len(updated), 2), "writes", 1.1, False,
               figure_sizes, note),
        Figure(WORKLOAD, "dead_letters", len(failures), "count", 0, False, figure_sizes, note),
    ]


async def _links(cluster: Cluster, ids: list[int]) -> list[tuple[int, str]]:
    from bench.run import db_value

    rows = await db_value(cluster, "SELECT coalesce(json_agg(json_build_array(internal_id, external_id)), '[]') "
                                   "FROM links WHERE system = 'stripe' AND internal_id = ANY($1::bigint[])", ids)
    return [(int(i), str(e)) for i, e in json.loads(rows)]


async def _drained(cluster: Cluster, updated: list[int], deleted: set[int], edits: dict[int, str],
                   creates: int) -> bool:
    """Stripe holds every updated row's name as our row has it (concurrent PATCHes land in any order),
    no deleted customer, every create; our rows hold every dashboard edit; nothing is left to send or take."""
    from bench.run import BACKLOG, db_value

    theirs = {c.get("metadata", {}).get("internal_id"): c.get("name")
              for c in await asyncio.to_thread(cluster.emulator_customers)}
    final = json.loads(await db_value(cluster, "SELECT coalesce(json_object_agg(id, name), '{}') FROM customers "
                                               "WHERE id = ANY($1::bigint[])", updated))
    if any(theirs.get(i) != name for i, name in final.items()) or any(str(i) in theirs for i in deleted):
        return False
    if sum(1 for name in theirs.values() if (name or "").startswith("mxc-")) < creates:
        return False
    ours = await db_value(cluster, "SELECT count(*) FROM customers WHERE id = ANY($1::bigint[]) AND name = "
                                   "ANY($2::text[])", list(edits), list(edits.values()))
    if int(ours) < len(edits):
        return False
    pending = (await asyncio.to_thread(cluster.emulator_stats))["webhooks"]["pending"]
    return pending == 0 and int(await db_value(cluster, BACKLOG)) == 0


async def both(cluster: Cluster, s: dict[str, int]) -> list[Any]:
    from bench.run import create_customers, settle

    # Warm up: a cold broker makes the first publish and fetch wait for metadata (start-up, not drain).
    await create_customers(cluster, 10, "warm")
    await settle(cluster)
    seeded, figure = await creates_only(cluster, s["updated_customers"] + s["deletes"] + s["stripe_edits"])
    return [figure, *await mixed(cluster, seeded, s)]


def run(quick: bool) -> list[Any]:
    from bench.run import with_cluster

    return with_cluster(limited(), lambda c: both(c, sizes(quick)))  # type: ignore[no-any-return]


def main() -> int:
    import argparse

    from bench.run import show

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    show([f.as_dict() for f in run(args.quick)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
