"""A soak's figures: its samples as series, a linear trend per series, the issue's targets, Rich tables.

Pure functions over the report's data, so they are unit-tested without a cluster
(tests/e2e/test_soak_short.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

# Issue 24's targets (reported, never asserted): bytes of PostgreSQL per change measured before
# retention existed, of which a steady state may keep a tenth.
BYTES_PER_CHANGE_BEFORE = 2980
FLAT = 1.10  # RSS and fds at most 10 % above the warm-up mark
P99_DRIFT = 1.20  # p99 of the last window at most 20 % above the first window's
WINDOW_S = 300.0
EMULATORS = ("emulator", "salesforce")  # the "5-minute mark" and "first/last 5 minutes"


def window(duration_s: float) -> float:
    """Warm-up and comparison windows: 5 minutes, or a third of a shorter run."""
    return min(WINDOW_S, duration_s / 3)


def series(samples: Sequence[dict[str, Any]]) -> dict[str, list[tuple[float, float | None]]]:
    """Every number of every sample as `name -> [(minute, value)]` (None where it could not be read)."""
    names: dict[str, None] = {}
    flat = [_flatten(s) for s in samples]
    for f in flat:
        names.update(dict.fromkeys(f))
    return {name: [(s["at_s"] / 60, f.get(name)) for s, f in zip(samples, flat, strict=True)] for name in names}


def _flatten(sample: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, p in sample.get("processes", {}).items():
        out[f"rss_mb.{name}"] = round(p["rss_kb"] / 1024, 1)
        out[f"fds.{name}"] = p["fds"]
    out.update({f"tasks.{name}": n for name, n in sample.get("tasks", {}).items() if n is not None})
    pg = sample.get("pg", {})
    if "tables" in pg:
        out["pg.connections"] = pg["connections_total"]
        out.update({f"pg.connections.{app}": n for app, n in pg["connections"].items()})
        out["pg.mb_total"] = round(pg["bytes_total"] / 2**20, 2)
        out.update({f"pg.mb.{table}": round(b / 2**20, 3) for table, b in pg["tables"].items()})
    for key in ("changes_per_s", "p50_ms", "p99_ms"):
        if sample.get(key) is not None:
            out[key] = sample[key]
    return out


def trend(points: Sequence[tuple[float, float | None]]) -> dict[str, Any]:
    """Least-squares line through (minute, value): slope per minute, and the line's rise over the run as
    a percentage of where it starts (None when it starts at or below zero)."""
    pts = [(x, y) for x, y in points if y is not None]
    if len(pts) < 2:
        return {"n": len(pts), "slope_per_min": None, "pct_over_run": None}
    n = len(pts)
    mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else 0.0
    start, end = pts[0][0], pts[-1][0]
    fitted_start = my + slope * (start - mx)
    pct = slope * (end - start) / fitted_start * 100 if fitted_start > 0 else None
    return {"n": n, "first": pts[0][1], "last": pts[-1][1], "min": min(y for _, y in pts),
            "max": max(y for _, y in pts), "slope_per_min": round(slope, 4),
            "pct_over_run": None if pct is None else round(pct, 1)}


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def latencies_ms(sightings: Sequence[dict[str, Any]], start_s: float, end_s: float) -> list[float]:
    """Latencies of the probes whose change our API took in [start_s, end_s)."""
    return [s["latency_s"] * 1000 for s in sightings
            if start_s <= s["at_s"] < end_s and s["latency_s"] is not None]


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue with the value this run measured, and met or missed."""
    samples = report["samples"]
    duration = report["duration_s"]
    win = window(duration)
    mark = min(samples, key=lambda s: abs(s["at_s"] - win))
    later = [s for s in samples if s["at_s"] >= mark["at_s"]]
    out = []
    for name, p in mark["processes"].items():
        for key, label in (("rss_kb", "RSS"), ("fds", "open fds")):
            peak = max((s["processes"][name][key] for s in later if name in s["processes"]), default=None)
            if peak is not None and p[key]:
                out.append(_target(f"{label} of {name} after warm-up", peak / p[key], FLAT,
                                   f"peak {peak} vs {p[key]} at {mark['at_s'] / 60:.1f} min"
                                   + (" (an emulator: keeps every object in memory)" if name in EMULATORS else "")))
    first = latencies_ms(report["sightings"], 0, win)
    last = latencies_ms(report["sightings"], duration - win, duration)
    p99_first, p99_last = percentile(first, 0.99), percentile(last, 0.99)
    if p99_first and p99_last is not None:
        out.append(_target("p99 change-to-Stripe, last window vs first", p99_last / p99_first, P99_DRIFT,
                           f"{p99_last:.0f} ms vs {p99_first:.0f} ms ({win / 60:.1f}-minute windows)"))
    end = samples[-1]
    changes = end["changes"] - mark["changes"]
    if changes > 0 and "bytes_total" in end["pg"] and "bytes_total" in mark["pg"]:
        per_change = (end["pg"]["bytes_total"] - mark["pg"]["bytes_total"]) / changes
        out.append(_target("PostgreSQL bytes per change at steady state", per_change,
                           BYTES_PER_CHANGE_BEFORE * 0.1, f"{per_change:.0f} B over {changes} changes "
                           f"(before retention: {BYTES_PER_CHANGE_BEFORE} B)"))
    clean = bool(report["converged"]) and not report["divergences"] and not report["dead_letters"]
    out.append({"target": "converged, no divergence, no dead letter", "value": clean, "limit": True,
                "met": clean, "detail": f"{len(report['divergences'])} divergences, "
                                        f"{len(report['dead_letters'])} dead letters"})
    return out


