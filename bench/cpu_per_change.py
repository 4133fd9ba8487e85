"""`cpu_per_change`: CPU seconds of every twoway process and PostgreSQL per synced create, from /proc.

Runs `outbound_throughput` (N creates through the API, 2 workers, emulator unthrottled) and then waits
until everything has settled (each create's echo webhook merged too: it is part of what a change
costs). CPU is read for this cluster's processes only (the machine runs other things): each process
we started (API, relay, workers, emulator) with its descendants, PostgreSQL's postmaster with its
backends, and the broker; a process's counters include its reaped children (`cutime`, `cstime`), so
PostgreSQL backends that came and went are counted. Target: ≤ 4 ms per create for twoway's processes
and PostgreSQL together (the emulator and the broker stand in for Stripe and Kafka: shown, not counted).
`python -m bench.cpu_per_change [--creates N] [--pg-sample]` runs it alone; `--pg-sample` also samples
`pg_stat_activity` every 10 ms and prints which statements PostgreSQL was busy with.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.cluster import Cluster, ClusterConfig

TICK = os.sysconf("SC_CLK_TCK")
NOT_OURS = ("emulator", "broker")  # stand-ins for Stripe and Kafka


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+system CPU seconds of the process and its reaped children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / TICK


def _tree_cpu(root: int, children: dict[int, list[int]], stats: dict[int, tuple[int, float]]) -> float:
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def roots(cluster: Cluster) -> dict[str, int]:
    out = {name: proc.pid for name, proc in cluster.procs.items() if proc.poll() is None}
    if cluster.pg is not None:
        pid_file = cluster.pg.data_dir / "postmaster.pid"
        if pid_file.exists():
            out["postgresql"] = int(pid_file.read_text().split()[0])
    if cluster.broker is not None and cluster.broker.proc is not None:
        out["broker"] = cluster.broker.proc.pid
    return out


def cpu_by_process(cluster: Cluster) -> dict[str, float]:
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            got = _stat(int(entry.name))
            if got is not None:
                stats[int(entry.name)] = got
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in stats.items():
        children[ppid].append(pid)
    return {name: _tree_cpu(pid, children, stats) for name, pid in roots(cluster).items()}


def role(name: str) -> str:
    return "workers" if name.startswith("worker-") else name


async def settle_quietly(cluster: Cluster, timeout: float = 300) -> tuple[float, float]:
    """`bench.run.settle` on one connection, polling every 2 s: (seconds it took, CPU its PostgreSQL
    backend used), so the probe's own cost can be taken out of PostgreSQL's."""
    import asyncpg

    from bench.run import BACKLOG
    from twoway.kit.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(cluster.database_url))
    try:
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        started = time.monotonic()
        while int(await conn.fetchval(BACKLOG)) and time.monotonic() - started < timeout:
            await asyncio.sleep(2)
        got = _stat(backend)
        return round(time.monotonic() - started, 1), got[1] if got else 0.0
    finally:
        await conn.close()


async def measure(cluster: Cluster, n: int) -> list[Any]:
    from bench.run import Figure, outbound_throughput

    before, started = cpu_by_process(cluster), time.monotonic()
    throughput = await outbound_throughput(cluster, n)
    settled, probe_cpu = await settle_quietly(cluster)
    after, elapsed = cpu_by_process(cluster), time.monotonic() - started
    used: dict[str, float] = defaultdict(float)
    for name, seconds in after.items():
        used[role(name)] += seconds - before.get(name, 0.0)
    used["postgresql"] -= probe_cpu  # the bench's own "settled yet?" query is not twoway's cost
    ours = {k: v for k, v in used.items() if k not in NOT_OURS}
    total = sum(ours.values())
    ranked = sorted(ours.items(), key=lambda kv: -kv[1])
    shares = ", ".join(f"{k} {v / n * 1000:.2f} ms ({v / total:.0%})" for k, v in ranked)
    others = ", ".join(f"{k} {used[k] / n * 1000:.2f} ms" for k in NOT_OURS if k in used)
    sizes = {"creates": n, "workers": cluster.config.workers, "elapsed_s": round(elapsed, 1),
             "settle_s": settled, "by_process_ms": {k: round(v / n * 1000, 3) for k, v in used.items()}}
    note = (f"CPU per synced create, from /proc, over outbound_throughput ({throughput.value} changes/s) and "
            f"until settled (echoes merged): {shares}; not counted: {others}; "
            f"the cluster used {sum(used.values()) / elapsed:.2f} cores of {os.cpu_count()}")
    return [throughput, Figure("cpu_per_change", "cpu_ms_per_create", round(total / n * 1000, 2), "ms", 4, False,
                               sizes, note)]


def config() -> ClusterConfig:
    from bench.run import UNTHROTTLED

    return ClusterConfig(workers=2, inbound_mode="webhook", stripe_rate_limit=UNTHROTTLED)


def run(quick: bool) -> list[Any]:
    from bench.run import with_cluster

    return with_cluster(config(), lambda c: measure(c, 500 if quick else 5000))  # type: ignore[no-any-return]


async def sample_pg(cluster: Cluster, n: int) -> list[Any]:
    """`measure`, while counting the statements PostgreSQL's backends are running (a sampling profile)."""
    import asyncpg

    from twoway.kit.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(cluster.database_url))
    seen: Counter[str] = Counter()
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            for row in await conn.fetch("SELECT state, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS q "
                                        "FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = "
                                        "'client backend' AND state <> 'idle'"):
                seen[f"{row['state']}: {row['q']}"] += 1
            await asyncio.sleep(0.01)
    task = asyncio.create_task(sample())
    try:
        return await measure(cluster, n)
    finally:
        stop.set()
        await task
        await conn.close()
        total = sum(seen.values()) or 1
        print("[pg-sample] busy backends by statement (share of samples):")
        for query, count in seen.most_common(25):
            print(f"  {count / total:6.1%}  {query}")


def main() -> int:
    import argparse

    from bench.run import show, with_cluster

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--creates", type=int, default=5000)
    parser.add_argument("--pg-sample", action="store_true")
    args = parser.parse_args()
    body = sample_pg if args.pg_sample else measure
    show([f.as_dict() for f in with_cluster(config(), lambda c: body(c, args.creates))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
