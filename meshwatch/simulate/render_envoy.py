"""Envoy access-log records of a call, in meshwatch's JSON and TEXT formats.

A record is a dict keyed exactly like `MESHWATCH_JSON_FORMAT` with values typed as newer Envoy
writes them (numbers as numbers, header values as strings, unset as null). The TEXT line is the
same dict pushed through `MESHWATCH_TEXT_FORMAT` (compiled from the format string itself, so the
two can never drift apart), with ``-`` for unset values as Envoy prints them.

Source-side (OUTBOUND) records never carry downstream peer identity or TLS fields: the caller's
app talks plaintext to its own sidecar. Only destination-side (INBOUND) records do.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache
from typing import Any

import msgspec

from meshwatch.formats import MESHWATCH_JSON_FORMAT, MESHWATCH_TEXT_FORMAT
from meshwatch.simulate.calls import Call, inbound_cluster, outbound_cluster

US = 1_000_000
JSON_KEYS: tuple[str, ...] = tuple(MESHWATCH_JSON_FORMAT)
_OPERATOR = re.compile(r"%([A-Z_]+(?:\([^)%]*\))?(?::\d+)?)%")

Record = dict[str, Any]
SortKey = tuple[int, int, int]


def compile_text_format(fmt: str, keys: dict[str, str]) -> str:
    """A `str.format` template for an Envoy format string: ``{i}`` is the i-th key's value.

    >>> compile_text_format('[%START_TIME%] "%REQ(:METHOD)%"\\n', MESHWATCH_JSON_FORMAT)
    '[{0}] "{2}"\\n'
    """
    index = {key: i for i, key in enumerate(keys)}
    by_operator = {operator: index[key] for key, operator in keys.items()}
    out: list[str] = []
    pos = 0
    for match in _OPERATOR.finditer(fmt):
        out.append(fmt[pos:match.start()].replace("{", "{{").replace("}", "}}"))
        operator = f"%{match.group(1)}%"
        if operator not in by_operator:
            raise ValueError(f"no JSON key renders {operator}")
        out.append("{" + str(by_operator[operator]) + "}")
        pos = match.end()
    out.append(fmt[pos:].replace("{", "{{").replace("}", "}}"))
    return "".join(out)


TEXT_TEMPLATE = compile_text_format(MESHWATCH_TEXT_FORMAT, MESHWATCH_JSON_FORMAT)


@lru_cache(maxsize=8192)
def _second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def envoy_time(t_us: int) -> str:
    """Envoy's default %START_TIME%: RFC 3339, milliseconds, UTC ``Z``."""
    sec, us = divmod(t_us, US)
    return f"{_second(sec)}.{us // 1000:03d}Z"


def records(call: Call) -> list[tuple[SortKey, Record]]:
    """The OUTBOUND record (caller's sidecar) and one INBOUND record per attempt."""
    out: list[tuple[SortKey, Record]] = []
    svc = call.service
    http = call.kind != "tcp"
    if call.src_sidecar and call.src_pod is not None:
        if call.cluster == "PassthroughCluster":
            upstream_host: str | None = f"{call.dst_ip}:{call.port}"
        elif call.attempts and call.attempts[-1].pod is not None and svc is not None:
            upstream_host = f"{call.attempts[-1].pod.ip}:{svc.target_port}"
        else:
            upstream_host = call.failed_host
        if call.cluster is not None:
            cluster = call.cluster or None
        else:
            cluster = outbound_cluster(call.port, call.subset, svc.fqdn) if svc else None
        connected = bool(call.attempts)
        pod = call.src_pod
        out.append(((call.start_us, call.seq, 0), {
            "start_time": envoy_time(call.start_us),
            "route_name": call.route,
            "method": call.method,
            "path": call.path,
            "protocol": call.protocol,
            "response_code": call.code,
            "response_flags": call.flags,
            "response_code_details": call.details,
            "connection_termination_details": call.termination,
            "bytes_received": call.req_bytes,
            "bytes_sent": call.resp_bytes,
            "duration": call.duration_us // 1000,
            "upstream_service_time": (str(call.service_time_us // 1000)
                                      if call.service_time_us is not None else None),
            "x_forwarded_for": call.xff,
            "user_agent": call.user_agent,
            "request_id": call.request_id,
            "authority": call.authority,
            "upstream_host": upstream_host,
            "upstream_cluster": cluster,
            "upstream_local_address": (f"{call.src_ip}:{call.upstream_port}"
                                       if connected else None),
            "downstream_local_address": call.down_local or f"{call.dst_ip}:{call.port}",
            "downstream_remote_address": call.down_remote or f"{call.src_ip}:{call.src_port}",
            "requested_server_name": None,
            "upstream_transport_failure_reason": call.transport_failure,
            "downstream_peer_uri_san": None,
            "downstream_local_uri_san": None,
            "upstream_peer_uri_san": call.upstream_peer if connected else None,
            "downstream_tls_version": None,
            "downstream_peer_cert_v_end": None,
            "pod_name": pod.name,
            "pod_namespace": pod.workload.namespace,
        }))
    if svc is None:
        return out
    mtls = call.mtls
    for i, attempt in enumerate(call.attempts, start=1):
        pod = attempt.pod
        if pod is None or not pod.workload.sidecar:
            continue
        app_us = attempt.app_us
        reached = app_us is not None
        t = call.start_us + attempt.offset_us
        local = f"{pod.ip}:{svc.target_port}"
        out.append(((t, call.seq, i), {
            "start_time": envoy_time(t),
            "route_name": "default" if http else None,
            "method": call.method,
            "path": call.path,
            "protocol": call.protocol,
            "response_code": attempt.code,
            "response_flags": attempt.flags,
            "response_code_details": attempt.details,
            "connection_termination_details": attempt.termination,
            "bytes_received": call.req_bytes,
            "bytes_sent": attempt.resp_bytes,
            "duration": attempt.duration_us // 1000,
            "upstream_service_time": (str(app_us // 1000)
                                      if app_us is not None and http else None),
            "x_forwarded_for": call.xff,
            "user_agent": call.user_agent,
            "request_id": call.request_id,
            "authority": call.authority,
            "upstream_host": local if reached else None,
            "upstream_cluster": inbound_cluster(svc.target_port),
            "upstream_local_address": f"127.0.0.6:{attempt.local_port}" if reached else None,
            "downstream_local_address": local,
            "downstream_remote_address": f"{call.src_ip}:{attempt.remote_port}",
            "requested_server_name": call.sni if mtls else None,
            "upstream_transport_failure_reason": None,
            "downstream_peer_uri_san": call.peer_principal if mtls else None,
            "downstream_local_uri_san": pod.workload.principal if mtls else None,
            "upstream_peer_uri_san": None,
            "downstream_tls_version": call.tls_version if mtls else None,
            "downstream_peer_cert_v_end": (envoy_time(call.peer_v_end_s * US)
                                           if mtls and call.peer_v_end_s else None),
            "pod_name": pod.name,
            "pod_namespace": pod.workload.namespace,
        }))
    return out


_ENCODER = msgspec.json.Encoder()


def json_line(record: Record) -> bytes:
    return _ENCODER.encode(record) + b"\n"


def text_line(record: Record) -> bytes:
    """The TEXT line; ``record`` must have the keys in `JSON_KEYS` order, as `records` makes."""
    return TEXT_TEMPLATE.format(*["-" if v is None else v for v in record.values()]).encode()
