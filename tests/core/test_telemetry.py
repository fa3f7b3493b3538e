"""Self-telemetry: the metric-name contract appears on /metrics after real processing."""

from __future__ import annotations

from fastapi.testclient import TestClient

from alerts.api import create_app
from meshwatch.pipeline import Pipeline
from meshwatch.records import Origin, RawRecord
from meshwatch.settings import load_settings
from meshwatch.store import Store
from tests.alerts.api_client import bearer
from tests.ingest.istio_lines import inbound_line

CONTRACT = (
    "meshwatch_records_consumed_total", "meshwatch_records_parsed_total",
    "meshwatch_parse_failures_total", "meshwatch_batch_seconds_bucket",
    "meshwatch_store_write_seconds_bucket", "meshwatch_alerts_raised_total",
    "meshwatch_state_evictions_total",
)


def test_metrics_endpoint_reports_the_contract(tmp_path):
    settings = load_settings(overrides={"store": {"path": str(tmp_path / "d")}})
    store = Store.open(settings.store)
    pipeline = Pipeline(settings, store)
    try:
        records = [RawRecord(inbound_line(i, i, principal=None, path=f"/p{i}"),
                             Origin("envoy.access", i, 0), "envoy-json") for i in range(20)]
        records.append(RawRecord(b"garbage", Origin("envoy.access", 99, 0), "envoy-json"))
        pipeline.process(records)
        pipeline.finish()
        pipeline.checkpoint()
        with TestClient(create_app(store, settings), headers=bearer(store, "viewer")) as client:
            text = client.get("/metrics").text
        for name in CONTRACT:
            assert name in text, name
        consumed = [line for line in text.splitlines()
                    if line.startswith("meshwatch_records_consumed_total{")
                    and 'topic="envoy.access"' in line]
        assert consumed and float(consumed[0].rsplit(" ", 1)[1]) >= 21
        assert 'map="graph_buckets"' in text
    finally:
        pipeline.close()
        store.close()
