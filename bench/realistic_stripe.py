"""`realistic_stripe`: a Stripe that answers like the real one, and a limit we must fill.

The emulator answers every call in 300 ms ± 25 % and 429s above 100 req/s; the workers are told the
account's limit is 100 req/s (shared by all of them). 1,500 creates go in through our API as fast as
it takes them; the figure is Stripe creates/s while draining (first to last create the emulator
saw) as a share of 100 req/s, with 1 worker and with 2. Target ≥ 95 %.
`python -m bench.realistic_stripe [--creates N] [--workers 1,2]` runs it alone.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from bench.cluster import Cluster, ClusterConfig

LIMIT = 100.0
LATENCY_MS = 300


def config(workers: int) -> ClusterConfig:
    return ClusterConfig(workers=workers, inbound_mode="webhook", stripe_rate_limit=LIMIT,
                         emulator_args=["--rate-limit-per-second", str(int(LIMIT)), "--latency-ms", str(LATENCY_MS)])


def _created(stats: dict[str, Any]) -> int:
    return int(stats["responses"].get("POST /v1/customers", {}).get("200", 0))


def _answered(stats: dict[str, Any]) -> tuple[int, int]:
    ok = sum(n for by in stats["responses"].values() for code, n in by.items() if code != "429")
    return ok, sum(by.get("429", 0) for by in stats["responses"].values())


async def drain(cluster: Cluster, n: int) -> list[Any]:
    from bench.run import Figure, create_customers

    before = await asyncio.to_thread(cluster.emulator_stats)
    base = _created(before)
    samples: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            stats = await asyncio.to_thread(cluster.emulator_stats)
            samples.append((time.monotonic(), _created(stats) - base))
            if samples[-1][1] >= n:
                return
            await asyncio.sleep(0.05)
    watcher = asyncio.create_task(watch())
    started = time.monotonic()
    await create_customers(cluster, n, "real", concurrency=64)
    accepted = time.monotonic() - started
    try:
        await asyncio.wait_for(watcher, timeout=max(300.0, 4 * n / LIMIT))
    except TimeoutError:
        stop.set()
    after = await asyncio.to_thread(cluster.emulator_stats)
    done = samples[-1][1] if samples else 0
    first = next((t for t, c in samples if c > 0), None)
    last = next((t for t, c in samples if c >= n), None)
    ok, limited = (a - b for a, b in zip(_answered(after), _answered(before), strict=True))
    sizes = {"creates": n, "workers": cluster.config.workers, "limit_per_s": LIMIT, "latency_ms": LATENCY_MS,
             "api_accepted_s": round(accepted, 1)}
    if first is None or last is None or last <= first:
        return [Figure("realistic_stripe", f"limit_used_percent_{cluster.config.workers}w", None, "%", 95, True,
                       sizes, f"NOT MET: only {done} of {n} creates reached Stripe", met=False)]
    rate = (n - 1) / (last - first)  # creates between the first and the last one seen
    sizes["drain_s"] = round(last - first, 1)
    note = (f"{rate:.1f} creates/s at Stripe while draining (first to last create seen); the API accepted all "
            f"{n} in {accepted:.1f} s; {ok} calls answered, {limited} answered 429")
    return [Figure("realistic_stripe", f"limit_used_percent_{cluster.config.workers}w", round(rate / LIMIT * 100, 1),
                   "%", 95, True, sizes, note)]


def run(quick: bool, workers: tuple[int, ...] = (1, 2), creates: int | None = None) -> list[Any]:
    from bench.run import with_cluster

    n = creates or (500 if quick else 1500)
    figures: list[Any] = []
    for count in workers:
        figures += with_cluster(config(count), lambda c: drain(c, n))
    return figures


def main() -> int:
    import argparse

    from bench.run import show

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--creates", type=int, default=1500)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    show([f.as_dict() for f in run(False, tuple(int(w) for w in args.workers.split(",")), args.creates)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
