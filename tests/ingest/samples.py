"""Realistic access-log records in the real formats, rendered from the format strings.

``render`` fills an Envoy format string with values by operator label (``RESPONSE_CODE``,
``REQ(:METHOD)``...), so a sample always matches the format the parsers are given. Unset
operators print ``-``, as Envoy does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from ingest.parsers.envoy_format import Command, tokenize
from meshwatch.formats import MESHWATCH_JSON_FORMAT, MESHWATCH_TEXT_FORMAT

DATA = Path(__file__).resolve().parents[1] / "data"
ISTIO_OUTBOUND, ISTIO_INBOUND = (DATA / "istio_text_sidecar_pair.log").read_bytes().splitlines()
ENVOY_DEFAULT = (DATA / "envoy_default_format.log").read_bytes().strip()
TRACE_JSON = (DATA / "trace.json").read_bytes()
LOGS_JSON = (DATA / "logs.json").read_bytes()

# One request productpage -> reviews in the bookinfo namespace, both sidecars' view.
INBOUND: dict[str, str] = {
    "START_TIME": "2024-05-01T10:00:00.123Z",
    "REQ(:METHOD)": "GET",
    "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)": "/reviews/0",
    "PROTOCOL": "HTTP/1.1",
    "RESPONSE_CODE": "200",
    "RESPONSE_CODE_DETAILS": "via_upstream",
    "BYTES_RECEIVED": "0",
    "BYTES_SENT": "358",
    "DURATION": "12",
    "RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)": "11",
    "REQ(USER-AGENT)": "Mozilla/5.0 (X11; Linux x86_64) \"quoted\" part",
    "REQ(X-REQUEST-ID)": "6a1c3b5e-1f0e-4d3c-9b8a-7e6f5d4c3b2a",
    "REQ(:AUTHORITY)": "reviews:9080",
    "UPSTREAM_HOST": "10.244.2.9:9080",
    "UPSTREAM_CLUSTER_RAW": "inbound|9080||",
    "UPSTREAM_LOCAL_ADDRESS": "127.0.0.6:51733",
    "DOWNSTREAM_LOCAL_ADDRESS": "10.244.2.9:9080",
    "DOWNSTREAM_REMOTE_ADDRESS": "10.244.1.5:46632",
    "REQUESTED_SERVER_NAME": "outbound_.9080_._.reviews.bookinfo.svc.cluster.local",
    "ROUTE_NAME": "default",
    "DOWNSTREAM_PEER_URI_SAN": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage",
    "DOWNSTREAM_LOCAL_URI_SAN": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
    "DOWNSTREAM_TLS_VERSION": "TLSv1.3",
    "DOWNSTREAM_PEER_CERT_V_END": "2024-05-02T09:12:33.000Z",
    "ENVIRONMENT(POD_NAME)": "reviews-v2-5b667bcbf8-xj7vd",
    "ENVIRONMENT(POD_NAMESPACE)": "bookinfo",
}
OUTBOUND: dict[str, str] = {
    **INBOUND,
    "DURATION": "14",
    "UPSTREAM_HOST": "10.244.2.9:9080",
    "UPSTREAM_CLUSTER_RAW": "outbound|9080||reviews.bookinfo.svc.cluster.local",
    "UPSTREAM_LOCAL_ADDRESS": "10.244.1.5:46632",
    "DOWNSTREAM_LOCAL_ADDRESS": "10.96.12.7:9080",
    "DOWNSTREAM_REMOTE_ADDRESS": "10.244.1.5:52100",
    "REQUESTED_SERVER_NAME": "-",
    "DOWNSTREAM_PEER_URI_SAN": "-",
    "DOWNSTREAM_LOCAL_URI_SAN": "-",
    "UPSTREAM_PEER_URI_SAN": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
    "DOWNSTREAM_TLS_VERSION": "-",
    "DOWNSTREAM_PEER_CERT_V_END": "-",
    "ENVIRONMENT(POD_NAME)": "productpage-v1-87d54dd59-x8k4d",
}
# The same inbound call from a caller outside the mesh: no certificate, no Istio SNI.
PLAINTEXT_INBOUND: dict[str, str] = {
    **INBOUND,
    "DOWNSTREAM_REMOTE_ADDRESS": "10.244.3.77:40112",
    "REQUESTED_SERVER_NAME": "-",
    "DOWNSTREAM_PEER_URI_SAN": "-",
    "DOWNSTREAM_TLS_VERSION": "-",
    "DOWNSTREAM_PEER_CERT_V_END": "-",
}

# Istio ambient ztunnel access lines (the format of Istio's ambient docs).
ZTUNNEL_INBOUND = (
    "2024-05-03T16:53:43.372364Z\tinfo\taccess\tconnection complete\t"
    'src.addr=10.244.1.5:46632 src.workload="sleep-7656cf8794-8nnlk" src.namespace="default" '
    'src.identity="spiffe://cluster.local/ns/default/sa/sleep" dst.addr=10.244.2.8:15008 '
    'dst.hbone_addr="10.244.2.8:9080" dst.service="productpage.default.svc.cluster.local" '
    'dst.workload="productpage-v1-87d54dd59-x8k4d" dst.namespace="default" '
    'dst.identity="spiffe://cluster.local/ns/default/sa/bookinfo-productpage" '
    'direction="inbound" bytes_sent=1839 bytes_recv=81 duration="2ms"'
)
ZTUNNEL_OUTBOUND = (
    "2024-05-03T16:53:43.372364Z\tinfo\taccess\tconnection complete\t"
    "src.addr=10.244.1.5:46632 src.workload=sleep-7656cf8794-8nnlk src.namespace=default "
    "src.identity=spiffe://cluster.local/ns/default/sa/sleep dst.addr=10.244.2.8:15008 "
    "dst.hbone_addr=10.244.2.8:9080 dst.service=productpage.default.svc.cluster.local "
    "dst.workload=productpage-v1-87d54dd59-x8k4d dst.namespace=default "
    "dst.identity=spiffe://cluster.local/ns/default/sa/bookinfo-productpage "
    "direction=outbound bytes_sent=81 bytes_recv=1839 duration=2.5ms"
)
ZTUNNEL_ERROR = (
    "2024-05-03T16:53:44.100000Z\terror\taccess\tconnection complete\t"
    'src.addr=10.244.1.5:46640 src.workload="sleep-7656cf8794-8nnlk" src.namespace="default" '
    'src.identity="spiffe://cluster.local/ns/default/sa/sleep" dst.addr=10.244.2.9:15008 '
    'dst.hbone_addr="10.244.2.9:3306" dst.service="mysql.db.svc.cluster.local" '
    'dst.workload="mysql-0" dst.namespace="db" direction="inbound" bytes_sent=0 bytes_recv=0 '
    'duration="0ms" error="connection closed due to policy rejection: explicitly denied by: '
    'db/deny-sleep"'
)
ZTUNNEL_PLAINTEXT = (
    "2024-05-03T16:53:43.372364Z  info  access  connection complete  "
    "src.addr=10.244.9.9:55555 dst.addr=10.244.2.8:9080 "
    'dst.service="productpage.default.svc.cluster.local" dst.workload="productpage-v1-87d54dd59'
    '-x8k4d" dst.namespace="default" direction="inbound" bytes_sent=10 bytes_recv=20 '
    'duration="1.5s"'
)



def render(format_string: str, values: dict[str, str]) -> bytes:
    """One access-log line in ``format_string`` with ``values`` by operator label."""
    out = []
    for token in tokenize(format_string.rstrip("\n")):
        if isinstance(token, Command):
            out.append(values.get(token.label, "-"))
        else:
            out.append(token)
    return "".join(out).encode()


def text_line(values: dict[str, str], format_string: str = MESHWATCH_TEXT_FORMAT) -> bytes:
    return render(format_string, values)


_INT_OPERATORS = {"RESPONSE_CODE", "BYTES_RECEIVED", "BYTES_SENT", "DURATION"}


def json_record(values: dict[str, str], typed: bool = True,
                json_format: dict[str, str] | None = None) -> bytes:
    """A JSON access-log record: typed numbers and nulls (newer Envoy) or all strings and "-"."""
    doc: dict[str, Any] = {}
    for key, operator in (json_format or MESHWATCH_JSON_FORMAT).items():
        label = operator.strip("%")
        value: Any = values.get(label, "-")
        if typed:
            if value == "-":
                value = None
            elif label in _INT_OPERATORS:
                value = int(value)
        doc[key] = value
    return msgspec.json.encode(doc)
