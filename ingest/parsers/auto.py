"""``auto``: decide the format per record, then hand it to the one parser instance for it.

Sniffing is byte-level and cheap (no decoding twice): a JSON object is OTLP spans, OTLP logs,
ztunnel or Envoy JSON by its top-level keys; a line starting with ``[`` is Envoy TEXT; a
ztunnel-shaped line is ztunnel; binary bytes are OTLP protobuf (spans, or logs when they look
like logs). The span parsers share one pairing store, so a CLIENT span that came as protobuf
still pairs with its SERVER span that came as JSON.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from ingest.parsers.base import PARSERS, ParseResult
from ingest.parsers.common import RecordError, guarded
from ingest.parsers.envoy_json import EnvoyJsonParser
from ingest.parsers.envoy_text import EnvoyTextParser
from ingest.parsers.otlp_log import OtlpLogParser
from ingest.parsers.otlp_spans import OtlpJsonParser, OtlpProtoParser, looks_like_logs
from ingest.parsers.ztunnel import ZtunnelParser, looks_like_ztunnel
from meshwatch.records import Origin

# A key is a string followed by ':'; a string value never is, so these cannot be faked by a
# header value that happens to read "resourceSpans".
_JSON_KEY = re.compile(rb'"(resourceSpans|resource_spans|resourceLogs|resource_logs|src\.addr|'
                       rb'dst\.addr)"\s*:|"(?:src|dst)"\s*:\s*\{')
_JSON_KINDS = {b"resourceSpans": "otlp-json", b"resource_spans": "otlp-json",
               b"resourceLogs": "otlp-log", b"resource_logs": "otlp-log"}
_TEXT_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def sniff(payload: bytes) -> str | None:
    """The format name one record looks like, or None.

    >>> sniff(b'{"resourceSpans": []}'), sniff(b'[2020-11-25T21:26:18.409Z] "GET / HTTP/1.1"')
    ('otlp-json', 'envoy-text')
    >>> sniff(b'\\x0a\\x10\\x0a\\x0e'), sniff(b'hello')
    ('otlp-proto', None)
    """
    # OTLP protobuf starts with field 1's tag, 0x0a; no text record starts with a newline
    # (lines are split on it), so never strip it and mistake the length byte for '{'.
    head = b"\n" if payload[:1] == b"\n" else payload.lstrip(b" \t\r")[:1]
    if head == b"{":
        key = _JSON_KEY.search(payload)  # one scan; a record holds keys of one kind only
        if key is None:
            return "envoy-json"
        return _JSON_KINDS.get(key.group(1) or b"", "ztunnel")
    if head == b"[":
        return "envoy-text"
    if looks_like_ztunnel(payload):
        return "ztunnel"
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return "otlp-proto"
    if head == b"\n" or _TEXT_CONTROL.search(payload[:256]):
        return "otlp-proto"
    return None


@PARSERS.register("auto")
class AutoParser:
    """Any supported format, decided per record (mixed topics, files of unknown format).

    >>> p = AutoParser()
    >>> [e] = p.parse(b'[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 '
    ...     b'226 100 "10.0.35.28" "nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" '
    ...     b'"locations" "tcp://10.0.2.1:80"', Origin("mixed", 1))
    >>> e.origin, e.reporter, e.destination_service
    ('envoy_text', 'unknown', 'locations')
    >>> p.parse(b"hello world", Origin("mixed", 2))[0].reason
    'unknown format: not JSON, not an Envoy TEXT line, not a ztunnel line, not protobuf'
    """

    name: ClassVar[str] = "auto"

    def __init__(self, format_string: str | None = None,
                 json_format: dict[str, str] | None = None, pairing_ttl: float = 10.0,
                 max_pending: int = 100_000) -> None:
        self.format_string = format_string
        self.json_format = json_format
        self.pairing_ttl = pairing_ttl
        self.max_pending = max_pending
        self.text = EnvoyTextParser(format_string)
        self.json = EnvoyJsonParser(json_format)
        self.log = OtlpLogParser(format_string, json_format)
        self.ztunnel = ZtunnelParser()
        self.proto = OtlpProtoParser(pairing_ttl, max_pending)
        self.otlp_json = OtlpJsonParser(pairing_ttl, max_pending)
        self.otlp_json.pairer = self.proto.pairer  # one pairing store for both encodings
        self.custom_text = format_string is not None

    def _route(self, payload: bytes) -> Any:
        fmt = sniff(payload)
        if fmt == "otlp-json":
            return self.otlp_json
        if fmt == "otlp-log":
            return self.log
        if fmt == "ztunnel":
            return self.ztunnel
        if fmt == "envoy-json":
            return self.json
        if fmt == "envoy-text":
            return self.text
        if fmt == "otlp-proto":
            return self.log if looks_like_logs(payload) else self.proto
        if self.custom_text:  # a configured format need not start with '['
            return self.text
        return None

    @guarded
    def parse(self, payload: bytes, origin: Origin) -> ParseResult:
        if not payload.strip():
            raise RecordError("empty record")
        parser = self._route(payload)
        if parser is None:
            raise RecordError("unknown format: not JSON, not an Envoy TEXT line, not a ztunnel "
                              "line, not protobuf")
        return parser.parse(payload, origin)

    def flush(self, now: float | None = None) -> ParseResult:
        return self.proto.flush(now)  # the one pairing store; the others hold nothing

    @property
    def skipped(self) -> int:
        return self.proto.skipped + self.otlp_json.skipped + self.ztunnel.skipped
