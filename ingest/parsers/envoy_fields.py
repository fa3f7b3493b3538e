"""From Envoy access-log fields to an `EdgeEvent`: one builder for TEXT, JSON and OTLP logs.

Each format parser only finds the values (a regex group, a JSON key, an OTLP attribute) and
names them with a *canonical key* (``response_code``, ``upstream_cluster``, ``peer_san``...).
Everything that gives the values meaning lives here, once: which side reported (the Istio
cluster name), the mTLS evidence rule of DESIGN.md, identity normalization and the byte
direction.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

import msgspec

from ingest.identity import (
    fqdn_namespace,
    host_of,
    normalize_principal,
    parse_cluster,
    parse_istio_sni,
    principal_namespace,
    service_fqdn,
    split_host_port,
    workload_from_pod,
)
from ingest.parsers.common import TS_MAX, TS_MIN, RecordError, check_ts
from ingest.parsers.envoy_format import Command, time_format
from meshwatch.records import EdgeEvent

_SIMPLE: dict[str, str] = {
    "START_TIME": "start_time",
    "DOWNSTREAM_PEER_CERT_V_END": "cert_v_end",
    "PROTOCOL": "protocol",
    "RESPONSE_CODE": "response_code",
    "RESPONSE_FLAGS": "response_flags",
    "RESPONSE_FLAGS_LONG": "response_flags_long",
    "BYTES_RECEIVED": "bytes_received",
    "BYTES_SENT": "bytes_sent",
    "DURATION": "duration",
    "UPSTREAM_HOST": "upstream_host",
    "UPSTREAM_CLUSTER": "upstream_cluster",
    "UPSTREAM_CLUSTER_RAW": "upstream_cluster",
    "DOWNSTREAM_LOCAL_ADDRESS": "downstream_local",
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": "downstream_local",
    "DOWNSTREAM_DIRECT_LOCAL_ADDRESS": "downstream_direct_local",
    "DOWNSTREAM_DIRECT_LOCAL_ADDRESS_WITHOUT_PORT": "downstream_direct_local",
    "DOWNSTREAM_LOCAL_PORT": "downstream_local_port",
    "DOWNSTREAM_REMOTE_ADDRESS": "downstream_remote",
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": "downstream_remote",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS": "downstream_direct_remote",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": "downstream_direct_remote",
    "REQUESTED_SERVER_NAME": "sni",
    "DOWNSTREAM_PEER_URI_SAN": "peer_san",
    "DOWNSTREAM_LOCAL_URI_SAN": "local_san",
    "UPSTREAM_PEER_URI_SAN": "upstream_peer_san",
    "UPSTREAM_LOCAL_URI_SAN": "upstream_local_san",
    "DOWNSTREAM_TLS_VERSION": "tls_version",
    "TRACE_ID": "trace_id",
}
_HEADERS: dict[str, str] = {
    ":method": "method",
    ":path": "path",
    "x-envoy-original-path": "path",
    ":authority": "authority",
    "host": "authority",
    "x-request-id": "request_id",
    "traceparent": "traceparent",
    "x-b3-traceid": "b3_trace_id",
    "x-forwarded-client-cert": "xfcc",
}
_ENVIRONMENT: dict[str, str] = {
    "POD_NAME": "pod_name",
    "POD_NAMESPACE": "pod_namespace",
    "ISTIO_META_WORKLOAD_NAME": "workload_name",
}

# Value kinds of the canonical keys (everything else is text).
KEY_KINDS: dict[str, str] = {
    "start_time": "time", "cert_v_end": "time", "response_code": "int",
    "bytes_received": "int", "bytes_sent": "int", "duration": "int",
    "downstream_local_port": "int",
}


def canonical_key(command: Command) -> str | None:
    """The canonical key a command fills, or ``None`` when meshwatch does not use it.

    >>> canonical_key(Command("REQ", "X-ENVOY-ORIGINAL-PATH?:PATH"))
    'path'
    >>> canonical_key(Command("ENVIRONMENT", "POD_NAME")), canonical_key(Command("HOSTNAME"))
    ('pod_name', None)
    """
    op = command.operator
    key = _SIMPLE.get(op)
    if key is not None:
        return key
    arg = command.arg or ""
    if op in ("REQ", "REQUEST_HEADER"):
        return _HEADERS.get(arg.split("?", 1)[0].strip().lower())
    if op in ("REQ_WITHOUT_QUERY", "PATH"):
        return "path"
    if op == "ENVIRONMENT":
        return _ENVIRONMENT.get(arg.split(":", 1)[0].strip())
    return None


class FieldPlan(NamedTuple):
    """Where one canonical value is found in a format's value sequence, and how to read it."""

    key: str
    index: int
    kind: str  # "str" | "int" | "time"
    label: str  # names the field in failure reasons
    time_spec: str | None = None


