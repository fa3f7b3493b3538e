"""Parse throughput per format on realistic, varied records (not a test; run it).

    .venv/bin/python -m tests.ingest.bench_parsers [--records 5000] [--repeat 5]

Records vary like a real mesh (40 workloads x 3 pods, each calling 3 others; unique request
ids, rising timestamps, random caller ports) so the identity caches see realistic hit rates.
Each format is parsed ``--repeat`` times by a fresh parser; the best run is reported, in CPU
time (process_time): the machine is shared, and CPU time is what others disturb least.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ingest.parsers import make_parser
from meshwatch.formats import ENVOY_DEFAULT_FORMAT, ISTIO_DEFAULT_TEXT_FORMAT, MESHWATCH_TEXT_FORMAT
from meshwatch.records import EdgeEvent, Origin
from tests.ingest.samples import INBOUND, OUTBOUND, json_record, render

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
SERVICES = [f"svc{i:02d}" for i in range(40)]


def _values(rng: random.Random, i: int) -> dict[str, str]:
    caller = rng.choice(SERVICES)  # a sparse call graph: each workload calls 3 others
    callee = SERVICES[(SERVICES.index(caller) + rng.randrange(1, 4)) % len(SERVICES)]
    caller_n, callee_n = rng.randrange(3), rng.randrange(3)  # 3 pods per workload
    caller_pod = f"{caller}-v1-6b746f74dc-{'bcd'[caller_n]}9stp"
    callee_pod = f"{callee}-v1-87d54dd59-{'bcd'[callee_n]}8k4d"
    caller_ip = f"10.244.{SERVICES.index(caller)}.{caller_n + 10}"
    callee_ip = f"10.244.{SERVICES.index(callee)}.{callee_n + 10}"
    plaintext = rng.random() < 0.05
    inbound = rng.random() < 0.5
    base = dict(INBOUND if inbound else OUTBOUND)
    stamp = (T0 + timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    base.update({
        "START_TIME": stamp,
        "RESPONSE_CODE": rng.choice(["200", "200", "200", "404", "503"]),
        "BYTES_SENT": str(rng.randrange(100_000)), "DURATION": str(rng.randrange(500)),
        "REQ(X-REQUEST-ID)": str(uuid.UUID(int=rng.getrandbits(128))),
        "REQ(:AUTHORITY)": f"{callee}:9080",
        "DOWNSTREAM_REMOTE_ADDRESS": f"{caller_ip}:{rng.randrange(30000, 60000)}",
        "UPSTREAM_HOST": f"{callee_ip}:9080",
    })
    if inbound:
        base.update({
            "DOWNSTREAM_LOCAL_ADDRESS": f"{callee_ip}:9080",
            "REQUESTED_SERVER_NAME": "-" if plaintext else
            f"outbound_.9080_._.{callee}.mesh.svc.cluster.local",
            "DOWNSTREAM_PEER_URI_SAN": "-" if plaintext else
            f"spiffe://cluster.local/ns/mesh/sa/{caller}",
            "DOWNSTREAM_LOCAL_URI_SAN": f"spiffe://cluster.local/ns/mesh/sa/{callee}",
            "DOWNSTREAM_TLS_VERSION": "-" if plaintext else "TLSv1.3",
            "ENVIRONMENT(POD_NAME)": callee_pod, "ENVIRONMENT(POD_NAMESPACE)": "mesh",
        })
    else:
        base.update({
            "UPSTREAM_CLUSTER_RAW": f"outbound|9080||{callee}.mesh.svc.cluster.local",
            "UPSTREAM_PEER_URI_SAN": f"spiffe://cluster.local/ns/mesh/sa/{callee}",
            "ENVIRONMENT(POD_NAME)": caller_pod, "ENVIRONMENT(POD_NAMESPACE)": "mesh",
        })
    return base


def _ztunnel(values: dict[str, str], rng: random.Random) -> bytes:
    inbound = values["UPSTREAM_CLUSTER_RAW"].startswith("inbound")
    src = values["DOWNSTREAM_REMOTE_ADDRESS"]
    return (f"{values['START_TIME'][:-1]}000Z\tinfo\taccess\tconnection complete\t"
            f'src.addr={src} src.workload="{values["ENVIRONMENT(POD_NAME)"]}" '
            f'src.namespace="mesh" src.identity="spiffe://cluster.local/ns/mesh/sa/x" '
            f"dst.addr={values['UPSTREAM_HOST'].split(':')[0]}:15008 "
            f'dst.hbone_addr="{values["UPSTREAM_HOST"]}" '
            f'dst.service="{values["REQ(:AUTHORITY)"].split(":")[0]}.mesh.svc.cluster.local" '
            f'dst.workload="x-v1-87d54dd59-x8k4d" dst.namespace="mesh" '
            f'direction="{"inbound" if inbound else "outbound"}" '
            f"bytes_sent={rng.randrange(10000)} bytes_recv={rng.randrange(1000)} "
            f'duration="{rng.randrange(50)}ms"').encode()


def _span_batches(count: int, per_batch: int) -> tuple[list[bytes], list[bytes]]:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from tests.ingest.otlp_helpers import MS, T0, Mesh, otlp_json

    mesh = Mesh()
    tracers = [mesh.tracer(name, **{"k8s.namespace.name": "mesh"}) for name in SERVICES[:10]]
    attrs = {"http.request.method": "GET", "server.address": "svc.mesh", "server.port": 9080,
             "http.response.status_code": 200, "network.protocol.version": "1.1"}
    for i in range(count // 2):
        mesh.call(tracers[i % 10], tracers[(i + 1) % 10], start=T0 + i * MS,
                  client_attrs=attrs, server_attrs={**attrs, "client.address": "10.1.1.1"})
    spans = mesh.spans()
    batches = [spans[i:i + per_batch] for i in range(0, len(spans), per_batch)]
    return ([encode_spans(b).SerializeToString() for b in batches],
            [otlp_json(encode_spans(b)) for b in batches])


def _otlp_logs(lines: list[bytes], per_batch: int) -> list[bytes]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    out = []
    for i in range(0, len(lines), per_batch):
        message = ExportLogsServiceRequest()
        records = message.resource_logs.add().scope_logs.add()
        for line in lines[i:i + per_batch]:
            records.log_records.add().body.string_value = line.decode()
        out.append(message.SerializeToString())
    return out


def measure(name: str, payloads: list[bytes], records: int, repeat: int,
            options: dict | None = None) -> float:
    """Best records/s over ``repeat`` runs of a fresh parser (flush included)."""
    origin = Origin("bench", 0)
    best = 0.0
    events = 0
    for _ in range(repeat):
        parser = make_parser(name, **(options or {}))
        parse: Callable = parser.parse
        started = time.process_time()
        events = 0
        for payload in payloads:
            for item in parse(payload, origin):
                events += isinstance(item, EdgeEvent)
        events += len(parser.flush(None))
        best = max(best, records / (time.process_time() - started))
    assert events > 0, f"{name}: no events"
    return best


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("--records", type=int, default=5000)
    cli.add_argument("--repeat", type=int, default=5)
    args = cli.parse_args()
    rng = random.Random(7)
    values = [_values(rng, i) for i in range(args.records)]
    meshwatch_text = [render(MESHWATCH_TEXT_FORMAT, v) for v in values]
    istio_text = [render(ISTIO_DEFAULT_TEXT_FORMAT, v) for v in values]
    envoy_text = [render(ENVOY_DEFAULT_FORMAT, v) for v in values]
    spans_proto, spans_json = _span_batches(args.records, 100)
    n = args.records
    cases = [
        ("envoy-text (meshwatch format)", "envoy-text", meshwatch_text, n, None),
        ("envoy-text (Istio default)", "envoy-text", istio_text, n, None),
        ("envoy-text (Envoy default)", "envoy-text", envoy_text, n, None),
        ("envoy-text (format_string set)", "envoy-text", istio_text, n,
         {"format_string": ISTIO_DEFAULT_TEXT_FORMAT}),
        ("envoy-json (typed, null)", "envoy-json", [json_record(v) for v in values], n, None),
        ("envoy-json (strings, '-')", "envoy-json",
         [json_record(v, typed=False) for v in values], n, None),
        ("otlp-log (Istio TEXT body, 100/request)", "otlp-log",
         _otlp_logs(istio_text, 100), n, None),
        ("otlp-proto (spans, 100/request)", "otlp-proto", spans_proto, n, None),
        ("otlp-json (spans, 100/request)", "otlp-json", spans_json, n, None),
        ("ztunnel", "ztunnel", [_ztunnel(v, rng) for v in values], n, None),
        ("auto (meshwatch TEXT)", "auto", meshwatch_text, n, None),
        ("auto (envoy JSON)", "auto", [json_record(v) for v in values], n, None),
    ]
    print(f"{'format':44} {'records/s':>12}")
    for label, name, payloads, count, options in cases:
        rate = measure(name, payloads, count, args.repeat, options)
        print(f"{label:44} {rate:12,.0f}")


if __name__ == "__main__":
    main()
