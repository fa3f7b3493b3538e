"""The worker's own metrics/probe endpoint: unauthenticated, data-free, honest about liveness."""

from __future__ import annotations

import httpx

from meshwatch.health import HealthServer
from meshwatch.telemetry import get_telemetry


def test_metrics_and_probes():
    state = {"live": True, "ready": False}
    server = HealthServer("127.0.0.1", 0, lambda: state["live"], lambda: state["ready"]).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        get_telemetry().records_consumed.add(3, {"topic": "health-test", "format": "x"})
        metrics = httpx.get(f"{base}/metrics")
        assert metrics.status_code == 200 and "text/plain" in metrics.headers["content-type"]
        assert 'meshwatch_records_consumed_total{format="x"' in metrics.text
        assert httpx.get(f"{base}/livez").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 503
        state.update(live=False, ready=True)
        assert httpx.get(f"{base}/livez").status_code == 503
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert httpx.get(f"{base}/api/v1/alerts").status_code == 404
    finally:
        server.stop()
