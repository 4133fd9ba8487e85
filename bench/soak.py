"""Soak: a steady stream of changes on every side for many minutes, a fault every few, sampled throughout.

`python -m bench.soak --minutes M [--rate N] [--seed S] [--out report.json]`

The chaos run's actors (`bench.chaos.Sides`: our API, Stripe through its SDK, Salesforce through
simple-salesforce, invoices on both sides) make `--rate` changes a second in an open loop: one is
started every 1/rate s whatever the system's speed (at most `--max-in-flight` at once; a tick with
none free is counted as skipped). Every `--fault-every` s the next fault of `--faults` in turn: a
worker SIGKILLed and restarted, the broker restarted (Tansu loses topics and offsets), Stripe
answering 503 to every call for `--outage-seconds`. Every `--sample-every` s: RSS and open fds of
every process, PostgreSQL connections and table sizes, asyncio tasks of the API and the workers
(bench/soak_sample.py); all along, change-to-Stripe latency on a subset of changes (bench/soak_probe.py).
At the end the faults stop and the chaos checker waits for convergence. It prints the series, a
linear trend per series and the issue's targets (reported, not asserted; bench/soak_report.py),
writes the JSON report, and exits 1 unless converged with no divergence and no dead letter.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench import chaos_salesforce, soak_report
from bench.chaos import Faults, Sides, Tally, exit_on_term, machine, make_sides, refresh_until, seed_catalog, settle
from bench.cluster import Cluster, ClusterConfig
from bench.soak_probe import Probe
from bench.soak_sample import Sampler

FAULTS = ("worker", "broker", "stripe")


def done(tally: Tally) -> int:
    """Changes made so far (failed attempts and the driver's own counters left out)."""
    return sum(n for op, n in tally.ops.items()
               if not op.endswith(".failed") and not op.startswith(("error.", "driver.")))


async def pace(sides: Sides, started: float, until: float, rate: float, max_in_flight: int) -> None:
    """An open loop: the offered rate stays `rate` when the system slows down; a backlog shows as skips.
    When the driver itself falls behind (its own loop starved of CPU), the lost ticks are dropped and
    counted (`driver.late`) instead of fired in a burst after the end."""
    pending: set[asyncio.Task[None]] = set()
    tick = 0
    while (now := time.monotonic()) < until:
        at = started + tick / rate
        if now - at > 1.0:
            late = max(1, int((now - at) * rate))
            sides.tally.ops["driver.late"] += late
            tick += late
            continue
        tick += 1
        await asyncio.sleep(max(0.0, at - now))
        if len(pending) >= max_in_flight:
            sides.tally.ops["driver.skipped"] += 1
            continue
        task = asyncio.create_task(sides.one_op())
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending, return_exceptions=True)




