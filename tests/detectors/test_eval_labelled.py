"""The evaluation's matching rule and metrics (detectors.evaluation.labelled), on hand-made
alerts and labels shaped like the simulator's labels.json."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from detectors.evaluation.labelled import (
    EvalAlert,
    Sighting,
    average_precision,
    combine,
    evaluate,
    load_labels,
    matches,
)

T0 = datetime(2026, 11, 20, tzinfo=UTC)


def ts(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


LABELS = {
    "scenario": "mixed", "seed": 1, "start": ts(0), "end": ts(120), "services": 30,
    "attacks": [
        {"id": "scan", "kind": "service_scan", "label": "attack",
         "source": {"workload": "currencyservice", "namespace": "boutique",
                    "principal": "spiffe://cluster.local/ns/boutique/sa/currencyservice",
                    "address": "10.44.1.14"},
         "destination": [{"service": "vault", "fqdn": "vault.security.svc.cluster.local"}],
         "start": ts(49), "end": ts(51), "expected_detectors": ["fanout_scan", "first_seen_edge"]},
        {"id": "lateral", "kind": "lateral_movement", "label": "attack",
         "source": {"workload": "ratings-v1", "address": "10.44.4.3", "principal": None},
         "destination": [{"service": "details", "fqdn": "details.bookinfo.svc.cluster.local"}],
         "chain": [{"source": {"workload": "legacy-billing", "address": "10.44.2.9"},
                    "destination": {"service": "vault"}, "start": ts(75)}],
         "start": ts(70), "end": ts(77), "expected_detectors": ["first_seen_edge",
                                                                "lateral_chain"]},
        {"id": "plain", "kind": "plaintext_caller", "label": "attack",
         "source": {"workload": "tmp-shell", "address": "10.44.3.18", "principal": None},
         "destination": {"service": "legacy-billing",
                         "fqdn": "legacy-billing.legacy.svc.cluster.local"},
         "start": ts(90), "end": ts(100), "expected_detectors": ["plaintext_edge"]},
    ],
    "benign": [
        {"id": "canary", "kind": "canary_rollout", "label": "benign",
         "source": {"workload": "reviews-v4",
                    "principal": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"},
         "destination": {"service": "ratings", "fqdn": "ratings.bookinfo.svc.cluster.local"},
         "start": ts(60), "end": ts(120), "expected_detectors": []},
    ],
}


def sighting(minutes: float, detector: str, score: float = 1.0, **source) -> Sighting:
    dst = source.pop("dst", None)
    return Sighting(T0 + timedelta(minutes=minutes), detector, score, source,
                    {"service": dst} if dst else {})


def alert(id_: str, *sightings: Sighting, severity: str = "high") -> EvalAlert:
    return EvalAlert(id_, sightings[0].detector, severity, f"alert {id_}", list(sightings))


@pytest.fixture
def labels():
    return load_labels(LABELS)


class TestMatching:
    def test_time_window_with_slack(self, labels):
        scan = labels.instances[0]
        assert matches(sighting(49.5, "x", address="10.44.1.14"), scan)
        assert matches(sighting(48.2, "x", address="10.44.1.14:40112"), scan)  # 60 s early
        assert not matches(sighting(47, "x", address="10.44.1.14"), scan)
        assert matches(sighting(60, "x", address="10.44.1.14"), scan)  # 10 min late
        assert not matches(sighting(62, "x", address="10.44.1.14"), scan)

    def test_identity_any_known_part_and_chain_hops(self, labels):
        scan, lateral = labels.instances[0], labels.instances[1]
        assert matches(sighting(50, "x", principal=scan.sources[0]["principal"]), scan)
        assert not matches(sighting(50, "x", workload="frontend", address="10.44.9.9"), scan)
        assert matches(sighting(76, "x", workload="legacy-billing"), lateral)  # hop 2 source

    def test_no_source_identity_falls_back_to_the_destination(self, labels):
        plain = labels.instances[2]
        assert matches(sighting(95, "x", dst="legacy-billing.legacy.svc.cluster.local:8080"),
                       plain)
        assert not matches(sighting(95, "x", dst="vault.security.svc.cluster.local:8200"), plain)

    def test_benign_needs_its_destination(self, labels):
        canary = labels.instances[3]
        principal = canary.sources[0]["principal"]
        assert matches(sighting(70, "x", principal=principal,
                                dst="ratings.bookinfo.svc.cluster.local:9080"), canary)
        assert not matches(sighting(70, "x", principal=principal,
                                    dst="details.bookinfo.svc.cluster.local:9080"), canary)


class TestMetrics:
    def test_detection_false_alerts_ttd_and_benign_pages(self, labels):
        alerts = [
            alert("a1", sighting(49.2, "fanout_scan", address="10.44.1.14"),
                  sighting(50.0, "fanout_scan", address="10.44.1.14")),
            alert("a2", sighting(49.1, "first_seen_edge", 0.9, workload="currencyservice")),
            alert("a3", sighting(76, "lateral_chain", workload="legacy-billing")),
            # A false alert that is the canary paging, and one about nothing labelled.
            alert("f1", sighting(65, "first_seen_edge", 0.95, workload="reviews-v4",
                                 dst="ratings.bookinfo.svc.cluster.local:9080")),
            alert("f2", sighting(30, "first_seen_edge", 0.4, workload="frontend")),
        ]
        report = evaluate(alerts, labels, run="s1").as_dict()
        o = report["overall"]
        assert (o["instances"], o["detected"], o["alerts"], o["false_alerts"]) == (3, 2, 5, 2)
        assert o["missed"] == ["s1:plain"]
        assert o["false_alerts_per_day_per_100_services"] == pytest.approx(2 / (2 / 24) / 0.3,
                                                                            rel=1e-3)
        kinds = report["by_attack_kind"]
        assert kinds["service_scan"]["mean_time_to_detect_s"] == pytest.approx(6.0)
        assert kinds["lateral_movement"]["mean_time_to_detect_s"] == pytest.approx(360.0)
        dets = report["by_detector"]
        assert dets["fanout_scan"]["detection_rate"] == 1.0
        assert dets["first_seen_edge"]["detected"] == 1  # scan yes, lateral no
        assert dets["first_seen_edge"]["instances"] == 2
        assert dets["lateral_chain"]["detection_rate"] == 1.0
        assert dets["plaintext_edge"]["detection_rate"] == 0.0
        assert [a["benign_lookalike"] for a in report["benign_lookalikes_paged"]] == ["canary"]
        assert {a["alert"] for a in report["false_alerts"]} == {"f1", "f2"}
        # Ranking: f1 (0.95) outranks a2 (0.9): AP over all alerts is below 1.
        assert 0.5 < o["average_precision"] < 1.0

    def test_an_alert_opened_before_the_attack_is_false_but_its_updates_detect(self, labels):
        early = alert("e", sighting(20, "first_seen_edge", workload="currencyservice"),
                      sighting(50, "first_seen_edge", workload="currencyservice"))
        report = evaluate([early], labels).as_dict()
        assert report["overall"]["false_alerts"] == 1
        assert report["by_attack_kind"]["service_scan"]["detected"] == 1

    def test_combine_pools_runs(self, labels):
        one = evaluate([alert("a", sighting(50, "fanout_scan", address="10.44.1.14"))], labels,
                       run="s1")
        two = evaluate([alert("b", sighting(10, "fanout_scan", workload="x"))], labels,
                       run="s2")
        pooled = combine([one, two]).as_dict()
        assert pooled["runs"] == ["s1", "s2"]
        assert pooled["simulated_days"] == pytest.approx(2 * 2 / 24, abs=1e-4)
        o = pooled["overall"]
        assert (o["instances"], o["detected"], o["false_alerts"]) == (6, 1, 1)

    def test_average_precision(self):
        assert average_precision([(1.0, 0, True), (0.5, 1, True)]) == 1.0
        assert average_precision([(1.0, 0, False), (0.5, 1, True)]) == 0.5
        assert average_precision([(1.0, 0, False)]) is None