def make_plan(commands: Sequence[Command | None], label: Callable[[int, Command], str]
              ) -> tuple[FieldPlan, ...]:
    """Plans for every used command; ``label(i, command)`` names field ``i`` in errors."""
    plan = []
    for i, command in enumerate(commands):
        if command is None:
            continue
        key = canonical_key(command)
        if key is None:
            continue
        kind = KEY_KINDS.get(key, "str")
        plan.append(FieldPlan(key, i, kind, label(i, command),
                              command.arg if kind == "time" and command.arg else None))
    return tuple(plan)


_UNSET = msgspec.UNSET


def to_int(raw: Any, label: str) -> int:
    if type(raw) is int:
        return raw
    if type(raw) is str and raw.isascii() and raw.isdigit():
        return int(raw)
    if type(raw) is float and raw.is_integer() and raw >= 0:
        return int(raw)
    raise RecordError(f"{label}: expected an integer, got {_show(raw)}")


def to_time(raw: Any, label: str, spec: str | None = None) -> datetime:
    if spec is not None:
        try:
            return time_format(spec).parse(str(raw))
        except (ValueError, OverflowError) as exc:
            raise RecordError(f"{label}: expected a time like {spec!r}, got {_show(raw)} "
                              f"({exc})") from None
    if type(raw) is str:
        try:
            ts = datetime.fromisoformat(raw)
        except ValueError:
            pass
        else:
            return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    raise RecordError(f"{label}: expected an ISO 8601 timestamp, got {_show(raw)}")


def _iso(raw: str, label: str) -> datetime:
    """`to_time` for Envoy's default ISO 8601 timestamps, minus the generality (hot path)."""
    try:
        ts = _fromisoformat(raw)
    except ValueError:
        raise RecordError(f"{label}: expected an ISO 8601 timestamp, got {_show(raw)}") from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


_fromisoformat = datetime.fromisoformat


