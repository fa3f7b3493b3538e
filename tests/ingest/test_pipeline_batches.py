"""`Pipeline.process` runs a batch one stage at a time (parse all, resolve all, aggregate all).

That must be invisible: the same records give the same windows, notes, alerts, dead letters and
stored events whether they come one record per batch (which is record-at-a-time processing) or
thousands per batch, and whether raw events are kept or not (ids are only computed when kept).
"""

from __future__ import annotations

from typing import Any

import pytest

from ingest.sources.files import read_records
from meshwatch.bench_ingest import _NullStore
from meshwatch.pipeline import Pipeline
from meshwatch.records import Origin, RawRecord
from meshwatch.settings import load_settings
from meshwatch.simulate import SimulationConfig, simulate

GARBAGE = [b"not json at all", b"[1, 2, 3]", b'{"start_time": "yesterday"}']


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[RawRecord]:
    out = tmp_path_factory.mktemp("sim")
    simulate(SimulationConfig(out_dir=out, start_us=1_763_600_000_000_000, duration_s=1800,
                              scenario="mixed", formats=("envoy-json",), seed=11))
    raw = [r.payload for r in read_records(out / "envoy-json.log", "envoy-json")]
    # Malformed records in the middle, and a Kafka message batching several lines.
    raw[100:100] = GARBAGE
    raw[200:205] = [b"\n".join(raw[200:205])]
    return [RawRecord(payload, Origin("envoy.access", offset, 0), "envoy-json")
            for offset, payload in enumerate(raw)]


def _run(records: list[RawRecord], batch: int, store_events: bool) -> dict[str, Any]:
    settings = load_settings(overrides={"store": {"store_events": store_events},
                                        "alerts": {"series_windows": 0}})
    pipeline = Pipeline(settings, _NullStore())  # type: ignore[arg-type]
    for start in range(0, len(records), batch):
        pipeline.process(records[start:start + batch])
    pipeline.finish()
    return {
        "records": pipeline.stats.records,
        "events": pipeline.stats.events,
        "failures": [(f.origin.offset, f.reason) for f in pipeline._dead],
        "windows": [(w["edge_src"], w["edge_dst"], w["window_start"], w["requests"])
                    for w in pipeline._windows],
        "alerts": sorted((c.kind, c.alert.fingerprint, c.alert.count)
                         for c in pipeline._alert_changes),
        "scored": dict(pipeline.engine.scored),
        "stored": [(eid, event, src, dst, origin)
                   for eid, event, src, dst, origin in pipeline._events],
    }


def test_batch_size_and_event_ids_do_not_change_results(records):
    one_by_one = _run(records, 1, store_events=True)
    batched = _run(records, 2000, store_events=True)
    assert batched == one_by_one
    # Non-trivial input: events, dead letters, closed windows, alerts and stored events.
    assert one_by_one["events"] > 1000
    assert len(one_by_one["failures"]) == len(GARBAGE)
    assert one_by_one["windows"] and one_by_one["alerts"] and one_by_one["scored"]
    assert len(one_by_one["stored"]) == one_by_one["events"]
    # The batched line message: each line's event keeps its own id.
    ids = [eid for eid, *_ in one_by_one["stored"]]
    assert len(set(ids)) == len(ids)

    unstored = _run(records, 2000, store_events=False)
    assert unstored["stored"] == []
    assert {k: v for k, v in unstored.items() if k != "stored"} == {
        k: v for k, v in one_by_one.items() if k != "stored"}
