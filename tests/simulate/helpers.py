"""Running the simulator in tests and reading its files back with independent decoders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from google.protobuf.internal.decoder import _DecodeVarint32
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshwatch.records import parse_ts
from meshwatch.simulate import FORMATS, SimulationConfig, Summary, simulate

START = "2026-03-02T06:00:00Z"
START_US = int(parse_ts(START).timestamp() * 1_000_000)


def run_sim(out: Path, *, scenario: str = "mixed", duration_s: float = 2400, seed: int = 11,
            services: int = 14, rps: float = 3.0, formats: tuple[str, ...] = FORMATS,
            start_us: int = START_US, span_workers: int | None = 1) -> Run:
    summary = simulate(SimulationConfig(out_dir=out, start_us=start_us, duration_s=duration_s,
                                        scenario=scenario, formats=formats, seed=seed,
                                        services=services, rps=rps, span_workers=span_workers))
    return Run(out, summary)


def read_frames(path: Path) -> list[ExportTraceServiceRequest]:
    """Length-delimited protobuf messages (writeDelimitedTo framing)."""
    data = path.read_bytes()
    pos, out = 0, []
    while pos < len(data):
        size, pos = _DecodeVarint32(data, pos)
        message = ExportTraceServiceRequest()
        message.ParseFromString(data[pos:pos + size])
        pos += size
        out.append(message)
    return out


def ts(value: str) -> datetime:
    return parse_ts(value)


@dataclass
class Run:
    dir: Path
    summary: Summary
    _cache: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def labels(self) -> dict[str, Any]:
        return json.loads((self.dir / "labels.json").read_text())

    @cached_property
    def mesh(self) -> dict[str, Any]:
        return json.loads((self.dir / "mesh.json").read_text())

    @cached_property
    def records(self) -> list[dict[str, Any]]:
        with (self.dir / "envoy-json.log").open() as f:
            return [json.loads(line) for line in f]

    @cached_property
    def text_lines(self) -> list[str]:
        return (self.dir / "envoy-text.log").read_text().splitlines()

    @cached_property
    def frames(self) -> list[ExportTraceServiceRequest]:
        return read_frames(self.dir / "spans.otlp.pb")

    @cached_property
    def pods(self) -> dict[str, dict[str, Any]]:
        """Pod name -> {ip, workload, namespace, principal, instrumented}."""
        out = {}
        for wl in self.mesh["workloads"]:
            for pod in wl["pods"]:
                out[pod["name"]] = {**pod, "workload": wl["name"], "namespace": wl["namespace"],
                                    "principal": wl["principal"],
                                    "instrumented": wl["instrumented"]}
        return out

    @cached_property
    def pod_by_ip(self) -> dict[str, dict[str, Any]]:
        return {p["ip"]: {**p, "name": name} for name, p in self.pods.items()}

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span in the protobuf file."""
        out = []
        for message in self.frames:
            for rs in message.resource_spans:
                resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((resource, span) for span in ss.spans)
        return out

    def instance(self, kind: str) -> dict[str, Any]:
        for item in self.labels["attacks"] + self.labels["benign"]:
            if item["kind"] == kind:
                return item
        raise KeyError(kind)


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def attrs(span: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in span.attributes}


def addr_ip(address: str | None) -> str | None:
    return address.rsplit(":", 1)[0] if address else None


def is_outbound(record: dict[str, Any]) -> bool:
    """Source-side: logged by the caller's proxy (outbound clusters, passthrough, no route)."""
    cluster = record["upstream_cluster"]
    return cluster is None or not cluster.startswith("inbound|")
