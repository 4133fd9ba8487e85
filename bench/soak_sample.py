"""What a soak samples once a minute: each process's memory and open files (/proc), PostgreSQL's
connections and table sizes, and the asyncio task count our processes export (`twoway_asyncio_tasks`).

A process is counted with its descendants. PostgreSQL (the postmaster and its backends) is counted
by PSS, not RSS: every backend maps the shared buffers, and summing RSS would count them once per
backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg

from bench.cluster import Cluster
from twoway.kit.db import asyncpg_dsn

APP_NAME = "twoway-soak"  # the sampler's own connection, left out of the counts
CONNECTIONS_SQL = """SELECT COALESCE(NULLIF(application_name, ''), '(unnamed)') AS app, count(*) AS n
                     FROM pg_stat_activity WHERE datname = current_database() AND application_name <> $1
                     GROUP BY 1"""
TABLE_SIZES_SQL = """SELECT c.relname AS name, pg_total_relation_size(c.oid) AS bytes
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public'"""


class Sampler:
    """One sample of the cluster's processes and database: `await sampler.sample()`."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.conn: asyncpg.Connection | None = None

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def sample(self) -> dict[str, Any]:
        # /proc and the metrics pages are read in threads: a slow /metrics must not stall the driver's loop.
        processes, tasks = await asyncio.gather(asyncio.to_thread(self.processes), asyncio.to_thread(self.tasks))
        return {"processes": processes, "tasks": tasks, "pg": await self.database()}

    # -- processes ---------------------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        pids = {name: proc.pid for name, proc in self.cluster.procs.items() if proc.poll() is None}
        broker = self.cluster.broker
        if broker is not None and broker.proc is not None and broker.proc.poll() is None:
            pids["broker"] = broker.proc.pid
        if self.cluster.pg is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid_file = self.cluster.pg.data_dir / "postmaster.pid"
                pids["postgres"] = int(pid_file.read_text().split()[0])
        return pids

    def processes(self) -> dict[str, dict[str, int]]:
        children = _children()
        out = {}
        for name, pid in self.pids().items():
            tree = _tree(pid, children)
            memory = _pss_kb if name == "postgres" else _rss_kb
            out[name] = {"pid": pid, "processes": len(tree), "rss_kb": sum(memory(p) for p in tree),
                         "fds": sum(_fds(p) for p in tree)}
        return out

    # -- asyncio tasks -----------------------------------------------------------------------------

    def tasks(self) -> dict[str, int | None]:
        """`twoway_asyncio_tasks` of the API and of each worker (None when its endpoint did not answer)."""
        urls = {"api": self.cluster.api_url + "/metrics"}
        urls.update({name: f"http://127.0.0.1:{port}/metrics" for name, port in self.cluster.metrics_ports.items()})
        return {name: _gauge(url, "twoway_asyncio_tasks") for name, url in urls.items()}

    # -- the database ------------------------------------------------------------------------------

    async def database(self) -> dict[str, Any]:
        try:
            if self.conn is None or self.conn.is_closed():
                self.conn = await asyncpg.connect(asyncpg_dsn(self.cluster.database_url),
                                                  server_settings={"application_name": APP_NAME})
            connections = {r["app"]: int(r["n"]) for r in await self.conn.fetch(CONNECTIONS_SQL, APP_NAME)}
            tables = {r["name"]: int(r["bytes"]) for r in await self.conn.fetch(TABLE_SIZES_SQL)}
        except (OSError, asyncpg.PostgresError) as exc:
            self.conn = None
            return {"error": repr(exc)[:200]}
        return {"connections": connections, "connections_total": sum(connections.values()),
                "tables": tables, "bytes_total": sum(tables.values())}


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name may hold spaces or parentheses: the fields after its last ')' are fixed.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def _tree(pid: int, children: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _status_kb(path: str, field: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0  # the process is gone (or a kernel thread): nothing to count


def _rss_kb(pid: int) -> int:
    return _status_kb(f"/proc/{pid}/status", "VmRSS")


def _pss_kb(pid: int) -> int:
    return _status_kb(f"/proc/{pid}/smaps_rollup", "Pss")


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _gauge(url: str, name: str) -> int | None:
    """One unlabelled series of a Prometheus text page."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None
