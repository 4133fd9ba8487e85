"""Profile the API and one worker with py-spy while the outbound throughput workload runs.

    python -m bench.hotspots --creates 5000 --seconds 10 --out-dir /tmp/twoway-profile

Writes <name>.txt (py-spy raw, collapsed stacks) for the api, worker-0, relay and emulator, then prints
the top functions and modules by own and total samples, so the README's analysis can be re-derived.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.cluster import Cluster, ClusterConfig
from bench.run import UNTHROTTLED, outbound_throughput

PROFILED = ("api", "worker-0", "relay", "emulator")
# Modules whose inclusive share is worth a line (the entry frames are in every sample).
LIBRARIES = ("sqlalchemy", "asyncpg", "stripe", "httpx", "httpcore", "anyio", "fastapi", "starlette", "pydantic",
             "pydantic_core", "uvicorn", "aiokafka", "twoway.sync", "twoway.kit", "twoway.customers",
             "twoway.connectors", "twoway.webhooks", "twoway.emulators.stripe", "opentelemetry", "prometheus_client",
             "structlog", "stdlib:json", "stdlib:logging")


def aggregate(path: Path, top: int = 15) -> str:
    """Own time by function and total (inclusive) time by top-level package module, from a py-spy raw file."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[_function(frames[-1])] += n
        for module in {_module(f) for f in frames} & set(LIBRARIES):
            inclusive[module] += n
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples", "  own time by function:"]
    lines += [f"    {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines.append("  inclusive time by module:")
    lines += [f"    {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) used so far, by process group: every process on the machine, named by role."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = collections.defaultdict(float)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        out[_role(cmdline, stat)] += (int(fields[11]) + int(fields[12])) / tick
    return dict(out)


def _role(cmdline: str, stat: str) -> str:
    comm = stat.partition("(")[2].rpartition(")")[0]
    if comm.startswith("postgres") or "bin/postgres" in cmdline:
        return "postgresql"
    if "tansu" in cmdline or comm.startswith("tansu"):
        return "broker (tansu)"
    if "py-spy" in cmdline:
        return "py-spy"
    for role, marker in (("api", "twoway api"), ("relay", "--only relay"), ("workers", "--only outbound"),
                         ("emulator", "twoway.emulators.stripe"), ("load generator", "bench.hotspots")):
        if marker in cmdline:
            return role
    return "other"


def _function(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})" if where else name


def _module(frame: str) -> str:
    # py-spy shortens paths to the import path: "sqlalchemy/orm/session.py" -> sqlalchemy,
    # "twoway/sync/engine.py" -> twoway.sync, "asyncio/events.py" -> asyncio, "contextlib.py" -> contextlib.
    _, _, where = frame.partition(" (")
    parts = where.split(":")[0].split("/")
    if parts[0] == "twoway" and len(parts) > 1:
        return "twoway." + parts[1].removesuffix(".py")
    if parts[0] == "json":
        return "stdlib:json"
    if parts[0] == "logging":
        return "stdlib:logging"
    return parts[0].removesuffix(".py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--delay", type=float, default=3.0, help="seconds into the workload before sampling")
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/twoway-profile"))
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    cluster = Cluster(ClusterConfig(workers=2, inbound_mode="webhook", stripe_rate_limit=UNTHROTTLED)).start()
    try:
        async def body() -> None:
            work = asyncio.create_task(outbound_throughput(cluster, args.creates))
            await asyncio.sleep(args.delay)
            spies = [await asyncio.create_subprocess_exec(
                py_spy, "record", "-p", str(cluster.procs[name].pid), "-d", str(args.seconds), "-f", "raw",
                "-o", str(args.out_dir / f"{name}.txt"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for name in PROFILED]
            started, before = time.monotonic(), cpu_seconds()
            await asyncio.gather(*(s.wait() for s in spies))
            elapsed, after = time.monotonic() - started, cpu_seconds()
            print(f"[profile] sampled {elapsed:.0f} s; CPU by role, in cores (the machine has {os.cpu_count()}):")
            for role in sorted(after, key=lambda r: before.get(r, 0) - after[r]):
                used = (after[role] - before.get(role, 0)) / elapsed
                if used >= 0.01:
                    print(f"    {used:5.2f}  {role}")
            figure = await work
            print(f"[profile] {figure.workload}: {figure.value} {figure.unit} ({figure.note})", flush=True)
        asyncio.run(body())
    finally:
        cluster.stop()
        cluster.cleanup()
    for name in PROFILED:
        path = args.out_dir / f"{name}.txt"
        print(aggregate(path) if path.exists() else f"{name}: no profile")


if __name__ == "__main__":
    main()
