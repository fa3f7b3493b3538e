"""End to end: simulate a short mixed scenario, run `meshwatch eval` (the real pipeline on an
embedded store) and check every attack kind is detected and no benign look-alike pages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshwatch.cli.main import app
from meshwatch.simulate import SimulationConfig, simulate


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mixed")
    start = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1_000_000)
    simulate(SimulationConfig(out_dir=out, start_us=start, duration_s=2 * 3600,
                              scenario="mixed", seed=3))
    return out


@pytest.mark.timeout(300)
def test_meshwatch_eval_detects_every_attack_kind_without_paging_on_lookalikes(mixed):
    result = CliRunner().invoke(app, ["eval", "--input", str(mixed), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    labels = json.loads((mixed / "labels.json").read_text())
    kinds = {a["kind"] for a in labels["attacks"]}
    assert set(report["by_attack_kind"]) == kinds
    for kind, group in report["by_attack_kind"].items():
        assert group["detection_rate"] == 1.0, f"{kind} missed: {group['missed']}"
    assert report["benign_lookalikes_paged"] == []
    # Each expected non-mTLS and lateral detector did its part on its own attack.
    for name in ("plaintext_edge", "mtls_downgrade", "fanout_scan", "cert_expiry",
                 "identity_misuse", "lateral_chain"):
        assert report["by_detector"][name]["detection_rate"] == 1.0, name


def test_bench_detectors_measures_the_same_run(mixed):
    from meshwatch.bench_detectors import capture, run
    from meshwatch.settings import load_settings

    settings = load_settings()
    captured = capture(mixed / "envoy-json.log", "envoy-json", settings)
    result = run(captured, dict(settings.detectors), repeat=1, per_detector=False)
    data = result.as_dict()
    assert data["events"] > 50_000 and data["notes"] > 0 and data["windows"] > 0
    assert data["all_enabled"]["events_per_second"] > 0
    assert data["all_enabled"]["findings"] > 0
