"""The mTLS-evidence trap: source-side (outbound) records alone never raise a non-mTLS alert.

A simulated mesh where a sidecar is bypassed (plaintext, a downgrade) and kubelet probes speak
plaintext: the full logs raise non-mTLS findings; the same logs with only the callers' outbound
records raise none, because a caller's proxy cannot know whether a client certificate was
presented at the other end.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

import detectors.catalog  # noqa: F401 - registers the detectors
from detectors.base import DETECTORS
from detectors.engine import DetectionEngine
from meshwatch.bench_detectors import capture
from meshwatch.settings import load_settings
from meshwatch.simulate import SimulationConfig, simulate

NON_MTLS = {name for name, cls in DETECTORS.items() if cls.family == "non_mtls"}


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    start = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1_000_000)
    simulate(SimulationConfig(out_dir=out, start_us=start, duration_s=3600,
                              scenario="mtls-downgrade", seed=5))
    return out / "envoy-json.log"


def non_mtls_findings(path: Path, tmp_path: Path) -> list:
    settings = load_settings()
    captured = capture(path, "envoy-json", settings)
    # Every non-mTLS detector, with declarations so none is silent for lack of them.
    policy = tmp_path / "pa.yaml"
    policy.write_text("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
                      "metadata: {name: d, namespace: legacy}\nspec: {mtls: {mode: PERMISSIVE}}\n")
    engine = DetectionEngine.from_config({
        "plaintext_permissive": {"enabled": True, "params": {"policy_files": [str(policy)]}},
        "policy_violation": {"enabled": True, "params": {"policy_files": [str(policy)]}},
    })
    assert set(engine.names) >= NON_MTLS
    found = []
    for kind, inputs in captured.batches:
        found += (engine.process_events(inputs) if kind == "events"
                  else engine.process_windows(inputs))
    return [f for f in found if f.detector in NON_MTLS]


def test_full_logs_raise_non_mtls_findings(logs, tmp_path):
    detectors = {f.detector for f in non_mtls_findings(logs, tmp_path)}
    assert {"plaintext_edge", "mtls_downgrade", "plaintext_permissive"} <= detectors


def test_source_side_records_alone_raise_none(logs, tmp_path):
    outbound = tmp_path / "outbound.log"
    with logs.open("rb") as src, outbound.open("wb") as dst:
        for line in src:
            if not (json.loads(line).get("upstream_cluster") or "").startswith("inbound|"):
                dst.write(line)
    assert outbound.stat().st_size > 0
    assert non_mtls_findings(outbound, tmp_path) == []
