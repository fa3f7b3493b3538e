"""The one intermediate form every renderer reads: a `Call` and its server-side `Attempt`s.

A call is one request (or one TCP connection) from a caller to a service. It is rendered as a
source-side OUTBOUND record (when the caller has a sidecar), one destination-side INBOUND record
per attempt that reached the callee's sidecar, a CLIENT span (when the caller's app is
instrumented) and a SERVER span per attempt the callee's app served. Rendering every format from
the same objects is what keeps the files describing the same calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from meshwatch.simulate.topology import Operation, Pod, Service

CallKind = Literal["http", "grpc", "tcp"]


def outbound_cluster(port: int, subset: str, fqdn: str) -> str:
    """Istio's client-side cluster name, e.g. ``outbound|9080|v2|reviews.bookinfo.svc...``."""
    return f"outbound|{port}|{subset}|{fqdn}"


def inbound_cluster(target_port: int) -> str:
    """Istio's server-side cluster name (named by the container port since Istio 1.10)."""
    return f"inbound|{target_port}||"


def inbound_sni(port: int, subset: str, fqdn: str) -> str:
    """The SNI an Istio client sidecar sends for mTLS: ``outbound_.PORT_.SUBSET_.FQDN``."""
    return f"outbound_.{port}_.{subset}_.{fqdn}"


@dataclass(slots=True, eq=False)
class Attempt:
    """One upstream attempt as the callee's sidecar saw it (Envoy retries make several)."""

    offset_us: int  # from the call's start to the inbound START_TIME
    duration_us: int
    code: int
    flags: str = "-"
    details: str | None = "via_upstream"
    termination: str | None = None
    app_us: int | None = None  # time in the app; None when the sidecar answered (RBAC)
    resp_bytes: int = 0
    remote_port: int = 0  # the caller's source port on this connection
    local_port: int = 0  # the inbound sidecar's 127.0.0.6 source port to the app
    pod: Pod | None = None
    grpc_status: int = 0


@dataclass(slots=True, eq=False)
class Call:
    """One request or TCP connection, with everything each format needs to render it."""

    seq: int
    start_us: int
    kind: CallKind
    # Source.
    src_ip: str
    src_pod: Pod | None
    src_sidecar: bool  # an outbound record exists
    src_instrumented: bool  # a CLIENT span exists
    src_port: int  # app -> local sidecar (outbound downstream_remote_address port)
    upstream_port: int  # local sidecar -> remote (outbound upstream_local_address port)
    # Destination.
    service: Service | None
    port: int  # the service port the caller dialled
    subset: str = ""
    dst_ip: str = ""  # what the caller dialled (the VIP, or a raw IP for passthrough)
    op: Operation | None = None
    # Overrides of the outbound record's downstream addresses (the ingress gateway's
    # downstream is the internet client, not an app in its own pod).
    down_remote: str | None = None
    down_local: str | None = None
    cluster: str | None = None  # outbound cluster override; "" logs no cluster (404 NR)
    failed_host: str | None = None  # the upstream host a failed connection was aimed at
    route: str | None = "default"
    # Request.
    method: str | None = None
    path: str | None = None
    protocol: str | None = None
    authority: str | None = None
    user_agent: str | None = None
    xff: str | None = None
    request_id: str | None = None
    req_bytes: int = 0
    # Outcome as the caller saw it.
    code: int = 200
    flags: str = "-"
    details: str | None = "via_upstream"
    termination: str | None = None
    transport_failure: str | None = None
    duration_us: int = 0
    service_time_us: int | None = None
    resp_bytes: int = 0
    grpc_status: int = 0
    upstream_peer: str | None = None  # callee principal the client sidecar verified
    attempts: list[Attempt] = field(default_factory=list)
    # Transport security of the inbound connection (destination-side evidence).
    mtls: bool = True
    peer_principal: str | None = None
    peer_v_end_s: int | None = None
    tls_version: str | None = "TLSv1.3"
    sni: str | None = None
    # Tracing and labels.
    parent: Call | None = None
    traced: bool = True  # False: instrumentations skip it (health checks)
    label: str | None = None
    server_ctx: Any = None  # the serving attempt's span context, set by the OTLP renderer

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us

    @property
    def serving(self) -> Attempt | None:
        """The attempt whose app work the caller got back (children run inside it)."""
        for attempt in reversed(self.attempts):
            if attempt.app_us is not None:
                return attempt
        return None
