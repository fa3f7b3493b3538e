"""`meshwatch bench store` runs end to end and reports sane, measured figures (tiny sizes)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from meshwatch.cli.main import app


def test_bench_store_smoke(tmp_path):
    out = CliRunner().invoke(app, [
        "bench", "store", "--edges", "300", "--windows", "1", "--windows", "3", "--rows", "2000",
        "--memory-edges", "300", "--repeat", "1", "--dir", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert [(s["edges"], s["windows_per_edge"]) for s in data["snapshot"]] == [(300, 1),
                                                                              (300, 3)]
    assert all(s["best_ms"] > 0 and s["cpu_ms"] > 0 for s in data["snapshot"])
    tables = [i["table"] for i in data["insert"]]
    assert tables[:2] == ["edge_windows", "edge_events"]
    assert all(i["rows"] > 0 and i["rows_per_second"] > 0 for i in data["insert"])
    quiet, busy = data["memory"]
    assert (quiet["events_per_edge"], busy["events_per_edge"]) == (3, 200)
    assert 200 < quiet["python_heap_per_edge"] < 20_000
