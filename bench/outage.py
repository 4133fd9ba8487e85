"""`outage`: Stripe down for 3 minutes while our API keeps taking changes.

200 linked customers; the emulator answers every API call 503 (its `outage` knob) for 180 s while
5 updates/s arrive at our API (each a unique name, round robin over the 200). Then Stripe is back.
Figures: dead letters (goal 0), seconds from the end of the outage until Stripe holds every record's
final value (goal ≤ 60), and Stripe calls per second during the outage (goal: a few probes, ≤ 5/s).
The workers run with the production retry settings (backoff 0.5-300 s, 8 attempts, sweeper every 5 s
after 30 s), not the bench cluster's shortened ones: the outage must outlast today's retry budget.
`python -m bench.outage [--seconds 180]` runs it alone.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from bench.cluster import Cluster, ClusterConfig

RECORDS = 200
UPDATES_PER_S = 5.0
PRODUCTION_RETRIES = {"SYNC_BACKOFF_BASE_SECONDS": "0.5", "SYNC_BACKOFF_MAX_SECONDS": "300",
                      "SWEEPER_GRACE_SECONDS": "30", "SWEEPER_INTERVAL_SECONDS": "5"}


def config() -> ClusterConfig:
    return ClusterConfig(workers=2, inbound_mode="webhook", stripe_rate_limit=100, env=dict(PRODUCTION_RETRIES))


def _calls(stats: dict[str, Any]) -> int:
    return sum(n for route, n in stats["requests"].items() if " /v1/" in route)


async def outage(cluster: Cluster, seconds: float) -> list[Any]:
    from bench.run import Figure, api_pool, create_customers, db_value, paced, settle, wait_for

    ids = await create_customers(cluster, RECORDS, "out-seed")
    await settle(cluster)
    final: dict[int, tuple[int, str]] = {}  # record -> (version our API answered, name)
    updates = int(seconds * UPDATES_PER_S)
    before = await asyncio.to_thread(cluster.emulator_stats)
    cluster.set_faults(outage=True)
    started = time.monotonic()
    async with api_pool(cluster) as api:
        async def change(i: int) -> None:
            record = ids[i % len(ids)]
            async with api.connection() as conn:
                body = await conn.send_json("PATCH", f"/api/v1/customers/{record}", {"name": f"out-{i}"})
            if body["version"] > final.get(record, (0, ""))[0]:
                final[record] = (body["version"], body["name"])
        await paced(updates, UPDATES_PER_S, change)
    remaining = started + seconds - time.monotonic()
    if remaining > 0:
        await asyncio.sleep(remaining)
    during = await asyncio.to_thread(cluster.emulator_stats)
    cluster.set_faults(outage=False)
    ended = time.monotonic()
    outage_s = ended - started

    async def holds() -> bool:
        theirs = {c.get("metadata", {}).get("internal_id"): c.get("name")
                  for c in await asyncio.to_thread(cluster.emulator_customers)}
        return all(theirs.get(str(record)) == name for record, (_, name) in final.items())
    converged = await wait_for(holds, 600, 0.5)
    converge_s = round(time.monotonic() - ended, 1) if converged else None
    dead = int(await db_value(cluster, "SELECT count(*) FROM sync_events WHERE status = 'dead'"))
    calls = _calls(during) - _calls(before)
    searches = during["requests"].get("GET /v1/customers/search", 0) - before["requests"].get(
        "GET /v1/customers/search", 0)
    sizes = {"records": RECORDS, "updates": updates, "updates_per_s": UPDATES_PER_S, "outage_s": round(outage_s, 1),
             "stripe_calls_during_outage": calls, "searches_during_outage": searches, **PRODUCTION_RETRIES}
    note = (f"{updates} updates at {UPDATES_PER_S:.0f}/s during a {outage_s:.0f} s outage (every API call 503); "
            f"{calls} Stripe calls during it ({searches} searches); {dead} dead letters; "
            + (f"Stripe held every final value {converge_s} s after it ended" if converged
               else "Stripe did NOT hold every final value within 600 s after it ended"))
    return [Figure("outage", "dead_letters", dead, "count", 0, False, sizes, note),
            Figure("outage", "converge_s_after_outage", converge_s, "s", 60, False, sizes, note,
                   met=None if converged else False),
            Figure("outage", "stripe_calls_per_s_during_outage", round(calls / outage_s, 2), "calls/s", 5, False,
                   sizes, note)]


def run(quick: bool, seconds: float | None = None) -> list[Any]:
    from bench.run import with_cluster

    return with_cluster(config(), lambda c: outage(c, seconds or (30 if quick else 180)))  # type: ignore[no-any-return]


def main() -> int:
    import argparse

    from bench.run import show

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=180)
    args = parser.parse_args()
    show([f.as_dict() for f in run(False, args.seconds)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