async def faults_in_turn(faults: Faults, kinds: list[str], every: float, outage: float, until: float) -> None:
    cluster, turn = faults.cluster, 0
    while True:
        kind = kinds[turn % len(kinds)]
        at = faults.started + every * (turn + 1)
        if at + (outage if kind == "stripe" else 5) >= until:
            return
        await asyncio.sleep(at - time.monotonic())
        if kind == "worker":
            workers = cluster.worker_names()
            await faults.kill(workers[turn // len(kinds) % len(workers)])
        elif kind == "broker":
            await faults.broker()
        else:
            faults.tally.fault("stripe_outage", faults.started, down_s=outage)
            await asyncio.to_thread(cluster.set_faults, outage=True)
            try:
                await asyncio.sleep(outage)
            finally:
                await asyncio.to_thread(cluster.set_faults, outage=False)
        turn += 1


async def sample_every(sampler: Sampler, tally: Tally, started: float, until: float, every: float,
                       samples: list[dict[str, Any]]) -> None:
    """A sample at the start and every `every` s, the last one as the changes stop."""
    tick = 0
    while True:
        at = min(started + tick * every, until)
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        sample = {"at_s": round(time.monotonic() - started, 1), "changes": done(tally), **await sampler.sample()}
        samples.append(sample)
        rss = sum(p["rss_kb"] for p in sample["processes"].values()) / 1024
        print(f"soak {sample['at_s'] / 60:5.1f} min: {sample['changes']} changes, RSS {rss:.0f} MB in all, "
              f"pg {sample['pg'].get('bytes_total', 0) / 2**20:.1f} MB", file=sys.stderr, flush=True)
        if at >= until:
            return
        tick += 1


def per_window(samples: list[dict[str, Any]], sightings: list[dict[str, Any]],
               fault_log: list[dict[str, Any]]) -> None:
    """Each sample gets what happened since the one before: rate, faults, probes and their p50/p99."""
    for before, s in itertools.pairwise(samples):
        span = s["at_s"] - before["at_s"]
        s["changes_per_s"] = round((s["changes"] - before["changes"]) / span, 1) if span > 0 else None
        s["faults"] = [f["fault"] for f in fault_log if before["at_s"] <= f["at_s"] < s["at_s"]]
        lat = soak_report.latencies_ms(sightings, before["at_s"], s["at_s"])
        s["probes"] = len(lat)
        s["p50_ms"], s["p99_ms"] = soak_report.percentile(lat, 0.5), soak_report.percentile(lat, 0.99)


async def run_soak(cluster: Cluster, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    tally = Tally()
    sides = make_sides(cluster, rng, tally, args.invoices)
    systems = ("stripe", "salesforce") if sides.modules else ("stripe",)
    probe = Probe(cluster, tally, systems, every=args.probe_every)
    sampler = Sampler(cluster)
    samples: list[dict[str, Any]] = []
    duration = args.minutes * 60
    try:
        await seed_catalog(sides, 20)
        await probe.setup()
        sides.reserved = probe.reserved
        for module in sides.modules:
            module.reserved = probe.reserved
        started = time.monotonic()
        until = started + duration
        faults = Faults(cluster, rng, tally, started)
        await asyncio.gather(
            pace(sides, started, until, args.rate, args.max_in_flight),
            refresh_until(sides, until, args.refresh_every),
            faults_in_turn(faults, args.faults, args.fault_every, args.outage_seconds, until),
            sample_every(sampler, tally, started, until, args.sample_every, samples),
            probe.run(started, until))
    finally:
        await sides.close()
        await probe.close()
        await sampler.close()
    verdict = await settle(cluster, args.converge_timeout, sides.modules)
    sightings = [{"at_s": s.at_s, "latency_s": s.latency_s} for s in probe.sightings]
    per_window(samples, sightings, tally.fault_log)
    warmup = soak_report.window(duration)
    steady = [s for s in samples if s["at_s"] >= warmup - 1] or samples
    report = {
        "seed": seed, "duration_s": duration, "target_changes_per_s": args.rate,
        "achieved_changes_per_s": round(samples[-1]["changes"] / duration, 1) if samples else None,
        "operations": dict(tally.ops), "faults": dict(tally.faults), "fault_log": tally.fault_log,
        "probes": {"count": len(sightings), "not_seen": sum(s["latency_s"] is None for s in sightings),
                   "skipped": probe.skipped, **_overall(sightings)},
        "warmup_s": warmup, "samples": samples, "sightings": sightings,
        "trends": {name: soak_report.trend(points) for name, points in soak_report.series(steady).items()},
        **verdict,
    }
    report["lost"] = [d for d in report["divergences"] if d["type"].startswith(LOST)]
    report["duplicated"] = [d for d in report["divergences"] if "duplicate" in d["type"]]
    report["targets"] = soak_report.targets(report)
    return report


# Divergence types that mean a change never arrived somewhere (the rest: duplicates and mismatches).
LOST = ("live_row_without", "linked_stripe_customer_missing", "stripe_customer_without", "account_without",
        "live_invoice_without", "stripe_invoice_without", "delete_not_propagated", "account_delete_not",
        "invoice_delete_not")


def _overall(sightings: list[dict[str, Any]]) -> dict[str, float | None]:
    lat = [s["latency_s"] * 1000 for s in sightings if s["latency_s"] is not None]
    return {"p50_ms": soak_report.percentile(lat, 0.5), "p99_ms": soak_report.percentile(lat, 0.99),
            "max_ms": max(lat, default=None)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=50, help="changes/s offered over all sides")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/soak_report.json"))
    parser.add_argument("--sample-every", type=float, default=60, help="seconds between samples")
    parser.add_argument("--fault-every", type=float, default=180, help="seconds between faults")
    parser.add_argument("--faults", type=lambda s: [f for f in s.split(",") if f], default=list(FAULTS),
                        help=f"the faults, in turn (of {','.join(FAULTS)})")
    parser.add_argument("--outage-seconds", type=float, default=30, help="length of a Stripe outage")
    parser.add_argument("--probe-every", type=float, default=0.5, help="seconds between latency probes")
    parser.add_argument("--refresh-every", type=float, default=15, help="seconds between the actors' id refreshes")
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--converge-timeout", type=float, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after the run")
    parser.add_argument("--salesforce", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--invoices", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    if unknown := set(args.faults) - set(FAULTS):
        parser.error(f"unknown faults: {sorted(unknown)}")
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    kind = chaos_salesforce.SalesforceCluster if args.salesforce else Cluster
    signal.signal(signal.SIGTERM, exit_on_term)  # unwind, so `finally` stops the cluster's processes
    cluster = kind(ClusterConfig(workers=args.workers, metrics=True)).start()
    try:
        report = asyncio.run(run_soak(cluster, args, seed))
    finally:
        cluster.stop()
    report["machine"] = machine()
    ok = report["converged"] and not report["divergences"] and not report["dead_letters"]
    report["logs"] = str(cluster.root) if args.keep or not ok else None
    if report["logs"] is None:
        cluster.cleanup()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    soak_report.print_report(report)
    print(json.dumps({k: report[k] for k in ("seed", "achieved_changes_per_s", "faults", "probes", "converged",
                                             "time_to_converge_s", "counts")}, default=str))
    print(f"{len(report['divergences'])} divergences ({len(report['lost'])} lost, {len(report['duplicated'])} "
          f"duplicated), {len(report['dead_letters'])} dead letters; report written to {args.out}"
          + (f"; logs in {report['logs']}" if report["logs"] else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
