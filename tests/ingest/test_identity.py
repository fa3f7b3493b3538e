"""Identity normalization helpers and the learned address -> identity resolver."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest

from ingest.identity import (
    ClusterRef,
    IdentityResolver,
    fqdn_namespace,
    normalize_principal,
    parse_cluster,
    parse_istio_node_id,
    parse_istio_sni,
    service_fqdn,
    split_host_port,
    split_principal,
    workload_from_pod,
)
from ingest.parsers.envoy_text import EnvoyTextParser
from meshwatch.records import EdgeEvent, Origin
from tests.ingest.samples import INBOUND, OUTBOUND, PLAINTEXT_INBOUND, text_line

T = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(("pod", "workload"), [
    ("productpage-v1-6b746f74dc-9stp2", "productpage-v1"),
    ("sleep-7656cf8794-8nnlk", "sleep"),
    ("productpage-v1-87d54dd59-x8k4d", "productpage-v1"),
    ("web-3456789012-bcdfg", "web"),  # old numeric pod-template-hash
    ("db-0", "db"),
    ("kafka-broker-12", "kafka-broker"),
    ("node-agent-x8k4d", "node-agent"),  # DaemonSet / Job: one suffix
    ("api-v2", "api-v2"),
    ("httpbin", "httpbin"),
    ("my-nginx", "my-nginx"),
    (None, None),
    ("-", None),
])
def test_workload_from_pod(pod: str | None, workload: str | None) -> None:
    assert workload_from_pod(pod) == workload


@pytest.mark.parametrize(("value", "principal"), [
    ("spiffe://cluster.local/ns/foo/sa/sleep", "spiffe://cluster.local/ns/foo/sa/sleep"),
    ("SPIFFE://Cluster.Local/ns/foo/sa/sleep", "spiffe://cluster.local/ns/foo/sa/sleep"),
    ("cluster.local/ns/foo/sa/sleep", "spiffe://cluster.local/ns/foo/sa/sleep"),
    ("ns/foo/sa/sleep", "spiffe://cluster.local/ns/foo/sa/sleep"),
    ("By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash=4f2b;Subject=\"\";"
     "URI=spiffe://cluster.local/ns/foo/sa/sleep", "spiffe://cluster.local/ns/foo/sa/sleep"),
    ('By=spiffe://a/ns/x/sa/y;URI="spiffe://a/ns/p/sa/q",By=spiffe://a/ns/x/sa/z;'
     "URI=spiffe://a/ns/r/sa/s", "spiffe://a/ns/r/sa/s"),  # the last hop is the caller
    ("https://example.org/a,spiffe://td/ns/a/sa/b", "spiffe://td/ns/a/sa/b"),
    ("spiffe://example.org/workload/frontend", "spiffe://example.org/workload/frontend"),
    ("-", None), ("", None), (None, None), ("not a principal", None),
])
def test_normalize_principal(value: str | None, principal: str | None) -> None:
    assert normalize_principal(value) == principal


def test_trust_domain_is_used_only_when_missing() -> None:
    assert normalize_principal("ns/a/sa/b", "corp.example") == "spiffe://corp.example/ns/a/sa/b"
    assert split_principal("spiffe://td/ns/a/sa/b").service_account == "b"
    assert split_principal("spiffe://td/other") is None


@pytest.mark.parametrize(("name", "ref"), [
    ("outbound|8000||httpbin.foo.svc.cluster.local",
     ClusterRef("source", 8000, None, "httpbin.foo.svc.cluster.local")),
    ("outbound|9080|v2|reviews.bookinfo.svc.cluster.local",
     ClusterRef("source", 9080, "v2", "reviews.bookinfo.svc.cluster.local")),
    ("inbound|8000||", ClusterRef("destination", 8000, None, None)),
    ("inbound|9080|http|reviews.bookinfo.svc.cluster.local",
     ClusterRef("destination", 9080, "http", "reviews.bookinfo.svc.cluster.local")),
    ("inbound-vip|8000|http|httpbin.foo.svc.cluster.local",
     ClusterRef("destination", 8000, "http", "httpbin.foo.svc.cluster.local")),
    ("outbound_.8000_._.httpbin.foo.svc.cluster.local",
     ClusterRef("unknown", 8000, None, "httpbin.foo.svc.cluster.local")),
    ("PassthroughCluster", ClusterRef("source", None, None, None, True)),
    ("InboundPassthroughClusterIpv6", ClusterRef("destination", None, None, None, True)),
    ("sidecar|1|2", None), ("my_static_cluster", None), ("-", None), (None, None),
])
def test_parse_cluster(name: str | None, ref: ClusterRef | None) -> None:
    assert parse_cluster(name) == ref


def test_parse_istio_sni_and_fqdn_namespace() -> None:
    sni = parse_istio_sni("outbound_.9080_.v1_.reviews.bookinfo.svc.cluster.local")
    assert (sni.port, sni.subset, sni.fqdn) == (9080, "v1", "reviews.bookinfo.svc.cluster.local")
    assert parse_istio_sni("reviews.bookinfo.svc.cluster.local") is None
    assert parse_istio_sni("outbound_.x_._.y") is None
    assert fqdn_namespace("reviews.bookinfo.svc.cluster.local") == "bookinfo"
    assert fqdn_namespace("reviews") is None


@pytest.mark.parametrize(("authority", "namespace", "fqdn"), [
    ("httpbin:8000", "foo", "httpbin.foo.svc.cluster.local"),
    ("httpbin", None, "httpbin"),
    ("httpbin.foo", "foo", "httpbin.foo.svc.cluster.local"),
    ("httpbin.foo.svc", "bar", "httpbin.foo.svc.cluster.local"),
    ("HTTPBIN.foo.svc.cluster.local:80", None, "httpbin.foo.svc.cluster.local"),
    ("example.com", "foo", "example.com"),
    ("10.0.0.1:8080", "foo", None),
    ("[fd00::1]:8080", "foo", None),
    ("-", "foo", None),
])
def test_service_fqdn(authority: str, namespace: str | None, fqdn: str | None) -> None:
    assert service_fqdn(authority, namespace) == fqdn


def test_addresses_and_node_ids() -> None:
    assert split_host_port("10.0.0.1") == ("10.0.0.1", None)
    assert split_host_port("10.0.0.1:99999") == ("10.0.0.1", None)
    assert parse_istio_node_id("router~10.0.0.1~gw-abc-xyz.istio-system~istio-system.svc."
                               "cluster.local") == ("gw-abc-xyz", "istio-system", "10.0.0.1")
    assert parse_istio_node_id("not-a-node") == (None, None, None)


# -- the resolver ------------------------------------------------------------------------------


def parse(values: dict[str, str]) -> EdgeEvent:
    [event] = EnvoyTextParser().parse(text_line(values), Origin("x", 1))
    assert isinstance(event, EdgeEvent)
    return event


def test_the_callers_outbound_record_names_it_in_the_destinations_record() -> None:
    resolver = IdentityResolver()
    # The caller's sidecar: its pod IP (downstream remote) and its pod name.
    outbound = parse({**OUTBOUND, "DOWNSTREAM_REMOTE_ADDRESS": "10.244.1.5:52100"})
    inbound = parse(INBOUND)
    assert inbound.source_workload is None
    resolver.resolve(outbound)
    resolved = resolver.resolve(inbound)
    assert (resolved.source_workload, resolved.source_namespace) == ("productpage-v1",
                                                                     "bookinfo")
    # What the record itself says is never overwritten.
    assert resolved.source_principal == inbound.source_principal
    assert resolver.filled == 1


def test_principals_learned_from_mtls_fill_the_callers_own_records() -> None:
    resolver = IdentityResolver()
    resolver.resolve(parse(INBOUND))  # 10.244.1.5 presented bookinfo-productpage's cert
    outbound = resolver.resolve(parse({**OUTBOUND, "ENVIRONMENT(POD_NAME)": "-",
                                       "ENVIRONMENT(POD_NAMESPACE)": "-"}))
    assert outbound.source_principal == ("spiffe://cluster.local/ns/bookinfo/sa/"
                                         "bookinfo-productpage")
    assert outbound.source_namespace == "bookinfo"


def test_a_plaintext_caller_never_gets_a_principal_filled_in() -> None:
    resolver = IdentityResolver()
    resolver.resolve(parse({**INBOUND, "DOWNSTREAM_REMOTE_ADDRESS": "10.244.3.77:1"}))
    resolver.resolve(parse({**OUTBOUND, "DOWNSTREAM_REMOTE_ADDRESS": "10.244.3.77:2"}))
    plaintext = resolver.resolve(parse(PLAINTEXT_INBOUND))  # same address 10.244.3.77
    assert plaintext.mtls is False
    assert plaintext.source_principal is None
    assert plaintext.source_workload == "productpage-v1"  # attribution is still useful


def test_destination_identity_is_filled_from_the_service_unless_ambiguous() -> None:
    resolver = IdentityResolver()
    resolver.resolve(parse(INBOUND))
    outbound = resolver.resolve(parse(OUTBOUND))
    assert outbound.destination_workload == "reviews-v2"
    resolver.resolve(parse({**INBOUND, "ENVIRONMENT(POD_NAME)": "reviews-v3-7d99fd7978-b2lrz"}))
    later = resolver.resolve(parse(OUTBOUND))
    assert later.destination_workload is None  # v2 and v3 both serve reviews: no guessing
    assert later.destination_namespace == "bookinfo"


def test_resolver_is_bounded_counts_evictions_and_expires_in_event_time() -> None:
    resolver = IdentityResolver(max_addresses=2, address_ttl=60.0)
    for i in range(3):
        resolver.resolve(EdgeEvent(ts=T + timedelta(seconds=i), origin="envoy_text",
                                   reporter="source", source_workload=f"w{i}",
                                   source_address=f"10.0.0.{i}"))
    assert resolver.evictions["addresses"].capacity == 1
    assert resolver.expire((T + timedelta(seconds=200)).timestamp()) == 2
    assert resolver.evictions["addresses"].expired == 2
    assert len(resolver) == 0


def test_resolver_pickles_with_what_it_learned() -> None:
    resolver = IdentityResolver()
    resolver.resolve(EdgeEvent(ts=T, origin="otlp_span", reporter="destination",
                               source_workload="web", source_namespace="shop",
                               source_address="10.1.1.1"))
    restored = pickle.loads(pickle.dumps(resolver))
    event = restored.resolve(EdgeEvent(ts=T, origin="ztunnel", reporter="destination",
                                       source_address="10.1.1.1"))
    assert (event.source_workload, event.source_namespace) == ("web", "shop")


def test_stale_addresses_are_forgotten_as_event_time_moves_on() -> None:
    resolver = IdentityResolver(address_ttl=600.0)
    resolver.resolve(EdgeEvent(ts=T, origin="envoy_text", reporter="source",
                               source_workload="old-pod-owner", source_address="10.0.0.1"))
    later = T + timedelta(hours=2)  # the IP now belongs to someone else, who says nothing
    event = resolver.resolve(EdgeEvent(ts=later, origin="envoy_text", reporter="destination",
                                       source_address="10.0.0.1"))
    assert event.source_workload is None
    assert resolver.evictions["addresses"].expired == 1
