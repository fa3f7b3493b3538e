"""labels.json: valid ground truth, and every labelled instance really is in the records."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from meshwatch.simulate.scenarios import DETECTORS, SCENARIOS
from tests.simulate.helpers import Run, addr_ip, is_outbound, ts

HALF_LIFE = timedelta(hours=12)
TTL = timedelta(hours=24)
INSTANCE_KEYS = {"id", "kind", "label", "source", "destination", "start", "end", "description",
                 "expected_detectors", "calls", "envoy_records"}


def _within(record: dict[str, Any], item: dict[str, Any]) -> bool:
    return item["start"] <= record["start_time"] <= item["end"]


def _from(record: dict[str, Any], ip: str) -> bool:
    return addr_ip(record["downstream_remote_address"]) == ip


def _inbound_to(run: Run, item: dict[str, Any], ip: str) -> list[dict[str, Any]]:
    return [r for r in run.records if not is_outbound(r) and _from(r, ip) and _within(r, item)]


def test_labels_are_valid_ground_truth(mixed: Run) -> None:
    labels = mixed.labels
    assert {"scenario", "seed", "start", "end", "services", "namespaces", "formats", "counts",
            "attacks", "benign"} <= set(labels)
    assert labels["scenario"] == "mixed" and labels["seed"] == 11 and labels["services"] == 14
    assert labels["counts"]["calls"] == mixed.summary.calls
    assert labels["counts"]["envoy_records"] == len(mixed.records)
    assert labels["counts"]["records_per_file"]["envoy-json.log"] == len(mixed.records)
    kinds = {a["kind"] for a in labels["attacks"]}
    assert kinds == {"plaintext_caller", "mtls_downgrade", "lateral_movement", "service_scan",
                     "cert_expiry", "identity_misuse"}
    assert {b["kind"] for b in labels["benign"]} == {"canary_rollout", "service_rollout",
                                                     "kubelet_probe"}
    ids = [i["id"] for i in labels["attacks"] + labels["benign"]]
    assert len(ids) == len(set(ids))
    for item in labels["attacks"] + labels["benign"]:
        assert set(item) >= INSTANCE_KEYS
        assert labels["start"] <= item["start"] < item["end"] <= labels["end"]
        assert set(item["expected_detectors"]) <= set(DETECTORS)
        assert item["calls"] > 0 and item["envoy_records"] > 0
        assert {"workload", "namespace", "principal", "address"} <= set(item["source"])
        dests = item["destination"] if isinstance(item["destination"], list) \
            else [item["destination"]]
        for dest in dests:
            assert {"service", "workload", "namespace", "port"} <= set(dest)
    for item in labels["attacks"]:
        assert item["label"] == "attack" and item["expected_detectors"]
        assert item["start"] >= labels["learning_period_end"]
    for item in labels["benign"]:
        assert item["label"] == "benign" and item["expected_detectors"] == []


def test_plaintext_caller_only_shows_plaintext_inbound_records(mixed: Run) -> None:
    item = mixed.instance("plaintext_caller")
    ip = item["source"]["address"]
    pod = mixed.pod_by_ip[ip]
    inbound = _inbound_to(mixed, item, ip)
    assert len(inbound) == item["envoy_records"] >= 10
    for record in inbound:
        assert record["requested_server_name"] is None
        assert record["downstream_peer_uri_san"] is None
        assert record["downstream_tls_version"] is None
        assert record["pod_namespace"] == item["destination"]["namespace"]
    assert not any(r["pod_name"] == pod["name"] for r in mixed.records)
    namespace = next(n for n in mixed.mesh["namespaces"]
                     if n["name"] == item["destination"]["namespace"])
    assert namespace["peer_authentication"] == "PERMISSIVE"


def test_mtls_downgrade_turns_an_mtls_edge_plaintext(mixed: Run) -> None:
    item = mixed.instance("mtls_downgrade")
    ip, principal = item["source"]["address"], item["source"]["principal"]
    dest_ns = item["destination"]["namespace"]
    edge = [r for r in mixed.records if not is_outbound(r) and _from(r, ip)
            and r["pod_namespace"] == dest_ns and r["user_agent"] != "kube-probe/1.30"]
    before = [r for r in edge if r["start_time"] < item["start"]]
    after = [r for r in edge if r["start_time"] >= item["start"]]
    assert before and after
    assert all(r["downstream_peer_uri_san"] == principal and r["requested_server_name"]
               for r in before)
    assert all(r["downstream_peer_uri_san"] is None and r["downstream_tls_version"] is None
               and r["requested_server_name"] is None for r in after)
    source_pod = mixed.pod_by_ip[ip]["name"]
    fqdn = item["destination"]["fqdn"]
    assert not any(r["pod_name"] == source_pod and fqdn in (r["upstream_cluster"] or "")
                   and r["start_time"] >= item["start"] for r in mixed.records)


def test_lateral_movement_makes_new_mostly_denied_edges_and_a_chain(mixed: Run) -> None:
    item = mixed.instance("lateral_movement")
    pod = mixed.pod_by_ip[item["source"]["address"]]["name"]
    calls = [r for r in mixed.records if r["pod_name"] == pod and is_outbound(r)]
    assert calls and all(_within(r, item) for r in calls)  # ratings never calls anyone
    reached = {r["upstream_cluster"].split("|")[3].split(".")[0] for r in calls}
    assert {d["service"] for d in item["destination"]} == reached
    rbac = "rbac_access_denied_matched_policy[none]"
    denied = [r for r in mixed.records if not is_outbound(r) and _within(r, item)
              and rbac in (r["response_code_details"], r["connection_termination_details"])]
    assert len(denied) >= len(calls) // 2
    assert all(r["response_flags"] == "-" for r in denied)
    hop1, hop2 = item["chain"]
    assert hop1["destination"]["workload"] == hop2["source"]["workload"]
    gap = ts(hop2["start"]) - ts(hop1["start"])
    assert timedelta(0) < gap < timedelta(minutes=15)
    pivot = mixed.pod_by_ip[hop2["source"]["address"]]["name"]
    hop2_calls = [r for r in mixed.records if r["pod_name"] == pivot and is_outbound(r)]
    assert hop2_calls and all(r["start_time"] >= hop2["start"] for r in hop2_calls)


def test_service_scan_is_a_fan_out_burst(mixed: Run) -> None:
    item = mixed.instance("service_scan")
    pod = mixed.pod_by_ip[item["source"]["address"]]["name"]
    burst = [r for r in mixed.records if r["pod_name"] == pod and is_outbound(r)
             and _within(r, item)]
    targets = {(r["upstream_cluster"], r["downstream_local_address"]) for r in burst}
    assert len(targets) >= 15
    assert ts(item["end"]) - ts(item["start"]) <= timedelta(minutes=2)
    flags = {r["response_flags"] for r in burst}
    assert "UF" in flags or "NR" in flags
    assert {r["response_code"] for r in burst} & {403, 404}


def test_cert_expiry_pod_presents_a_certificate_that_runs_out(mixed: Run) -> None:
    item = mixed.instance("cert_expiry")
    ip, not_after = item["source"]["address"], item["peer_cert_not_after"]
    presented = [r for r in mixed.records if not is_outbound(r) and _from(r, ip)]
    assert presented
    for record in presented:
        assert record["downstream_peer_cert_v_end"] == not_after
        assert ts(not_after) - ts(record["start_time"]) < HALF_LIFE
    pod = mixed.pod_by_ip[ip]["name"]
    failed = [r for r in mixed.records if r["pod_name"] == pod and r["start_time"] >= not_after]
    assert failed and all("CERTIFICATE_EXPIRED" in r["upstream_transport_failure_reason"]
                          and r["response_flags"] == "UF,URX" for r in failed)


def test_identity_misuse_presents_another_workloads_principal(mixed: Run) -> None:
    item = mixed.instance("identity_misuse")
    ip, claimed = item["source"]["address"], item["claimed_principal"]
    owner_ips = {p["ip"] for p in mixed.pods.values() if p["principal"] == claimed}
    assert ip not in owner_ips
    inbound = _inbound_to(mixed, item, ip)
    assert len(inbound) == item["envoy_records"] > 0
    assert all(r["downstream_peer_uri_san"] == claimed for r in inbound)
    assert not any(r["pod_name"] == mixed.pod_by_ip[ip]["name"] and _within(r, item)
                   and (r["upstream_cluster"] or "").endswith(".security.svc.cluster.local")
                   for r in mixed.records)


def test_canary_uses_the_same_identity_as_its_siblings(mixed: Run) -> None:
    item = mixed.instance("canary_rollout")
    ip = item["source"]["address"]
    to_ratings = [r for r in mixed.records if not is_outbound(r) and _from(r, ip)
                  and r["pod_namespace"] == "bookinfo"]
    assert to_ratings and all(_within(r, item) for r in to_ratings)
    assert {r["downstream_peer_uri_san"] for r in to_ratings} == \
        {"spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"}
    assert any("|v4|reviews." in (r["upstream_cluster"] or "") for r in mixed.records)


def test_kubelet_probes_are_plaintext_health_checks_from_nodes(mixed: Run) -> None:
    nodes = {n["ip"] for n in mixed.mesh["nodes"]}
    probes = [i for i in mixed.labels["benign"] if i["kind"] == "kubelet_probe"]
    assert probes
    for item in probes:
        assert item["source"]["address"] in nodes
        records = _inbound_to(mixed, item, item["source"]["address"])
        assert len(records) == item["envoy_records"] >= 100
        assert all(r["user_agent"] == "kube-probe/1.30" and r["path"] == "/healthz"
                   and r["downstream_peer_uri_san"] is None for r in records)


def test_healthy_certificates_are_12_to_24_hours_from_expiry(mixed: Run) -> None:
    suspects = {i["source"]["address"] for i in mixed.labels["attacks"]}
    checked = 0
    v_ends: dict[str, set[str]] = {}
    for record in mixed.records:
        v_end = record["downstream_peer_cert_v_end"]
        ip = addr_ip(record["downstream_remote_address"])
        if v_end is None or ip in suspects:
            continue
        remaining = ts(v_end) - ts(record["start_time"])
        assert HALF_LIFE < remaining <= TTL, record
        v_ends.setdefault(ip, set()).add(v_end)
        checked += 1
    assert checked > 1000
    for values in v_ends.values():  # within 40 minutes at most one rotation, 12 h apart
        assert len(values) <= 2
        if len(values) == 2:
            low, high = sorted(ts(v) for v in values)
            assert high - low == HALF_LIFE


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n != "mixed"])
def test_every_scenario_labels_what_it_generates(name: str,
                                                 scenario_run: Callable[[str], Run]) -> None:
    run = scenario_run(name)
    expected = {kind for kind, _ in SCENARIOS[name].attacks}
    assert {a["kind"] for a in run.labels["attacks"]} == expected
    assert len(run.labels["attacks"]) == len(SCENARIOS[name].attacks)
    for item in run.labels["attacks"] + run.labels["benign"]:
        assert item["calls"] > 0 and item["envoy_records"] > 0, item["id"]
        assert item["start"] >= run.labels["start"]


def test_stalled_rotation_freezes_not_after_below_half_life(
        scenario_run: Callable[[str], Run]) -> None:
    run = scenario_run("cert-expiry")
    item = next(a for a in run.labels["attacks"] if a["id"] == "cert-expiry-stalled")
    ip, not_after = item["source"]["address"], item["peer_cert_not_after"]
    presented = [r for r in run.records if not is_outbound(r) and _from(r, ip)]
    before = [r for r in presented if r["start_time"] < item["start"]]
    after = [r for r in presented if r["start_time"] >= item["start"]]
    assert before and after
    assert {r["downstream_peer_cert_v_end"] for r in presented} == {not_after}
    assert all(ts(not_after) - ts(r["start_time"]) > HALF_LIFE for r in before)
    assert all(ts(not_after) - ts(r["start_time"]) < HALF_LIFE for r in after)


def test_identity_from_an_address_that_is_no_pod(scenario_run: Callable[[str], Run]) -> None:
    run = scenario_run("identity-misuse")
    item = next(a for a in run.labels["attacks"] if a["id"] == "identity-misuse-foreign")
    ip = item["source"]["address"]
    assert ip not in run.pod_by_ip and item["source"]["workload"] is None
    inbound = _inbound_to(run, item, ip)
    assert inbound and all(r["downstream_peer_uri_san"] == item["claimed_principal"]
                           for r in inbound)