def _show(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


Extractor = Callable[[Sequence[Any]], dict[str, Any]]


def make_extractor(plan: Sequence[FieldPlan], may_be_unset: bool = False) -> Extractor:
    """Compile ``plan`` into ``values -> {canonical key: typed value}`` (straight-line code).

    None stands for Envoy's unset (``-``, null, empty); a key the record does not have at all
    (a JSON key missing: ``msgspec.UNSET``) is left out, so "not in the format" stays
    distinguishable from "unset". Where several fields map to one key, the first with a value
    wins. Used where values are merged before building (OTLP log bodies + attributes); the hot
    path is `make_event_parser`.

    Only trusted names go into the generated source; labels and time formats (which come from
    user configuration) are passed as constants, never inlined.

    >>> from ingest.parsers.envoy_format import Command
    >>> plan = make_plan([Command("RESPONSE_CODE"), Command("PROTOCOL")],
    ...                  lambda i, c: f"field {i + 1} ({c.label})")
    >>> make_extractor(plan)(["418", "-"])
    {'response_code': 418, 'protocol': None}
    """
    keys = [item.key for item in plan]
    for key in keys:
        if not key.isidentifier():  # canonical keys are ours; refuse anything else
            raise ValueError(f"bad canonical key {key!r}")
    namespace: dict[str, Any] = {
        "UNSET": _UNSET, "_stringify": _stringify, "_to_int": to_int, "_to_time": to_time,
        "LABELS": [p.label for p in plan], "SPECS": [p.time_spec for p in plan],
    }
    if not may_be_unset and len(set(keys)) == len(keys):
        # Text groups are always strings: one dict literal, no per-key statements.
        items = []
        for n, item in enumerate(plan):
            raw = f"(r := values[{int(item.index)}])"
            if item.kind == "str":
                value = "r"
            elif item.kind == "int":
                value = f"(int(r) if r.isascii() and r.isdigit() else _to_int(r, LABELS[{n}]))"
            else:
                value = f"_to_time(r, LABELS[{n}], SPECS[{n}])"
            items.append(f"        {item.key!r}: None if {raw} == '-' or not r else {value},")
        source = "\n".join(["def _extract(values):", "    return {", *items, "    }"])
        exec(compile(source, "<envoy-extractor>", "exec"), namespace)  # noqa: S102
        return namespace["_extract"]
    lines = ["def _extract(values):", "    out = {}"]
    seen: set[str] = set()
    for n, item in enumerate(plan):
        key = item.key
        lines.append(f"    raw = values[{int(item.index)}]")
        indent = "    "
        if may_be_unset:
            lines.append("    if raw is not UNSET:")
            indent = "        "
        null = "raw is None or raw == '-' or raw == ''"
        if item.kind == "str":
            value = "raw if raw.__class__ is str else _stringify(raw)"
        elif item.kind == "int":
            value = f"raw if raw.__class__ is int else _to_int(raw, LABELS[{n}])"
        else:
            value = f"_to_time(raw, LABELS[{n}], SPECS[{n}])"
        if key in seen:
            lines.append(f"{indent}if out.get({key!r}) is None and not ({null}):")
            lines.append(f"{indent}    out[{key!r}] = {value}")
        else:
            lines.append(f"{indent}out[{key!r}] = None if {null} else {value}")
        seen.add(key)
    lines.append("    return out")
    exec(compile("\n".join(lines), "<envoy-extractor>", "exec"), namespace)  # noqa: S102
    return namespace["_extract"]


EventParser = Callable[[Sequence[Any], str, str, str], EdgeEvent]


def make_event_parser(plan: Sequence[FieldPlan], may_be_unset: bool = False) -> EventParser:
    """Compile ``plan`` into ``values -> EdgeEvent``: converted values go positionally into
    `make_event`, with no intermediate dict (the hot path of TEXT and JSON parsing).

    Each value becomes one inline expression of the call: TEXT groups are always strings; JSON
    values may be typed, null or missing (``msgspec.UNSET``: the parameter's default). Formats
    where several fields fill one canonical key (the first with a value wins) fill a slot list
    instead. Only trusted names go into the
    generated source; labels and time formats (user configuration) are passed as constants.

    >>> from ingest.parsers.envoy_format import Command
    >>> plan = make_plan([Command("START_TIME"), Command("RESPONSE_CODE")],
    ...                  lambda i, c: f"field {i + 1} ({c.label})")
    >>> make_event_parser(plan)(["2024-05-01T10:00:00Z", "503"], "envoy_text", "cluster.local",
    ...                         "cluster.local").response_code
    503
    """
    keys = [item.key for item in plan]
    for key in keys:
        if key not in POSITION:
            raise ValueError(f"not a canonical key: {key!r}")
    namespace: dict[str, Any] = {
        "_make": make_event, "_to_int": to_int, "_to_time": to_time, "_stringify": _stringify,
        "_iso": _iso,
        "UNSET": _UNSET, "ABSENT": _ABSENT, "DEFAULTS": list(DEFAULTS),
        "LABELS": [p.label for p in plan], "SPECS": [p.time_spec for p in plan],
    }
    if len(set(keys)) == len(keys):
        by_key = {item.key: (n, item) for n, item in enumerate(plan)}
        args = []
        for key, default in zip(CANONICAL_KEYS, DEFAULTS, strict=True):
            missing = "ABSENT" if default is _ABSENT else "None"
            if key not in by_key:
                args.append(f"        {missing},")
                continue
            n, item = by_key[key]
            raw = f"(r := values[{int(item.index)}])"
            if may_be_unset:  # JSON: typed or string values, null, or the key missing
                if item.kind == "str":
                    value = "r if r.__class__ is str else _stringify(r)"
                elif item.kind == "int":
                    value = f"r if r.__class__ is int else _to_int(r, LABELS[{n}])"
                else:
                    value = f"_to_time(r, LABELS[{n}], SPECS[{n}])"
                args.append(f"        {missing} if {raw} is UNSET else None if r is None or "
                            f"r == '-' or r == '' else {value},")
                continue
            if item.kind == "str":
                value = "r"
            elif item.kind == "int":
                value = f"(int(r) if r.isascii() and r.isdigit() else _to_int(r, LABELS[{n}]))"
            elif item.time_spec is None:
                value = f"_iso(r, LABELS[{n}])"
            else:
                value = f"_to_time(r, LABELS[{n}], SPECS[{n}])"
            args.append(f"        None if {raw} == '-' or not r else {value},")
        lines = ["def _parse(values, origin, cluster_domain, trust_domain):",
                 "    return _make(", "        origin, cluster_domain, trust_domain,", *args,
                 "    )"]
    else:
        lines = ["def _parse(values, origin, cluster_domain, trust_domain):",
                 "    slots = DEFAULTS.copy()"]
        seen: set[str] = set()
        for n, item in enumerate(plan):
            slot = f"slots[{POSITION[item.key]}]"
            lines.append(f"    raw = values[{int(item.index)}]")
            indent = "    "
            if may_be_unset:
                lines.append("    if raw is not UNSET:")
                indent = "        "
            null = "raw is None or raw == '-' or raw == ''"
            if item.kind == "str":
                value = "raw if raw.__class__ is str else _stringify(raw)"
            elif item.kind == "int":
                value = f"raw if raw.__class__ is int else _to_int(raw, LABELS[{n}])"
            else:
                value = f"_to_time(raw, LABELS[{n}], SPECS[{n}])"
            if item.key in seen:  # a later field fills the key only if still empty
                lines.append(f"{indent}if ({slot} is None or {slot} is ABSENT) "
                             f"and not ({null}):")
                lines.append(f"{indent}    {slot} = {value}")
                lines.append(f"{indent}elif {slot} is ABSENT:")
                lines.append(f"{indent}    {slot} = None")
            else:
                lines.append(f"{indent}{slot} = None if {null} else {value}")
            seen.add(item.key)
        lines.append("    return _make(origin, cluster_domain, trust_domain, *slots)")
    exec(compile("\n".join(lines), "<envoy-event-parser>", "exec"), namespace)  # noqa: S102
    return namespace["_parse"]


def _stringify(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return str(raw)
    return msgspec.json.encode(raw).decode()


_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_HEX16 = re.compile(r"^[0-9a-fA-F]{16}$")


def trace_id_of(trace_id: str | None, traceparent: str | None, b3: str | None) -> str | None:
    """Lower-case 32-hex trace id from TRACE_ID, a W3C traceparent or a B3 trace id header.

    >>> trace_id_of(None, "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None)
    '4bf92f3577b34da6a3ce929d0e0e4736'
    >>> trace_id_of(None, None, "463ac35c9f6413ad")
    '0000000000000000463ac35c9f6413ad'
    """
    if trace_id and _HEX32.match(trace_id) and trace_id.strip("0"):
        return trace_id.lower()
    if traceparent:
        parts = traceparent.split("-")
        if len(parts) >= 4 and _HEX32.match(parts[1]) and parts[1].strip("0"):
            return parts[1].lower()
    if b3:
        if _HEX32.match(b3):
            return b3.lower()
        if _HEX16.match(b3):
            return "0" * 16 + b3.lower()
    return None


class _Identity(NamedTuple):
    reporter: str
    source_workload: str | None
    source_namespace: str | None
    source_principal: str | None
    destination_service: str | None
    destination_workload: str | None
    destination_namespace: str | None
    destination_principal: str | None
    destination_port: int | None
    mtls: bool | None
    keep_tls: bool  # whether the downstream TLS fields describe the caller's connection


@lru_cache(maxsize=65536)
def _identity(cluster_name: str | None, sni: str | None, authority: str | None,
              pod: str | None, pod_namespace: str | None, workload_name: str | None,
              peer_san: str | None, xfcc: str | None, local_san: str | None,
              upstream_peer_san: str | None, upstream_local_san: str | None, has_tls: bool,
              upstream_host: str | None, downstream_local: str | None,
              downstream_local_port: int | None, tls_evidence: bool, cluster_domain: str,
              trust_domain: str) -> _Identity:
    # Everything here depends only on strings that repeat across a stream (cluster names,
    # SANs, pod names), so the result is cached; per-record values stay out of the key.
    cluster = parse_cluster(cluster_name)
    sni_ref = parse_istio_sni(sni) if sni else None
    if cluster is not None and cluster.reporter != "unknown":
        reporter = cluster.reporter
    elif sni_ref is not None:
        reporter = "destination"  # only a destination sees Istio's mTLS SNI as requested name
    else:
        reporter = "unknown"
    own_workload = workload_from_pod(pod) if pod else workload_name

    if reporter == "source":
        source_principal = normalize_principal(upstream_local_san, trust_domain)
        if cluster is not None and not cluster.passthrough:
            service, port = cluster.fqdn, cluster.port
        else:  # passthrough/black hole: whatever the caller asked for, by name or by IP
            host, port = split_host_port(upstream_host)
            service = service_fqdn(authority, pod_namespace, cluster_domain) or host
            port = port or split_host_port(authority)[1]
        destination_principal = normalize_principal(upstream_peer_san, trust_domain)
        return _Identity(
            "source", own_workload, pod_namespace or principal_namespace(source_principal),
            source_principal, service, None,
            fqdn_namespace(service) or principal_namespace(destination_principal),
            destination_principal, port, None, False)

    if reporter == "destination":
        mtls: bool | None = None
        if peer_san or has_tls or sni_ref is not None:
            mtls = True
        elif tls_evidence:
            mtls = False
        # XFCC is a request header: trust it only when the connection itself was mTLS.
        source_principal = normalize_principal(peer_san or (xfcc if mtls else None), trust_domain)
        destination_principal = normalize_principal(local_san, trust_domain)
        namespace = pod_namespace or principal_namespace(destination_principal)
        if sni_ref is not None:
            service = sni_ref.fqdn
        elif cluster is not None and cluster.fqdn:
            service = cluster.fqdn
        else:
            service = service_fqdn(authority, namespace, cluster_domain)
        if cluster is not None and cluster.port:
            port = cluster.port
        elif sni_ref is not None and sni_ref.port:
            port = sni_ref.port
        else:
            port = downstream_local_port or split_host_port(downstream_local)[1]
        return _Identity(
            "destination", None, principal_namespace(source_principal), source_principal,
            service, own_workload, namespace or fqdn_namespace(service), destination_principal,
            port, mtls, True)

    source_principal = normalize_principal(peer_san, trust_domain)
    if cluster is not None and cluster.fqdn:
        service, port = cluster.fqdn, cluster.port
    else:
        service = service_fqdn(authority, None, cluster_domain)
        port = split_host_port(authority)[1] or split_host_port(upstream_host)[1]
    return _Identity("unknown", None, principal_namespace(source_principal), source_principal,
                     service, None, fqdn_namespace(service), None, port, None, True)


_ABSENT: Any = msgspec.UNSET  # "the format has no such field", unlike None: "unset"


def build_event(values: dict[str, Any], origin: str, cluster_domain: str = "cluster.local",
                trust_domain: str = "cluster.local") -> EdgeEvent:
    """The `EdgeEvent` for canonical ``values`` (a key missing = not in the record's format)."""
    slots = list(DEFAULTS)
    for key, value in values.items():
        slots[POSITION[key]] = value
    return make_event(origin, cluster_domain, trust_domain, *slots)


def make_event(
    origin: str, cluster_domain: str, trust_domain: str,
    start_time: datetime | None = None, cert_v_end: datetime | None = None,
    protocol: Any = _ABSENT, sni: Any = _ABSENT, peer_san: Any = _ABSENT,
    tls_version: Any = _ABSENT, response_code: int | None = None,
    response_flags: str | None = None, response_flags_long: str | None = None,
    bytes_received: int | None = None, bytes_sent: int | None = None,
    duration: int | None = None, upstream_host: str | None = None,
    upstream_cluster: str | None = None, downstream_local: str | None = None,
    downstream_direct_local: str | None = None, downstream_local_port: int | None = None,
    downstream_remote: str | None = None, downstream_direct_remote: str | None = None,
    local_san: str | None = None, upstream_peer_san: str | None = None,
    upstream_local_san: str | None = None, trace_id: str | None = None,
    traceparent: str | None = None, b3_trace_id: str | None = None, xfcc: str | None = None,
    method: str | None = None, path: str | None = None, authority: str | None = None,
    request_id: str | None = None, pod_name: str | None = None,
    pod_namespace: str | None = None, workload_name: str | None = None,
) -> EdgeEvent:
    """The `EdgeEvent` one Envoy record describes; parameters are the canonical keys.

    Generated parsers call it positionally (`CANONICAL_KEYS` order): 33 keyword arguments
    cost more than everything else in a call.

    Rules (DESIGN.md): the Istio cluster name says who reported (``inbound|...`` the
    destination, ``outbound|...``/passthrough the caller), an Istio SNI implies the
    destination. ``mtls`` is set only by a destination: True on a peer SAN, a TLS version or
    Istio's SNI; False when the record has those fields (SNI, peer SAN, TLS version) and they
    are all unset; None when it lacks them (a smaller format: absence of evidence is not
    plaintext). A caller's record always has None. Bytes count from the caller's view.
    """
    if start_time is None:
        raise RecordError("record has no start time (START_TIME is unset or not in the format)")
    if not (TS_MIN <= start_time < TS_MAX):
        check_ts(start_time)
    tls_fields = sni is not _ABSENT or peer_san is not _ABSENT or tls_version is not _ABSENT
    if sni is _ABSENT:
        sni = None
    if peer_san is _ABSENT:
        peer_san = None
    if tls_version is _ABSENT:
        tls_version = None
    cluster = parse_cluster(upstream_cluster)
    needs_local = cluster is None or not cluster.port
    ident = _identity(
        upstream_cluster, sni, authority, pod_name, pod_namespace, workload_name, peer_san, xfcc,
        local_san, upstream_peer_san, upstream_local_san, tls_version is not None,
        upstream_host if cluster is None or cluster.passthrough else None,
        (downstream_local or downstream_direct_local) if needs_local else None,
        downstream_local_port if needs_local else None,
        tls_fields, cluster_domain, trust_domain)
    if protocol is _ABSENT:
        protocol = None
    elif protocol is None:
        protocol = "tcp"  # Envoy prints '-' as protocol only for TCP proxy records
    keep_tls = ident.keep_tls  # a caller's record: the app's leg to its own sidecar
    return EdgeEvent(
        ts=start_time,
        origin=origin,  # type: ignore[arg-type]
        reporter=ident.reporter,  # type: ignore[arg-type]
        source_workload=ident.source_workload,
        source_namespace=ident.source_namespace,
        source_principal=ident.source_principal,
        # The TCP peer, not an X-Forwarded-For derived address a caller could forge.
        source_address=host_of(downstream_direct_remote or downstream_remote),
        destination_service=ident.destination_service,
        destination_workload=ident.destination_workload,
        destination_namespace=ident.destination_namespace,
        destination_principal=ident.destination_principal,
        destination_port=ident.destination_port,
        protocol=protocol,
        method=method,
        path=path,
        response_code=response_code,
        response_flags=response_flags or response_flags_long,
        # Envoy counts from its own view: BYTES_RECEIVED came from the caller (the request),
        # BYTES_SENT went back to it. The contract counts from the caller's view.
        bytes_sent=bytes_received,
        bytes_received=bytes_sent,
        duration_ms=None if duration is None else float(duration),
        mtls=ident.mtls,
        tls_version=tls_version if keep_tls else None,
        peer_cert_not_after=cert_v_end if keep_tls else None,
        request_id=request_id,
        trace_id=trace_id_of(trace_id, traceparent, b3_trace_id)
        if trace_id or traceparent or b3_trace_id else None,
    )


_PARAMETERS = list(inspect.signature(make_event).parameters.values())[3:]
CANONICAL_KEYS: tuple[str, ...] = tuple(p.name for p in _PARAMETERS)
DEFAULTS: tuple[Any, ...] = tuple(p.default for p in _PARAMETERS)
POSITION: dict[str, int] = {key: i for i, key in enumerate(CANONICAL_KEYS)}
