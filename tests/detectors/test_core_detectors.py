"""plaintext_edge and first_seen_edge behaviour, and the engine/config around them."""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest

from detectors.config import load_detectors
from detectors.engine import DetectionEngine
from detectors.lateral import FirstSeenEdge
from detectors.plaintext import PlaintextEdge
from meshwatch.settings import ConfigError
from tests.detectors.streams import T0, mesh_events, notes_and_windows


def note(src, dst, minutes, **kw):
    x = {"edge_src": src, "edge_dst": dst, "ts": T0 + timedelta(minutes=minutes),
         "note": "first", "reporter": "destination", "mtls": True, "response_code": 200,
         "source_namespace": "ns0", "source_workload": "app-v1"}
    x.update(kw)
    return x


class TestPlaintextEdge:
    def test_scores_only_destination_side_plaintext(self):
        det = PlaintextEdge()
        assert det.score_one(note("a", "b", 0, mtls=False)) == 1.0
        assert det.score_one(note("a", "b", 0, mtls=True)) == 0.0
        assert det.score_one(note("a", "b", 0, mtls=None)) == 0.0
        assert det.score_one(note("a", "b", 0, mtls=False, reporter="source")) == 0.0
        assert det.score_one(note("a", "b", 0, mtls=False, reporter="unknown")) == 0.0

    def test_severity_raised_for_sensitive_and_strict(self):
        det = PlaintextEdge(sensitive_services=["vault.*"], strict_namespaces=["pay"])
        x = note("10.0.0.1", "db", 0, mtls=False, destination_service="db.x.svc.cluster.local",
                 destination_namespace="x")
        assert det.explain(x, 1.0).severity == "medium"
        assert det.explain({**x, "destination_namespace": "pay"}, 1.0).severity == "high"
        assert det.explain({**x, "destination_service": "vault.sec.svc.cluster.local"},
                           1.0).severity == "critical"

    def test_finding_carries_evidence_and_mitre(self):
        x = note("10.0.0.1", "db:5432", 0, mtls=False, request_id="rid-1", trace_id="t1",
                 destination_service="db.x.svc.cluster.local", destination_port=5432)
        f = PlaintextEdge().explain(x, 1.0)
        assert f.entity == "10.0.0.1->db:5432"
        assert f.evidence[0]["request_id"] == "rid-1"
        assert "T1040" in f.mitre
        assert f.destination.service == "db.x.svc.cluster.local:5432"


class TestFirstSeenEdge:
    def warmed(self, **params):
        det = FirstSeenEdge(learning_period=600, rollout_grace=600, **params)
        for minute in range(0, 60, 5):
            for src, dst, wl in [("web", "cart", "web-v1"), ("web", "db", "web-v1"),
                                 ("reviews-sa", "ratings", "reviews-v1"),
                                 ("api", "cart", "api-v1")]:
                x = note(src, dst, minute, source_workload=wl)
                det.score_one(x)
                det.learn_one(x)
        return det

    def test_known_edges_and_learning_sources_stay_quiet(self):
        det = self.warmed()
        assert det.score_one(note("web", "cart", 70)) == 0.0
        assert det.score_one(note("newcomer", "db", 70)) == 0.0  # still learning itself

    def test_new_edge_after_learning_scores_high(self):
        det = self.warmed()
        assert det.score_one(note("web", "ratings", 70, source_workload="web-v1")) >= 0.5

    def test_denied_first_call_scores_higher(self):
        det = self.warmed()
        plain = det.score_one(note("api", "db", 70, source_workload="api-v1"))
        denied = det.score_one(note("api", "db", 70, source_workload="api-v1",
                                    response_code=403))
        assert denied > plain

    def test_canary_sibling_does_not_page(self):
        det = self.warmed()
        # reviews-v2 (a new key, same app) calling what reviews-v1 calls: learning, quiet;
        # and once past its learning period, still scored down as a sibling.
        canary = note("reviews-v2-key", "ratings", 70, source_workload="reviews-v2")
        det.learn_one(note("reviews-v2-key", "other", 55, source_workload="reviews-v2"))
        assert det.score_one(canary) < 0.5

    def test_rollout_of_a_brand_new_service_is_scored_down(self):
        det = self.warmed()
        assert det.score_one(note("web", "brand-new", 70, source_workload="web-v1")) < 0.5
        assert det.score_one(note("web", "brand-new", 70, source_workload="web-v1",
                                  response_code=403)) >= 0.5

    def test_state_survives_pickle(self):
        det = self.warmed()
        again = pickle.loads(pickle.dumps(det))
        x = note("web", "ratings", 70, source_workload="web-v1")
        assert again.score_one(x) == det.score_one(x) > 0


