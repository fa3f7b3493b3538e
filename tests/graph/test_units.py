"""Pure pieces: times and ranges, node refs, sketch merging, and the graph builder's memory
diet (buffered latencies must give the very same sketch)."""

from __future__ import annotations

import base64
import pickle
from datetime import UTC, datetime, timedelta

import pytest
from datasketches import tdigest_float

from ingest.graph import SKETCH_K, EdgeGraph
from meshwatch.graphs.model import decode_ref, encode_ref, mtls_status
from meshwatch.graphs.sketches import merged_quantiles
from meshwatch.graphs.timerange import RangeError, TimeRange, between, parse_span, parse_time
from meshwatch.records import EdgeEvent

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW),
    ("-15m", NOW - timedelta(minutes=15)),
    ("now-2h", NOW - timedelta(hours=2)),
    ("- 7d", NOW - timedelta(days=7)),
    ("2026-02-01", datetime(2026, 2, 1, tzinfo=UTC)),
    ("2026-02-01T10:00:00Z", datetime(2026, 2, 1, 10, tzinfo=UTC)),
    ("2026-02-01T10:00:00.250+02:00", datetime(2026, 2, 1, 8, 0, 0, 250000, tzinfo=UTC)),
    ("2026-02-01 10:00:00", datetime(2026, 2, 1, 10, tzinfo=UTC)),
])
def test_times_operators_type(text, expected):
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "tomorrow", "-", "-15 parsecs", "+1h", "2026-13-01"])
def test_unreadable_times_say_what_to_type(text):
    with pytest.raises(RangeError, match="use RFC 3339"):
        parse_time(text, NOW)


def test_latest_needs_data():
    with pytest.raises(RangeError, match="holds no edge windows"):
        parse_time("latest", NOW, latest=lambda: None)
    assert parse_time("latest", NOW, latest=lambda: NOW) == NOW


def test_ranges_are_never_reversed_or_empty():
    with pytest.raises(RangeError, match="reversed time range: since"):
        between(NOW, NOW - timedelta(seconds=1))
    with pytest.raises(RangeError, match="empty time range"):
        TimeRange(NOW, NOW)
    with pytest.raises(RangeError, match="longer than zero"):
        parse_span("0s")
    assert TimeRange.ending(NOW, 900).start == NOW - timedelta(minutes=15)


@pytest.mark.parametrize("node", ["spiffe://cluster.local/ns/a/sa/b", "db.x.svc:5432",
                                  "10.0.0.1", "ns/w:80", "ünïcode/ß"])
def test_refs_round_trip(node):
    ref = encode_ref(node)
    assert "/" not in ref and "=" not in ref and decode_ref(ref) == node


def test_status_needs_destination_evidence():
    assert [mtls_status(t, f) for t, f in ((5, 0), (5, 5), (0, 5), (0, 0))] == [
        "all-mtls", "mixed", "plaintext", "unknown"]


def _sketch(values: list[float]) -> str:
    sketch = tdigest_float(SKETCH_K)
    for v in values:
        sketch.update(v)
    return base64.b64encode(bytes(sketch.serialize())).decode()


def test_merged_percentiles_are_not_averaged_percentiles():
    fast, slow = [10.0 + i / 100 for i in range(900)], [1000.0 + i for i in range(100)]
    p50, _, p99 = merged_quantiles([_sketch(fast), _sketch(slow)])
    assert 10 <= p50 <= 20  # 90% of calls are fast; the mean of the two medians is ~500
    assert p99 >= 1000
    assert merged_quantiles([]) == (None, None, None)
    with pytest.raises(ValueError, match="unreadable latency sketch"):
        merged_quantiles(["bm90IGEgc2tldGNo"])


def _events(n: int) -> list[EdgeEvent]:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    return [EdgeEvent(ts=t0 + timedelta(milliseconds=i), origin="envoy_json",
                      reporter="destination", source_principal="spiffe://td/ns/a/sa/x",
                      destination_service="s.a.svc.cluster.local", destination_port=80,
                      duration_ms=0.1 + (i * 7919 % 1000) / 7.0, mtls=True,
                      tls_version="TLSv1.3")
            for i in range(n)]


@pytest.mark.parametrize("n", [1, 5, 127, 128, 129, 1000])
def test_buffered_latencies_give_the_very_same_sketch(n):
    g = EdgeGraph(window=60, allowed_lateness=0)
    events = _events(n)
    for e in events:
        g.add(e)
    (w,) = g.close_all()
    direct = tdigest_float(SKETCH_K)
    for e in events:
        direct.update(float(e.duration_ms))
    assert base64.b64decode(w["latency_sketch"]) == bytes(direct.serialize())
    assert w["latency_p99"] == direct.get_quantile(0.99) and w["latency_count"] == n


def test_open_buckets_survive_a_checkpoint_mid_buffer():
    g = EdgeGraph(window=60, allowed_lateness=0)
    events = _events(300)
    for e in events[:50]:
        g.add(e)
    g = pickle.loads(pickle.dumps(g))
    for e in events[50:]:
        g.add(e)
    (w,) = g.close_all()
    direct = tdigest_float(SKETCH_K)
    for e in events:
        direct.update(float(e.duration_ms))
    assert base64.b64decode(w["latency_sketch"]) == bytes(direct.serialize())
    assert w["peer_principals"] == ["spiffe://td/ns/a/sa/x"] and w["tls_versions"] == ["TLSv1.3"]


def test_sets_from_older_checkpoints_still_work():
    g = EdgeGraph(window=60, allowed_lateness=0)
    g.add(_events(1)[0])
    (bucket,) = g._open.values()
    state = bucket.__getstate__()
    del state["latencies"]  # a checkpoint written before the latency buffer existed
    state["peer_principals"] = {"spiffe://td/ns/a/sa/old"}
    bucket.__setstate__(state)
    assert bucket.latencies is None
    g.add(_events(2)[1])
    (w,) = g.close_all()
    assert w["peer_principals"] == ["spiffe://td/ns/a/sa/old", "spiffe://td/ns/a/sa/x"]
