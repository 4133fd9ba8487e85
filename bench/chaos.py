"""Chaos suite: random edits on both sides while faults rain down, then a convergence check.

`python -m bench.chaos --duration 120 [--seed N] [--out report.json]` exits non-zero on divergence.
The driver's choices follow the seed; the emulator's own dice (error rate, drops) do not.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import platform
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import stripe

from bench import chaos_salesforce
from bench.chaos_invoices import InvoiceSides, list_invoices, list_pages, stripe_invoices
from bench.chaos_invoices import divergences as invoice_divergences
from bench.cluster import Cluster, ClusterConfig
from twoway.kit.db import asyncpg_dsn

NO_FAULTS = {"error_rate": 0, "rate_limit_per_second": 0, "latency_ms": 0, "webhook_drop_rate": 0,
             "webhook_duplicate_rate": 0, "webhook_reorder": 0, "webhook_delay_ms": 0}


@dataclass
class Tally:
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    fault_log: list[dict[str, Any]] = field(default_factory=list)

    def fault(self, name: str, started: float, **detail: Any) -> None:
        self.faults[name] += 1
        self.fault_log.append({"at_s": round(time.monotonic() - started, 2), "fault": name, **detail})


# -- the two sides ---------------------------------------------------------------------------------


class Sides:
    """Random edits through our API (httpx) and through Stripe's SDK against the emulator."""

    def __init__(self, cluster: Cluster, rng: random.Random, tally: Tally, invoices: bool = False) -> None:
        self.rng = rng
        self.tally = tally
        self.api = httpx.AsyncClient(base_url=cluster.api_url, timeout=10,
                                     headers={"Authorization": f"Bearer {cluster.api_key}"})
        self.stripe = stripe.StripeClient(cluster.stripe_key, base_addresses={"api": cluster.emulator_url},
                                          max_network_retries=2, http_client=stripe.HTTPXClient(timeout=10))
        self.cluster = cluster
        self.our_ids: list[int] = []
        self.stripe_ids: list[str] = []
        self.serial = 0
        # Other systems' parts of the run (bench/chaos_*.py): refresh(), one_op(), fault(), calm(), ...
        self.modules: list[Any] = []
        self.invoices = InvoiceSides(self) if invoices else None
        # Ids (ours and Stripe's) no actor may pick: a soak's latency probes edit those alone.
        self.reserved: set[Any] = set()

    async def close(self) -> None:
        await self.api.aclose()

    def _fresh(self, side: str) -> dict[str, str]:
        self.serial += 1
        tag = f"{side}{self.serial}-{self.rng.randrange(10**6)}"
        return {"name": f"Name {tag}", "email": f"{tag}@example.com"}

    def _edit(self, side: str) -> dict[str, str]:
        fresh = self._fresh(side)
        which = self.rng.choice(("name", "email", "both"))
        return fresh if which == "both" else {which: fresh[which]}

    async def refresh(self) -> None:
        """Learn ids created by the other side (and forget deleted ones) from both catalogs."""
        try:
            ours = await list_ours(self.api)
            self.our_ids = [c["id"] for c in ours if c["deleted_at"] is None and c["id"] not in self.reserved]
            theirs = await asyncio.to_thread(self.cluster.emulator_customers)
            self.stripe_ids = [c["id"] for c in theirs if c["id"] not in self.reserved]
        except (httpx.HTTPError, OSError, ValueError):
            pass  # the API may be down right now; keep the old view

    async def one_op(self) -> None:
        if self.invoices is not None and self.rng.random() < 0.4:
            await self.invoices.one_op()
            return
        if self.modules and self.rng.random() < len(self.modules) / (2 + len(self.modules)):
            await self.rng.choice(self.modules).one_op()
            return
        side = self.rng.choice(("ours", "stripe"))
        ids = self.our_ids if side == "ours" else self.stripe_ids
        roll = self.rng.random()
        op = "create" if roll < 0.3 or not ids else "update" if roll < 0.87 else "delete"
        action = {"ours": {"create": self._our_create, "update": self._our_update, "delete": self._our_delete},
                  "stripe": {"create": self._their_create, "update": self._their_update,
                             "delete": self._their_delete}}[side][op]
        try:
            await action()
            self.tally.ops[f"{side}.{op}"] += 1
        except (httpx.HTTPError, stripe.StripeError, OSError) as exc:
            self.tally.ops[f"{side}.{op}.failed"] += 1
            self.tally.ops[f"error.{type(exc).__name__}"] += 1

    async def _our_create(self) -> None:
        r = await self.api.post("/api/v1/customers", json=self._fresh("o"))
        r.raise_for_status()
        self.our_ids.append(r.json()["id"])

    async def _our_update(self) -> None:
        r = await self.api.patch(f"/api/v1/customers/{self.rng.choice(self.our_ids)}", json=self._edit("o"))
        if r.status_code != 404:  # deleted meanwhile by the other side: a legitimate race
            r.raise_for_status()

    async def _our_delete(self) -> None:
        victim = self.rng.choice(self.our_ids)
        r = await self.api.delete(f"/api/v1/customers/{victim}")
        if r.status_code != 404:
            r.raise_for_status()
        _forget(self.our_ids, victim)

    async def _their_create(self) -> None:
        created = await self.stripe.v1.customers.create_async(dict(self._fresh("s")))  # type: ignore[arg-type]
        self.stripe_ids.append(created.id)

    async def _their_update(self) -> None:
        try:
            await self.stripe.v1.customers.update_async(self.rng.choice(self.stripe_ids),
                                                        dict(self._edit("s")))  # type: ignore[arg-type]
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise

    async def _their_delete(self) -> None:
        victim = self.rng.choice(self.stripe_ids)
        try:
            await self.stripe.v1.customers.delete_async(victim)
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise
        _forget(self.stripe_ids, victim)