def _target(name: str, value: float, limit: float, detail: str) -> dict[str, Any]:
    return {"target": name, "value": round(value, 3), "limit": limit, "met": value <= limit, "detail": detail}


# -- printing --------------------------------------------------------------------------------------


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=160)
    samples = report["samples"]
    load = Table(title="Soak: load, latency and the database, per sample")
    for col in ("min", "changes/s", "faults", "probes", "p50 ms", "p99 ms", "pg conns", "pg MB"):
        load.add_column(col, justify="right")
    for s in samples:
        pg = s["pg"]
        load.add_row(f"{s['at_s'] / 60:.1f}", _num(s.get("changes_per_s")), ", ".join(s.get("faults", [])) or "",
                     str(s.get("probes", "")), _num(s.get("p50_ms")), _num(s.get("p99_ms")),
                     str(pg.get("connections_total", "?")), _num(pg.get("bytes_total", 0) / 2**20))
    console.print(load)
    names = sorted({n for s in samples for n in s["processes"]})
    procs = Table(title="Processes per sample: RSS MB / open fds / asyncio tasks (PostgreSQL: PSS of all backends)")
    procs.add_column("min", justify="right")
    for name in names:
        procs.add_column(name, justify="right")
    for s in samples:
        cells = []
        for name in names:
            p = s["processes"].get(name)
            tasks = s["tasks"].get(name)
            cells.append("-" if p is None else f"{p['rss_kb'] / 1024:.0f}/{p['fds']}"
                         + ("" if tasks is None else f"/{tasks}"))
        procs.add_row(f"{s['at_s'] / 60:.1f}", *cells)
    console.print(procs)
    trends = Table(title=f"Trends after warm-up ({report['warmup_s'] / 60:.1f} min): least squares per series")
    for col in ("series", "first", "last", "min", "max", "slope/min", "% over run"):
        trends.add_column(col, justify="left" if col == "series" else "right")
    for name, t in report["trends"].items():
        if t["slope_per_min"] is not None:
            trends.add_row(name, _num(t["first"]), _num(t["last"]), _num(t["min"]), _num(t["max"]),
                           _num(t["slope_per_min"]), _num(t["pct_over_run"]))
    console.print(trends)
    goals = Table(title="Issue 24 targets (reported, not asserted)")
    for col in ("target", "value", "limit", "met", "detail"):
        goals.add_column(col)
    for g in report["targets"]:
        goals.add_row(g["target"], str(g["value"]), str(g["limit"]), "met" if g["met"] else "MISSED", g["detail"])
    console.print(goals)


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    return f"{v:,}"
