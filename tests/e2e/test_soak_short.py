"""A two-minute soak over real processes, and the figures it reports (trend, percentiles, targets).

The soak asserts behaviour only: converged, nothing lost or duplicated, nothing dead. Its speed and
flatness targets are reported by `bench.soak`, never asserted here (a loaded machine misses them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from bench import soak_report

from tests.helpers import run_bench


def test_trend_fits_a_line_and_its_rise_over_the_run() -> None:
    t = soak_report.trend([(0, 100), (1, 110), (2, 120), (3, None)])
    assert (t["slope_per_min"], t["pct_over_run"], t["first"], t["last"]) == (10, 20.0, 100, 120)
    assert soak_report.trend([(0, 5)])["slope_per_min"] is None
    assert soak_report.trend([(0, 0), (1, 0)])["pct_over_run"] is None  # nothing to be a percentage of


def test_percentile_and_windows() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (soak_report.percentile(values, 0.5), soak_report.percentile(values, 0.99)) == (50.0, 99.0)
    assert soak_report.percentile([], 0.5) is None
    assert soak_report.window(1800) == 300 and soak_report.window(120) == 40
    sightings = [{"at_s": 1, "latency_s": 0.2}, {"at_s": 5, "latency_s": None}, {"at_s": 9, "latency_s": 1.0}]
    assert soak_report.latencies_ms(sightings, 0, 9) == [200.0]


def _sample(at_s: float, changes: int, rss_kb: int, pg_bytes: int) -> dict:
    return {"at_s": at_s, "changes": changes, "processes": {"api": {"rss_kb": rss_kb, "fds": 50}},
            "tasks": {"api": 10}, "pg": {"bytes_total": pg_bytes, "tables": {"inbox": pg_bytes},
                                         "connections": {"twoway": 3}, "connections_total": 3}}


def test_targets_are_judged_against_the_warm_up_mark() -> None:
    report = {"duration_s": 900, "converged": True, "divergences": [], "dead_letters": [],
              "samples": [_sample(0, 0, 500, 0), _sample(300, 1000, 1000, 10**6), _sample(900, 3000, 1200, 10**6 + 200_000)],
              "sightings": [{"at_s": 10, "latency_s": 0.5}, {"at_s": 800, "latency_s": 0.55}]}
    by_name = {t["target"]: t for t in soak_report.targets(report)}
    assert by_name["RSS of api after warm-up"]["met"] is False  # 1,200 against 1,000 at 5 minutes: +20 %
    assert by_name["open fds of api after warm-up"]["met"] is True
    assert by_name["p99 change-to-Stripe, last window vs first"]["met"] is True  # +10 %
    per_change = by_name["PostgreSQL bytes per change at steady state"]
    assert (per_change["value"], per_change["met"]) == (100.0, True)
    assert by_name["converged, no divergence, no dead letter"]["met"] is True
    assert soak_report.series(report["samples"])["rss_mb.api"][0] == (0.0, 0.5)


@pytest.mark.heavy
@pytest.mark.slow
@pytest.mark.timeout(480)
def test_short_soak_converges_with_nothing_lost(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    # Two minutes at 25 changes/s on every side, sampled every 20 s, with one 30 s Stripe outage at 45 s.
    proc = run_bench(
        [sys.executable, "-m", "bench.soak", "--minutes", "2", "--rate", "25", "--seed", "3",
         "--sample-every", "20", "--faults", "stripe", "--fault-every", "45", "--outage-seconds", "30",
         "--converge-timeout", "150", "--out", str(out)],
        timeout=400,
    )
    assert out.exists(), proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["converged"], report.get("backlog")
    assert report["divergences"] == [], report["divergences"][:10]
    assert report["lost"] == report["duplicated"] == report["dead_letters"] == []
    assert proc.returncode == 0, proc.stdout[-3000:]
    # The run must have been one: changes on every side, the outage, and samples of every kind.
    ops = report["operations"]
    for side in ("ours", "stripe", "invoice", "salesforce", "probe"):
        assert sum(n for op, n in ops.items() if op.startswith(side + ".") and not op.endswith(".failed")) > 0, ops
    assert report["faults"] == {"stripe_outage": 1}
    assert len(report["samples"]) >= 6
    last = report["samples"][-1]
    assert {"api", "relay", "worker-0", "worker-1", "postgres", "broker"} <= set(last["processes"])
    assert last["pg"]["tables"]["customers"] > 0 and last["pg"]["connections_total"] > 0
    assert last["tasks"]["api"] and last["tasks"]["worker-0"]
    assert report["probes"]["count"] > 0
