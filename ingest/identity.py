"""Identity normalization and the learned address -> identity resolver.

Every parser speaks a different dialect of "who": SPIFFE URIs, bare ``td/ns/N/sa/S`` principals,
XFCC headers, Istio cluster names (``outbound|8000||httpbin.foo.svc.cluster.local``), Istio's
inbound SNI (``outbound_.8000_._.httpbin.foo.svc.cluster.local``) and pod names with ReplicaSet
hashes. The helpers here turn all of them into one vocabulary (workload, namespace, principal,
service FQDN) so that the graph keys the same edge the same way whatever reported it.

The helpers are pure and cached (`functools.lru_cache`): the same few thousand cluster names,
pod names and SANs repeat on every record of the hot path.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import NamedTuple

import msgspec

from meshwatch.bounded import BoundedMap, EvictionCounts
from meshwatch.records import EdgeEvent

_CACHE = 65536

# Kubernetes' rand.SafeEncodeString alphabet: no vowels, no 0/1/3, so hashes never spell words.
_SAFE = "bcdfghjklmnpqrstvwxz2456789"
_REPLICASET_POD = re.compile(rf"^(.+)-(?:[{_SAFE}]{{6,10}}|\d{{6,10}})-[{_SAFE}]{{5}}$")
_SUFFIXED_POD = re.compile(rf"^(.+)-[{_SAFE}]{{5}}$")
_STATEFUL_POD = re.compile(r"^(.+)-\d+$")
_BARE_PRINCIPAL = re.compile(r"^([^/\s]+)/ns/([^/\s]+)/sa/([^/\s]+)$")
_NS_SA_PRINCIPAL = re.compile(r"^ns/([^/\s]+)/sa/([^/\s]+)$")
_ISTIO_SNI = re.compile(r"^outbound_\.(\d+)_\.([^.]*)_\.(.+)$")


@lru_cache(maxsize=_CACHE)
def workload_from_pod(pod: str | None) -> str | None:
    """The owning workload's name: strip the ReplicaSet hash + pod suffix, or a StatefulSet ordinal.

    >>> workload_from_pod("productpage-v1-6b746f74dc-9stp2")
    'productpage-v1'
    >>> workload_from_pod("db-0"), workload_from_pod("ds-agent-x8k4d"), workload_from_pod("api-v2")
    ('db', 'ds-agent', 'api-v2')
    """
    if not pod or pod == "-":
        return None
    for pattern in (_REPLICASET_POD, _SUFFIXED_POD, _STATEFUL_POD):
        match = pattern.match(pod)
        if match:
            return match.group(1)
    return pod


class Principal(NamedTuple):
    """A Kubernetes SPIFFE ID split into its parts."""

    trust_domain: str
    namespace: str
    service_account: str

    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"


def _xfcc_uri(value: str) -> str | None:
    # XFCC: comma-separated elements (one per hop, the immediate client last), each a list of
    # key=value pairs; By= is the proxy itself, URI= the client certificate's URI SAN.
    for element in reversed(value.split(",")):
        for pair in element.split(";"):
            key, _, val = pair.partition("=")
            if key.strip().lower() == "uri":
                val = val.strip().strip('"')
                if val:
                    return val
    return None


@lru_cache(maxsize=_CACHE)
def normalize_principal(value: str | None, trust_domain: str = "cluster.local") -> str | None:
    """A canonical ``spiffe://td/ns/N/sa/S`` from any form a log may carry; ``None`` if none.

    Accepts SPIFFE URIs, bare ``td/ns/N/sa/S``, ``ns/N/sa/S`` (the configured trust domain is
    assumed), comma-separated SAN lists (the first SPIFFE one wins) and XFCC headers
    (``By=...;URI=spiffe://...``: the URI is the client). Other URIs are kept verbatim.

    >>> normalize_principal("cluster.local/ns/foo/sa/sleep")
    'spiffe://cluster.local/ns/foo/sa/sleep'
    >>> normalize_principal('By=spiffe://td/ns/a/sa/b;Hash=ab;Subject="";URI=spiffe://td/ns/c/sa/d')
    'spiffe://td/ns/c/sa/d'
    >>> normalize_principal("-") is None
    True
    """
    if value is None:
        return None
    value = value.strip()
    if not value or value == "-":
        return None
    if "=" in value and ("URI=" in value or "uri=" in value or "By=" in value):
        uri = _xfcc_uri(value)
        return normalize_principal(uri, trust_domain) if uri else None
    if "," in value:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        spiffe = [p for p in parts if p.lower().startswith("spiffe://")]
        return normalize_principal((spiffe or parts or [""])[0], trust_domain)
    if value[:9].lower() == "spiffe://":
        rest = value[9:]
        domain, slash, path = rest.partition("/")
        if not domain:
            return None
        return f"spiffe://{domain.lower()}{slash}{path}"
    match = _BARE_PRINCIPAL.match(value)
    if match:
        return f"spiffe://{match.group(1).lower()}/ns/{match.group(2)}/sa/{match.group(3)}"
    match = _NS_SA_PRINCIPAL.match(value)
    if match:
        return f"spiffe://{trust_domain}/ns/{match.group(1)}/sa/{match.group(2)}"
    if "://" in value and " " not in value:
        return value
    return None


@lru_cache(maxsize=_CACHE)
def split_principal(principal: str | None) -> Principal | None:
    """The parts of a Kubernetes SPIFFE ID, or ``None`` for any other identity.

    >>> split_principal("spiffe://cluster.local/ns/foo/sa/sleep").namespace
    'foo'
    """
    if not principal or not principal.startswith("spiffe://"):
        return None
    match = _BARE_PRINCIPAL.match(principal[9:])
    if not match:
        return None
    return Principal(match.group(1), match.group(2), match.group(3))


def principal_namespace(principal: str | None) -> str | None:
    parts = split_principal(principal)
    return parts.namespace if parts else None


class ClusterRef(NamedTuple):
    """What an Istio cluster name says: which side reported, the port and the service FQDN."""

    reporter: str  # "source" | "destination" | "unknown"
    port: int | None
    subset: str | None
    fqdn: str | None
    passthrough: bool = False


_PASSTHROUGH = {
    "PassthroughCluster": ClusterRef("source", None, None, None, True),
    "BlackHoleCluster": ClusterRef("source", None, None, None, True),
    "InboundPassthroughCluster": ClusterRef("destination", None, None, None, True),
    "InboundPassthroughClusterIpv4": ClusterRef("destination", None, None, None, True),
    "InboundPassthroughClusterIpv6": ClusterRef("destination", None, None, None, True),
}


def _port(text: str) -> int | None:
    if text.isascii() and text.isdigit() and len(text) <= 5:
        port = int(text)
        return port if port <= 65535 else None
    return None


@lru_cache(maxsize=_CACHE)
def parse_cluster(name: str | None) -> ClusterRef | None:
    """Parse an Istio cluster name; ``None`` when it is not one of Istio's.

    ``inbound|PORT|...`` clusters belong to the destination's sidecar, ``outbound|...`` and the
    passthrough/black-hole clusters to the caller's; ``inbound-vip|...`` is a waypoint (the
    destination side of an ambient mesh).

    >>> ref = parse_cluster("outbound|8000|v1|httpbin.foo.svc.cluster.local")
    >>> ref.reporter, ref.port, ref.subset, ref.fqdn
    ('source', 8000, 'v1', 'httpbin.foo.svc.cluster.local')
    >>> parse_cluster("inbound|8000||").reporter, parse_cluster("PassthroughCluster").reporter
    ('destination', 'source')
    """
    if not name or name == "-":
        return None
    special = _PASSTHROUGH.get(name)
    if special is not None:
        return special
    if "|" in name:
        parts = name.split("|")
        if len(parts) != 4:
            return None
        kind, port, subset, fqdn = parts
        reporter = {"outbound": "source", "inbound": "destination",
                    "inbound-vip": "destination"}.get(kind)
        if reporter is None:
            return None
        return ClusterRef(reporter, _port(port), subset or None, fqdn.lower() or None)
    sni = parse_istio_sni(name)
    if sni is not None:  # SNI-DNAT clusters of east-west gateways: neither side of the call
        return ClusterRef("unknown", sni.port, sni.subset, sni.fqdn)
    return None


class SniRef(NamedTuple):
    port: int | None
    subset: str | None
    fqdn: str


@lru_cache(maxsize=_CACHE)
def parse_istio_sni(sni: str | None) -> SniRef | None:
    """Istio's mTLS SNI ``outbound_.PORT_.SUBSET_.FQDN`` (only a destination sees it inbound).

    >>> parse_istio_sni("outbound_.8000_._.httpbin.foo.svc.cluster.local")
    SniRef(port=8000, subset=None, fqdn='httpbin.foo.svc.cluster.local')
    """
    if not sni or not sni.startswith("outbound_."):
        return None
    match = _ISTIO_SNI.match(sni)
    if not match:
        return None
    subset = match.group(2)
    return SniRef(_port(match.group(1)), None if subset in ("", "_") else subset,
                  match.group(3).lower())


@lru_cache(maxsize=_CACHE)
def fqdn_namespace(fqdn: str | None) -> str | None:
    """The namespace of a Kubernetes service FQDN (``name.ns.svc.<cluster domain>``).

    >>> fqdn_namespace("httpbin.foo.svc.cluster.local"), fqdn_namespace("api.github.com")
    ('foo', None)
    """
    if not fqdn:
        return None
    parts = fqdn.split(".")
    if len(parts) >= 3 and parts[2] == "svc" and parts[0] and parts[1]:
        return parts[1]
    return None


@lru_cache(maxsize=_CACHE)
def split_host_port(address: str | None) -> tuple[str | None, int | None]:
    """Host and port from ``10.0.0.1:80``, ``[::1]:80``, ``tcp://10.0.2.1:80`` or a bare host.

    >>> split_host_port("tcp://10.0.2.1:80"), split_host_port("[fd00::1]:8080")
    (('10.0.2.1', 80), ('fd00::1', 8080))
    >>> split_host_port("fd00::1"), split_host_port("-")
    (('fd00::1', None), (None, None))
    """
    if not address or address == "-":
        return None, None
    address = address.strip()
    if "://" in address:
        address = address.split("://", 1)[1]
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return (host or None), (_port(rest[1:]) if rest.startswith(":") else None)
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return (host or None), _port(port)
    return address or None, None


def host_of(address: str | None) -> str | None:
    """The host (an IP for sockets) without the port; same as ``split_host_port()[0]``.

    Not cached: caller addresses carry ephemeral ports, so a cache would only churn.

    >>> host_of("10.44.1.23:37652"), host_of("[fd00::1]:80"), host_of("fd00::1")
    ('10.44.1.23', 'fd00::1', 'fd00::1')
    """
    if not address or address == "-":
        return None
    if "://" in address:
        address = address.split("://", 1)[1]
    if address[0] == "[":
        return address[1:address.find("]")] or None
    if address.count(":") == 1:
        return address.partition(":")[0] or None
    return address.strip() or None


@lru_cache(maxsize=_CACHE)
def is_ip(host: str | None) -> bool:
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=_CACHE)
def service_fqdn(authority: str | None, namespace: str | None,
                 cluster_domain: str = "cluster.local") -> str | None:
    """A service FQDN from an HTTP authority as a caller wrote it.

    Short names resolve in ``namespace`` (the namespace the request was made from or into);
    ``name.svc`` names and ``name.ns`` when ``ns`` is that namespace get the cluster domain (a
    two-label name is otherwise as likely ``example.com``); IP authorities name no service;
    other hosts (external names) are kept as they are.

    >>> service_fqdn("httpbin:8000", "foo")
    'httpbin.foo.svc.cluster.local'
    >>> service_fqdn("httpbin.foo", "foo"), service_fqdn("10.0.0.1:80", "foo")
    ('httpbin.foo.svc.cluster.local', None)
    >>> service_fqdn("example.com", "foo")
    'example.com'

    """
    host = split_host_port(authority)[0]
    if not host:
        return None
    host = host.lower().rstrip(".")
    if is_ip(host):
        return None
    suffix = "." + cluster_domain
    if host.endswith(suffix):
        return host
    parts = host.split(".")
    if len(parts) == 1:
        return f"{host}.{namespace}.svc.{cluster_domain}" if namespace else host
    if len(parts) == 3 and parts[2] == "svc":
        return f"{host}.{cluster_domain}"
    if len(parts) == 2 and parts[1] == namespace:
        return f"{host}.svc.{cluster_domain}"
    return host


@lru_cache(maxsize=_CACHE)
def parse_istio_node_id(node: str | None) -> tuple[str | None, str | None, str | None]:
    """(pod name, namespace, IP) from an Istio proxy node id ``sidecar~IP~POD.NS~NS.svc.cd``.

    Envoy's OpenTelemetry access logger puts the node id in the ``node_name`` resource attribute.

    >>> parse_istio_node_id("sidecar~10.44.1.23~sleep-7656cf8794-8nnlk.foo~foo.svc.cluster.local")
    ('sleep-7656cf8794-8nnlk', 'foo', '10.44.1.23')
    """
    if not node or node.count("~") != 3:
        return None, None, None
    _, ip, pod_ns, _ = node.split("~")
    pod, _, namespace = pod_ns.rpartition(".")
    if not pod:
        return pod_ns or None, None, ip or None
    return pod, namespace or None, ip or None


class LearnedIdentity(msgspec.Struct, frozen=True):
    """What the resolver knows about one address or service; unknown parts are None."""

    workload: str | None = None
    namespace: str | None = None
    principal: str | None = None


_AMBIGUOUS = "\x00ambiguous"


def _pick(old: str | None, new: str | None, keep_conflicts: bool) -> str | None:
    if new is None:
        return old
    if old is None or old == new or not keep_conflicts:
        return new
    return _AMBIGUOUS


def _merge(old: LearnedIdentity | None, new: LearnedIdentity, keep_conflicts: bool
           ) -> LearnedIdentity:
    if old is None:
        return new
    return LearnedIdentity(_pick(old.workload, new.workload, keep_conflicts),
                           _pick(old.namespace, new.namespace, keep_conflicts),
                           _pick(old.principal, new.principal, keep_conflicts))


def _teaches_nothing(old: LearnedIdentity | None, workload: str | None, namespace: str | None,
                     principal: str | None, keep_conflicts: bool) -> bool:
    """Whether `_merge` of these values into ``old`` would return ``old`` unchanged (the common
    case: an address keeps teaching the same identity), so the merge can be skipped."""
    if old is None:
        return False
    return (_keeps(old.workload, workload, keep_conflicts)
            and _keeps(old.namespace, namespace, keep_conflicts)
            and _keeps(old.principal, principal, keep_conflicts))


def _keeps(old: str | None, new: str | None, keep_conflicts: bool) -> bool:
    return new is None or new == old or (keep_conflicts and old == _AMBIGUOUS)


def _known(value: str | None) -> str | None:
    return None if value == _AMBIGUOUS else value


class IdentityResolver:
    """Fill identity a record lacks from what other records taught about the same address.

    A source-side sidecar record knows its pod (``POD_NAME``) and its own IP; the matching
    destination-side record only knows the caller's IP and certificate. Learning
    address -> {workload, namespace, principal} from records that carry both lets every record
    name the caller. Destination services learn their workload/principal the same way
    (a service with several workloads behind it stays unresolved rather than guessed).

    A principal is never filled into a record whose destination reported plaintext: a
    principal means "presented a certificate", and a plaintext caller did not.

    Both maps are bounded (``max_addresses``, ``address_ttl`` in event time) and count what
    they evict (`evictions`). The resolver pickles with its learned state.

    >>> from datetime import UTC, datetime
    >>> r = IdentityResolver()
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> _ = r.resolve(EdgeEvent(ts=t, origin="envoy_text", reporter="source",
    ...     source_workload="sleep", source_namespace="foo", source_address="10.0.0.5"))
    >>> e = r.resolve(EdgeEvent(ts=t, origin="envoy_text", reporter="destination",
    ...     source_address="10.0.0.5", mtls=True))
    >>> e.source_workload, e.source_namespace
    ('sleep', 'foo')
    """

    def __init__(self, trust_domain: str = "cluster.local", cluster_domain: str = "cluster.local",
                 max_addresses: int = 100_000, address_ttl: float = 3600.0) -> None:
        self.trust_domain = trust_domain
        self.cluster_domain = cluster_domain
        self.max_addresses = max_addresses
        self.address_ttl = address_ttl
        self._addresses: BoundedMap[str, LearnedIdentity] = BoundedMap(max_addresses, address_ttl)
        self._services: BoundedMap[str, LearnedIdentity] = BoundedMap(max_addresses, address_ttl)
        self.filled = 0
        self._next_expiry = float("-inf")

    @property
    def evictions(self) -> dict[str, EvictionCounts]:
        """Eviction counters per learned map (``addresses``, ``services``)."""
        return {"addresses": self._addresses.evictions, "services": self._services.evictions}

    def __len__(self) -> int:
        return len(self._addresses) + len(self._services)

    def learn(self, event: EdgeEvent) -> None:
        """Remember what ``event`` says about its caller's address and its destination service."""
        now = event.ts.timestamp()
        if now >= self._next_expiry:  # pods die and IPs are reused: forget on event time
            self.expire(now)
            self._next_expiry = now + self.address_ttl / 10
        address = event.source_address
        if address and (event.source_workload or event.source_principal):
            principal = event.source_principal if event.mtls is not False else None
            workload = event.source_workload
            namespace = event.source_namespace or principal_namespace(principal)
            old = self._addresses.get(address)
            if _teaches_nothing(old, workload, namespace, principal, False):
                self._addresses.touch(address, now)
            else:
                self._addresses.put(address, _merge(
                    old, LearnedIdentity(workload, namespace, principal), False), now)
        service = event.destination_service
        if service and (event.destination_workload or event.destination_principal):
            workload, namespace = event.destination_workload, event.destination_namespace
            principal = event.destination_principal
            old = self._services.get(service)
            if _teaches_nothing(old, workload, namespace, principal, True):
                self._services.touch(service, now)
            else:
                self._services.put(service, _merge(
                    old, LearnedIdentity(workload, namespace, principal), True), now)

    def resolve(self, event: EdgeEvent) -> EdgeEvent:
        """Learn from ``event``, then return it with missing identity filled (or unchanged)."""
        self.learn(event)
        changes: dict[str, str] = {}
        address = event.source_address
        if address and not (event.source_workload and event.source_namespace
                            and event.source_principal):
            known = self._addresses.get(address)
            if known is not None:
                if event.source_workload is None and known.workload:
                    changes["source_workload"] = known.workload
                if event.source_namespace is None and known.namespace:
                    changes["source_namespace"] = known.namespace
                if event.source_principal is None and known.principal and event.mtls is not False:
                    changes["source_principal"] = known.principal
        service = event.destination_service
        if service and not (event.destination_workload and event.destination_principal):
            known = self._services.get(service)
            if known is not None:
                workload, namespace = _known(known.workload), _known(known.namespace)
                principal = _known(known.principal)
                if workload and event.destination_workload is None:
                    changes["destination_workload"] = workload
                if namespace and event.destination_namespace is None:
                    changes["destination_namespace"] = namespace
                if principal and event.destination_principal is None:
                    changes["destination_principal"] = principal
        if not changes:
            return event
        self.filled += 1
        return msgspec.structs.replace(event, **changes)

    def expire(self, now: float) -> int:
        """Drop what was not seen within ``address_ttl`` of ``now``; returns how many."""
        return len(self._addresses.expire(now)) + len(self._services.expire(now))