def _forget(ids: list[Any], victim: Any) -> None:
    # Another actor may have picked the same victim while this one awaited.
    if victim in ids:
        ids.remove(victim)


async def list_ours(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    return await list_pages(api, "/api/v1/customers", 500)


# -- faults ----------------------------------------------------------------------------------------


class Faults:
    def __init__(self, cluster: Cluster, rng: random.Random, tally: Tally, started: float) -> None:
        self.cluster = cluster
        self.rng = rng
        self.tally = tally
        self.started = started

    async def emulator(self) -> None:
        knobs = {
            "error_rate": self.rng.choice((0, 0.05, 0.15, 0.3)),
            "rate_limit_per_second": self.rng.choice((0, 0, 40, 100)),
            "latency_ms": self.rng.choice((0, 20, 80)),
            "webhook_drop_rate": self.rng.choice((0, 0.1, 0.3)),
            "webhook_duplicate_rate": self.rng.choice((0, 0.2, 0.5)),
            "webhook_reorder": self.rng.choice((0, 3, 8)),
        }
        await asyncio.to_thread(self.cluster.set_faults, **knobs)
        self.tally.fault("emulator_faults", self.started, **knobs)

    async def kill(self, name: str) -> None:
        await asyncio.to_thread(self.cluster.kill, name)
        down = self.rng.uniform(0.2, 2.0)
        self.tally.fault(f"sigkill.{name.split('-')[0]}", self.started, process=name, down_s=round(down, 2))
        await asyncio.sleep(down)
        await asyncio.to_thread(self.cluster.restart, name)

    async def broker(self) -> None:
        self.tally.fault("broker_restart", self.started)
        await asyncio.to_thread(self.cluster.restart_broker)

    def pick(self, modules: Sequence[Any] = ()) -> Callable[[], Awaitable[None]]:
        victims = ["api", "relay" if self.cluster.config.split_relay else "worker-0", *self.cluster.worker_names()]
        choices: list[Callable[[], Awaitable[None]]] = [self.emulator, self.emulator]
        choices += [lambda m=m: m.fault(self.started) for m in modules for _ in range(2)]  # type: ignore[misc]
        choices += [lambda v=v: self.kill(v) for v in victims]  # type: ignore[misc]
        return self.rng.choice(choices)


# -- convergence -----------------------------------------------------------------------------------


@dataclass
class Snapshot:
    ours: list[dict[str, Any]]
    theirs: list[dict[str, Any]]
    links: list[dict[str, Any]]
    backlog: dict[str, int]
    dead: list[dict[str, Any]]
    invoices: dict[str, Any] | None = None  # ours, theirs, links, customers (see bench/chaos_invoices.py)
    # Per module (bench/chaos_*.py): what it read of its system, for its checker and the digest.
    more: dict[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        return json.dumps([self.ours, self.theirs, self.links, self.invoices, self.more], sort_keys=True,
                          default=str)


BACKLOG_SQL = {
    "outbox_unsent": "SELECT count(*) FROM outbox WHERE sent_at IS NULL",
    "retry_rows": "SELECT count(*) FROM sync_events WHERE status = 'retry'",
    "inbox_unprocessed": "SELECT count(*) FROM inbox WHERE processed_at IS NULL",
    "records_ahead": """SELECT count(*) FROM customers c LEFT JOIN links l
                        ON l.kind = 'customer' AND l.internal_id = c.id AND l.system = 'stripe'
                        WHERE c.version > COALESCE(l.last_pushed_version, 0)
                        AND NOT (c.deleted_at IS NOT NULL AND l.id IS NULL)""",
    "invoices_ahead": """SELECT count(*) FROM invoices c LEFT JOIN links l
                         ON l.kind = 'invoice' AND l.internal_id = c.id AND l.system = 'stripe'
                         WHERE c.version > COALESCE(l.last_pushed_version, 0)
                         AND NOT (c.deleted_at IS NOT NULL AND l.id IS NULL)""",
}


async def snapshot(cluster: Cluster, api: httpx.AsyncClient, modules: Sequence[Any] = ()) -> Snapshot:
    conn = await asyncpg.connect(asyncpg_dsn(cluster.database_url))
    more: dict[str, Any] = {}
    try:
        links = [dict(r) for r in await conn.fetch(
            "SELECT internal_id, external_id, base::text AS base FROM links "
            "WHERE system = 'stripe' AND kind = 'customer'")]
        invoice_links = {int(r["internal_id"]): r["external_id"] for r in await conn.fetch(
            "SELECT internal_id, external_id FROM links WHERE system = 'stripe' AND kind = 'invoice'")}
        backlog = {name: int(await conn.fetchval(sql)) for name, sql in {**BACKLOG_SQL, **REPORTED_ONLY}.items()}
        for module in modules:
            more[module.name] = await module.snapshot(conn)
            backlog.update(more[module.name].pop("backlog", {}))
    finally:
        await conn.close()
    stats = await asyncio.to_thread(cluster.emulator_stats)
    backlog["webhooks_pending"] = int(stats["webhooks"]["pending"])
    r = await api.get("/api/v1/sync/failures", params={"limit": 1000})
    r.raise_for_status()
    ours = [{k: c[k] for k in ("id", "name", "email", "deleted_at")} for c in await list_ours(api)]
    theirs = [{"id": c["id"], "name": c.get("name") or "", "email": c.get("email") or "",
               "internal_id": (c.get("metadata") or {}).get("internal_id")}
              for c in await asyncio.to_thread(cluster.emulator_customers)]
    invoices = {"ours": await list_invoices(api), "theirs": await asyncio.to_thread(stripe_invoices, cluster),
                "links": invoice_links}
    return Snapshot(sorted(ours, key=lambda c: c["id"]), sorted(theirs, key=lambda c: c["id"]),
                    sorted(links, key=lambda link: link["internal_id"]), backlog, r.json(), invoices, more)


def all_divergences(snap: Snapshot, modules: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Stripe's checks, then each module's over the same rows of ours."""
    return divergences(snap) + [d for m in modules for d in m.divergences(snap.ours, snap.more[m.name])]


def divergences(snap: Snapshot) -> list[dict[str, Any]]:
    """Everything that breaks 'one live Stripe customer per live row, equal fields, deletes match'."""
    found: list[dict[str, Any]] = []
    theirs = {c["id"]: c for c in snap.theirs}
    by_internal = collections.defaultdict(list)
    for c in snap.theirs:
        by_internal[c["internal_id"]].append(c["id"])
    link_of = {link["internal_id"]: link["external_id"] for link in snap.links}
    linked_to = collections.Counter(link["external_id"] for link in snap.links)
    found += [{"type": "duplicate_stripe_customers", "internal_id": i, "external_ids": ids}
              for i, ids in by_internal.items() if i is not None and len(ids) > 1]
    found += [{"type": "duplicate_links", "external_id": x} for x, n in linked_to.items() if n > 1]
    for row in snap.ours:
        found += _check_row(row, link_of.get(row["id"]), theirs)
    live_linked = {link_of[c["id"]] for c in snap.ours if c["deleted_at"] is None and c["id"] in link_of}
    found += [{"type": "stripe_customer_without_live_row", "external_id": x, "internal_id": c["internal_id"]}
              for x, c in theirs.items() if x not in live_linked]
    if snap.invoices is not None:
        i = snap.invoices
        found += invoice_divergences(i["ours"], i["theirs"], i["links"])
    return found


def _check_row(row: dict[str, Any], external_id: str | None, theirs: dict[str, dict[str, Any]]) -> list[dict]:
    rid = row["id"]
    if row["deleted_at"] is not None:
        if external_id in theirs:
            return [{"type": "delete_not_propagated", "internal_id": rid, "external_id": external_id}]
        return []
    if external_id is None:
        return [{"type": "live_row_without_link", "internal_id": rid}]
    obj = theirs.get(external_id)
    if obj is None:
        return [{"type": "linked_stripe_customer_missing", "internal_id": rid, "external_id": external_id}]
    problems = []
    for name in ("name", "email"):
        if obj[name] != row[name]:
            problems.append({"type": "field_mismatch", "field": name, "internal_id": rid,
                             "external_id": external_id, "ours": row[name], "theirs": obj[name]})
    if obj["internal_id"] != str(rid):
        problems.append({"type": "wrong_metadata_internal_id", "internal_id": rid, "external_id": external_id,
                         "theirs": obj["internal_id"]})
    return problems


# Reported, not waited for: the engine leaves a `requeued` row open when the retried work turns out
# to be a no-op or an echo (a bookkeeping bug, see bench/README.md); the record itself is in sync.
REPORTED_ONLY = {"requeued_left": "SELECT count(*) FROM sync_events WHERE status = 'requeued'"}
# Divergence types caused by known engine bugs (bench/README.md), so a test can tell them from new ones.
# Divergence types the engine is known to leave; empty since the internal_id write-back became level-triggered.
KNOWN_BUGS: dict[str, str] = {}


def quiet(snap: Snapshot) -> bool:
    return not any(v for k, v in snap.backlog.items() if k not in REPORTED_ONLY)


async def await_convergence(cluster: Cluster, timeout: float, stable_checks: int = 3,
                            modules: Sequence[Any] = ()) -> dict[str, Any]:
    """Poll until the system is quiet, consistent and unchanged for a few checks in a row."""
    started = time.monotonic()
    streak, last_digest = 0, ""
    snap: Snapshot | None = None
    async with httpx.AsyncClient(base_url=cluster.api_url, timeout=30,
                                 headers={"Authorization": f"Bearer {cluster.api_key}"}) as api:
        while time.monotonic() - started < timeout:
            try:
                snap = await snapshot(cluster, api, modules)
            except (httpx.HTTPError, OSError, asyncpg.PostgresError) as exc:
                print(f"snapshot failed: {exc!r}", file=sys.stderr)
                await asyncio.sleep(1)
                continue
            ok = quiet(snap) and not all_divergences(snap, modules) and not snap.dead
            streak = streak + 1 if ok and snap.digest() == last_digest else (1 if ok else 0)
            last_digest = snap.digest()
            if streak >= stable_checks:
                break
            await asyncio.sleep(1)
    return _verdict(snap, streak >= stable_checks, time.monotonic() - started, modules)


def _verdict(snap: Snapshot | None, converged: bool, waited: float,
             modules: Sequence[Any] = ()) -> dict[str, Any]:
    if snap is None:
        return {"converged": False, "time_to_converge_s": None, "divergences": [{"type": "no_snapshot"}]}
    return {
        "converged": converged,
        "time_to_converge_s": round(waited, 2) if converged else None,
        "waited_s": round(waited, 2),
        "backlog": snap.backlog,
        "counts": {"ours_live": sum(c["deleted_at"] is None for c in snap.ours),
                   "ours_deleted": sum(c["deleted_at"] is not None for c in snap.ours),
                   "stripe_live": len(snap.theirs), "links": len(snap.links),
                   **({"invoices_ours_live": sum(i["deleted_at"] is None for i in snap.invoices["ours"]),
                       "invoices_stripe": len(snap.invoices["theirs"])} if snap.invoices else {}),
                   **{f"{m.name}_live": len(snap.more[m.name]["accounts"]) for m in modules}},
        "divergences": all_divergences(snap, modules),
        # A dead letter is only explained if the record it names converged anyway; any is reported.
        "dead_letters": snap.dead,
    }


# -- the run ---------------------------------------------------------------------------------------


async def drive(sides: Sides, until: float, rate: float, actors: int) -> None:
    async def actor() -> None:
        while time.monotonic() < until:
            await sides.one_op()
            await asyncio.sleep(sides.rng.expovariate(rate / actors))

    await asyncio.gather(refresh_until(sides, until, 2), *(actor() for _ in range(actors)))


async def inject(faults: Faults, until: float, broker_at: float | None, modules: Sequence[Any]) -> None:
    broker_done = broker_at is None
    # Each module's system has one outage for sure, early on; its other faults come by the dice.
    outages = list(modules)
    while time.monotonic() < until - 2:
        await asyncio.sleep(faults.rng.uniform(1.0, 3.0))
        if not broker_done and broker_at is not None and time.monotonic() >= broker_at:
            broker_done = True
            await faults.broker()
            continue
        if outages and faults.rng.random() < 0.5:
            await outages.pop().fault(faults.started, outage=True)
            continue
        await faults.pick(modules)()


async def seed_catalog(sides: Sides, count: int) -> None:
    for _ in range(count):
        await sides._our_create()
    for _ in range(count // 2):
        await sides._their_create()
    for module in sides.modules:
        for _ in range(count // 2):
            await module._create()


def make_sides(cluster: Cluster, rng: random.Random, tally: Tally, invoices: bool) -> Sides:
    """Stripe's and our sides, invoices if asked, and Salesforce's when the cluster runs it."""
    sides = Sides(cluster, rng, tally, invoices=invoices)
    if isinstance(cluster, chaos_salesforce.SalesforceCluster):
        sides.modules.append(chaos_salesforce.SalesforceChaos(cluster, rng, tally))
    return sides


async def settle(cluster: Cluster, converge_timeout: float, modules: Sequence[Any]) -> dict[str, Any]:
    """Faults off everywhere, every process up again, then wait for convergence (the verdict)."""
    await asyncio.to_thread(cluster.set_faults, **NO_FAULTS)
    for module in modules:
        await module.calm()
    await asyncio.to_thread(revive, cluster)
    return await await_convergence(cluster, converge_timeout, modules=modules)


async def run_chaos(cluster: Cluster, duration: float, seed: int, rate: float,
                    converge_timeout: float, invoices: bool = True, broker_restart: bool = True) -> dict[str, Any]:
    rng = random.Random(seed)
    tally = Tally()
    sides = make_sides(cluster, rng, tally, invoices)
    modules = sides.modules
    try:
        await seed_catalog(sides, 20)
        started = time.monotonic()
        until = started + duration
        faults = Faults(cluster, rng, tally, started)
        broker_at = started + duration * rng.uniform(0.3, 0.6)
        await asyncio.gather(drive(sides, until, rate, actors=4),
                             inject(faults, until, broker_at if broker_restart else None, modules))
    finally:
        await sides.close()
    verdict = await settle(cluster, converge_timeout, modules)
    return {"seed": seed, "duration_s": duration, "target_ops_per_s": rate, "operations": dict(tally.ops),
            "faults": dict(tally.faults), "fault_log": tally.fault_log,
            "emulator_stats": await asyncio.to_thread(cluster.emulator_stats), **verdict}


def revive(cluster: Cluster) -> None:
    """A restart that raced with the next kill may have left a process down: bring it back."""
    for name, alive in cluster.alive().items():
        if not alive:
            cluster.restart(name)


def machine() -> dict[str, Any]:
    import os

    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=120)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--rate", type=float, default=20, help="target operations/s over both sides")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--converge-timeout", type=float, default=180)
    parser.add_argument("--out", type=Path, default=Path("bench/chaos_report.json"))
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after the run")
    parser.add_argument("--broker-restart", action=argparse.BooleanOptionalAction, default=True,
                        help="restart the broker once at 30-60 %% of the run")
    parser.add_argument("--salesforce", action=argparse.BooleanOptionalAction, default=True,
                        help="run the Salesforce emulator and connector too (edits, faults, checks)")
    parser.add_argument("--invoices", action=argparse.BooleanOptionalAction, default=True,
                        help="invoice changes on both sides too (edits, commands, deletes; checked)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    kind = chaos_salesforce.SalesforceCluster if args.salesforce else Cluster
    # A caller's timeout ends us with SIGTERM: unwind (the `finally` below stops the cluster's processes)
    # instead of dying at once and leaving its workers, emulators, broker and database running.
    signal.signal(signal.SIGTERM, exit_on_term)
    cluster = kind(ClusterConfig(workers=args.workers)).start()
    try:
        report = asyncio.run(run_chaos(cluster, args.duration, seed, args.rate, args.converge_timeout,
                                       invoices=args.invoices, broker_restart=args.broker_restart))
    finally:
        cluster.stop()
    report["machine"] = machine()
    report["logs"] = str(cluster.root) if args.keep or not report.get("converged") else None
    if report["logs"] is None:
        cluster.cleanup()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    _print_summary(report, args.out)
    return 0 if report["converged"] and not report["divergences"] and not report["dead_letters"] else 1


def exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _print_summary(report: dict[str, Any], out: Path) -> None:
    summary = {k: report.get(k) for k in ("seed", "operations", "faults", "converged", "time_to_converge_s",
                                            "counts", "backlog")}
    summary["divergences"] = report["divergences"][:20]
    summary["dead_letters"] = len(report["dead_letters"])
    print(json.dumps(summary, indent=2, default=str))
    print(f"report written to {out}" + (f"; logs in {report['logs']}" if report["logs"] else ""))



async def refresh_until(sides: Sides, until: float, every: float) -> None:
    """Learn every side's ids now and then, until `until` (each refresh lists every catalog)."""
    while time.monotonic() < until:
        await sides.refresh()
        for module in sides.modules:
            await module.refresh()
        if sides.invoices is not None:
            await sides.invoices.refresh()
        await asyncio.sleep(every)


if __name__ == "__main__":
    sys.exit(main())

