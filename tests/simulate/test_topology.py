"""The mesh model: Kubernetes-shaped names and addresses, identities, certificate rotation."""

from __future__ import annotations

import itertools
import re

import pytest

from meshwatch.simulate.builder import CallBuilder, Counter
from meshwatch.simulate.catalog import MAX_SERVICES, MIN_SERVICES
from meshwatch.simulate.scenarios import SCENARIOS, Context, build
from meshwatch.simulate.seeding import stream
from meshwatch.simulate.topology import CERT_ROTATE_S, CERT_TTL_S, US, build_mesh
from tests.simulate.helpers import START_US

SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
POD_NAME = re.compile(rf"^[a-z0-9-]+-{SAFE}{{9,10}}-{SAFE}{{5}}$")
SPIFFE = re.compile(r"^spiffe://cluster\.local/ns/[a-z0-9-]+/sa/[a-z0-9-]+$")


@pytest.mark.parametrize("n", [MIN_SERVICES, 30, MAX_SERVICES])
def test_mesh_sizes_names_and_addresses(n: int) -> None:
    mesh = build_mesh(n, seed=3, start_us=START_US)
    assert len(mesh.app_services) == n
    pods = mesh.all_pods()
    assert all(POD_NAME.match(p.name) for p in pods)
    ips = [p.ip for p in pods]
    assert len(ips) == len(set(ips)) and all(ip.startswith("10.44.") for ip in ips)
    vips = [s.vip for s in mesh.services.values()]
    assert len(vips) == len(set(vips)) and not set(vips) & set(ips)
    for wl in mesh.workloads:
        assert wl.principal is None or SPIFFE.match(wl.principal)
        assert len({p.name.rsplit("-", 1)[0] for p in wl.pods}) <= 1  # one ReplicaSet hash
    modes = {ns.peer_authentication for ns in mesh.namespaces.values()}
    assert modes == {"STRICT", "PERMISSIVE"}
    assert mesh.namespaces["legacy"].peer_authentication == "PERMISSIVE"
    assert any(s.spec.sensitive for s in mesh.services.values())


def test_services_keep_their_upstream_ports_and_protocols() -> None:
    mesh = build_mesh(30, seed=3, start_us=START_US)
    svc = mesh.services
    assert {svc[n].port for n in ("productpage", "details", "reviews", "ratings")} == {9080}
    assert (svc["cartservice"].port, svc["cartservice"].protocol) == (7070, "grpc")
    assert (svc["redis-cart"].port, svc["redis-cart"].protocol) == (6379, "tcp")
    assert (svc["frontend"].port, svc["frontend"].target_port) == (80, 8080)
    assert [w.name for w in svc["reviews"].workloads] == ["reviews-v1", "reviews-v2",
                                                         "reviews-v3"]
    assert {w.principal for w in svc["reviews"].workloads} == {
        "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"}
    assert svc["vault"].spec.sensitive and svc["payments-db"].spec.sensitive


def test_same_seed_same_mesh_other_seed_other_pods() -> None:
    a = build_mesh(20, seed=5, start_us=START_US).to_dict()
    assert a == build_mesh(20, seed=5, start_us=START_US).to_dict()
    assert a != build_mesh(20, seed=6, start_us=START_US).to_dict()


@pytest.mark.parametrize("n", [MIN_SERVICES - 1, MAX_SERVICES + 1])
def test_mesh_size_out_of_range_is_refused(n: int) -> None:
    with pytest.raises(ValueError, match="between"):
        build_mesh(n, seed=1, start_us=START_US)


def test_certificates_rotate_at_half_life() -> None:
    pod = build_mesh(10, seed=1, start_us=START_US).all_pods()[0]
    t0 = START_US // US
    seen = []
    for minute in range(0, 36 * 60, 7):
        t = t0 + minute * 60
        v_end = pod.cert_v_end_s(t)
        assert CERT_ROTATE_S < v_end - t <= CERT_TTL_S
        seen.append(v_end)
    jumps = sorted({b - a for a, b in itertools.pairwise(seen) if b != a})
    assert jumps == [CERT_ROTATE_S]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_scenario_fits_the_smallest_mesh(name: str) -> None:
    mesh = build_mesh(MIN_SERVICES, seed=2, start_us=START_US)
    end = START_US + 3600 * US
    plan = build(name, Context(mesh=mesh, seed=2, start_us=START_US, end_us=end,
                               learn_end_us=START_US + 1440 * US, counter=Counter.new()))
    assert len([i for i in plan.instances if i.label == "attack"]) == len(
        SCENARIOS[name].attacks)
    assert all(START_US <= c.start_us < end for c in plan.calls)


def test_builder_picks_live_pods_by_subset_weight() -> None:
    mesh = build_mesh(10, seed=4, start_us=START_US)
    builder = CallBuilder(mesh, stream(4, "test"), Counter.new())
    reviews = mesh.services["reviews"]
    picks = [builder.pick_pod(reviews, START_US) for _ in range(3000)]
    share = {v: sum(1 for _, s in picks if s == v) / len(picks) for v in ("v1", "v2", "v3")}
    assert abs(share["v1"] - 0.4) < 0.05 and abs(share["v2"] - 0.3) < 0.05
    assert all(pod.workload.version == subset for pod, subset in picks if pod is not None)
