"""Every `meshwatch bench` command runs end to end at a tiny size and reports real figures.

The numbers are not judged here (targets live in the benchmarks, not in timed tests); what
is checked is that each bench still works against the current pipeline and that its figures
come from the work it did (counts match what it was asked to do, rates are positive).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

MESHWATCH = [str(Path(sys.executable).parent / "meshwatch")]


def _bench(*args: str) -> Any:
    done = subprocess.run([*MESHWATCH, "bench", *args, "--json"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # Sketches left frozen at exit made nanobind print pages of "leaked instance" noise.
    assert "leaked" not in done.stderr, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_bench_ingest_times_every_stage() -> None:
    rows = _bench("ingest", "--records", "5000", "--formats", "envoy-json")
    assert [r["stage"] for r in rows] == ["consume", "ingest", "pipeline"]
    for row in rows:
        assert row["records"] == 5000 and row["records_per_s"] > 0
    assert rows[1]["events"] == rows[2]["events"] == 5000


def test_bench_detectors_runs_all_enabled() -> None:
    report = _bench("detectors", "--duration", "10m", "--repeat", "1", "--no-per-detector")
    assert report["all_enabled"]["events_per_second"] > 0
    assert report["all_enabled"]["findings"] > 0  # the mixed scenario has attacks


def test_bench_alerts_measures_webhook_latency() -> None:
    report = _bench("alerts", "--seconds", "2", "--rate", "2000")
    assert report["new_alerts"] > 0
    assert report["webhook_posts"] == report["notified"] == report["new_alerts"]
    latency = report["latency_seconds"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]


def test_bench_api_measures_feed_latency() -> None:
    report = _bench("api", "--alerts", "1000", "--requests", "10")
    assert report["requests"] >= 10
    assert 0 < report["p50_ms"] <= report["p99_ms"]