class TestEngineAndConfig:
    def test_unknown_detector_and_bad_values_name_the_key(self):
        with pytest.raises(ConfigError, match=r"detectors\.nope: unknown detector"):
            load_detectors({"nope": {}})
        with pytest.raises(ConfigError, match=r"detectors\.plaintext_edge\.threshold"):
            load_detectors({"plaintext_edge": {"threshold": "high"}})
        with pytest.raises(ConfigError, match=r"detectors\.plaintext_edge\.severity"):
            load_detectors({"plaintext_edge": {"severity": "urgent"}})
        with pytest.raises(ConfigError, match=r"allowlist\[0\]\.source_address"):
            load_detectors({"plaintext_edge": {"allowlist": [{"source_address": "10.0.0/33"}]}})
        with pytest.raises(ConfigError, match=r"first_seen_edge\.params: not a duration"):
            load_detectors({"first_seen_edge": {"params": {"learning_period": "soon"}}})
        with pytest.raises(ConfigError, match=r"detectors\.plaintext_edge\.enable: unknown key"):
            load_detectors({"plaintext_edge": {"enable": True}})

    def test_allowlisted_plaintext_does_not_alert(self):
        engine = DetectionEngine.from_config({
            "plaintext_edge": {"allowlist": [{"source_address": "10.128.0.0/16"}]},
            "first_seen_edge": {"enabled": False},
        })
        probe = note("10.128.0.1", "web:8080", 0, mtls=False, source_address="10.128.0.1",
                     path="/api")
        attacker = note("10.7.0.9", "web:8080", 0, mtls=False, source_address="10.7.0.9",
                        path="/api")
        found = engine.process_events([probe, attacker])
        assert [f.entity for f in found] == ["10.7.0.9->web:8080"]
        assert engine.allowlisted["plaintext_edge"] == 1

    def test_default_allowlist_covers_kubelet_probes_only(self):
        engine = DetectionEngine.from_config({"first_seen_edge": {"enabled": False}})
        probe = note("10.128.0.1", "web:8080", 0, mtls=False, method="GET", path="/healthz")
        other = note("10.128.0.1", "web:8080", 0, mtls=False, method="GET", path="/admin")
        assert [f.evidence[0]["path"] for f in engine.process_events([probe, other])] == [
            "/admin"]

    def test_severity_override(self):
        engine = DetectionEngine.from_config({"plaintext_edge": {"severity": "critical"},
                                              "first_seen_edge": {"enabled": False}})
        (f,) = engine.process_events([note("a", "b", 0, mtls=False, path="/x")])
        assert f.severity == "critical"

    def test_state_round_trip_and_param_change_resets(self):
        notes, _ = notes_and_windows(mesh_events(minutes=90))
        engine = DetectionEngine.from_config({"first_seen_edge": {
            "params": {"learning_period": "10m"}}})
        engine.process_events(notes)
        blob = engine.state()
        same = DetectionEngine.from_config({"first_seen_edge": {
            "params": {"learning_period": "10m"}}})
        assert "first_seen_edge" in same.restore(blob)
        changed = DetectionEngine.from_config({"first_seen_edge": {
            "params": {"learning_period": "20m"}}})
        assert "first_seen_edge" not in changed.restore(blob)

    def test_steady_mesh_raises_nothing(self):
        notes, windows = notes_and_windows(mesh_events(minutes=120))
        engine = DetectionEngine.from_config({"first_seen_edge": {
            "params": {"learning_period": "10m"}}})
        assert engine.process_events(notes) == []
        assert engine.process_windows(windows) == []
