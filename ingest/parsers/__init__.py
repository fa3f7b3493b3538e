"""Parsers, one module per format; importing this package registers them all.

- ``envoy-text`` (origin ``envoy_text``): Envoy/Istio TEXT access logs, known formats or any
  format string (`envoy_text`, compiled by `envoy_format`).
- ``envoy-json`` (``envoy_json``): Envoy/Istio JSON access logs, typed or all-string values.
- ``otlp-log`` (``otlp_log``): OTLP log records holding Envoy access logs, protobuf or JSON.
- ``otlp-proto`` / ``otlp-json`` (``otlp_span``): OTLP spans, CLIENT/SERVER pairs -> edges.
- ``ztunnel`` (``ztunnel``): Istio ambient ztunnel L4 access logs, text or JSON.
- ``auto``: any of the above, sniffed per record.
- ``edge-event``: meshwatch's own EdgeEvents republished between scale-out stages.

`envoy_fields` holds the one Envoy-record -> EdgeEvent builder they share (reporter, mTLS
evidence, identity); `common` the failure plumbing and limits.
"""

from ingest.parsers import (  # noqa: F401  - each module registers its parser
    auto,
    edge_event,
    envoy_json,
    envoy_text,
    otlp_log,
    otlp_spans,
    ztunnel,
)
from ingest.parsers.base import PARSERS, Parser, make_parser

__all__ = ["PARSERS", "Parser", "make_parser"]
