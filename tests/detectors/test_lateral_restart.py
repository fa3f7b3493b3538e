"""Restart: the engine's state is pickled mid-stream (as the pipeline checkpoints it with the
source offsets) and restored into a fresh engine; detection goes on as if nothing happened."""

from __future__ import annotations

from datetime import timedelta

from detectors.engine import DetectionEngine
from tests.detectors.streams import T0, notes_and_windows
from tests.detectors.test_scan import baseline, call

SPLIT = T0 + timedelta(minutes=50)


def stream():
    events = baseline(70)
    events += call(61, "cart", "shop", "vault.security", code=403, path="/v1/secret")
    events += call(62, "cart", "shop", "ratings.books", code=200, path="/ratings/1")
    notes, windows = notes_and_windows(sorted(events, key=lambda e: e.ts))
    return ([n for n in notes if n["ts"] < SPLIT], [w for w in windows if w["last_seen"] < SPLIT],
            [n for n in notes if n["ts"] >= SPLIT], [w for w in windows
                                                     if w["last_seen"] >= SPLIT])


def feed(engine: DetectionEngine, notes, windows):
    found = engine.process_events(notes) + engine.process_windows(windows)
    return sorted((f.detector, f.entity, round(f.score, 4), f.ts) for f in found)


def test_restored_engine_detects_exactly_like_an_uninterrupted_one():
    notes1, windows1, notes2, windows2 = stream()
    whole = DetectionEngine.from_config()
    feed(whole, notes1, windows1)
    expected = feed(whole, notes2, windows2)

    first = DetectionEngine.from_config()
    before = feed(first, notes1, windows1)
    blob = first.state()
    restored = DetectionEngine.from_config()
    assert sorted(restored.restore(blob)) == sorted(restored.names)
    after = feed(restored, notes2, windows2)

    assert after == expected
    detectors = {d for d, *_ in after}
    assert "first_seen_edge" in detectors  # the new edges after the restart are caught ...
    entities = {e for _, e, *_ in after}
    assert entities <= {"shop/cart", "spiffe://cluster.local/ns/shop/sa/cart"}  # ... only them
    assert not [b for b in before if b[0] == "first_seen_edge"]


def test_a_cold_engine_would_relearn_instead():
    _, _, notes2, windows2 = stream()
    cold = feed(DetectionEngine.from_config(), notes2, windows2)
    assert not [c for c in cold if c[0] == "first_seen_edge"]  # back in its learning period


def test_changed_parameters_start_that_detector_fresh():
    notes1, windows1, _, _ = stream()
    first = DetectionEngine.from_config()
    feed(first, notes1, windows1)
    changed = DetectionEngine.from_config({"fanout_scan": {"params": {"min_destinations": 9}}})
    restored = changed.restore(first.state())
    assert "fanout_scan" not in restored and "first_seen_edge" in restored


def test_checkpoints_from_before_the_new_parameters_restore():
    import pickle

    notes1, windows1, notes2, windows2 = stream()
    first = DetectionEngine.from_config()
    feed(first, notes1, windows1)
    old = {c.name: c.detector for c in first.configured}
    # What the previous release pickled: no policy parameters, no activity counts.
    for name in ("plaintext_edge", "first_seen_edge"):
        for key in ("policy_files", "root_namespace", "workload_labels", "min_active_windows"):
            old[name].__dict__.pop(key, None)
    ids = old["first_seen_edge"].identities_
    for key, value in list(ids.items()):
        ids._data[key] = (ids._data[key][0], value[0])  # bare first-seen floats
    blob = pickle.dumps({k: v for k, v in old.items()
                         if k in ("plaintext_edge", "first_seen_edge")})
    restored = DetectionEngine.from_config()
    assert sorted(restored.restore(blob)) == ["first_seen_edge", "plaintext_edge"]
    found = feed(restored, notes2, windows2)
    assert [f for f in found if f[0] == "first_seen_edge"]  # baselines kept: judged at once
