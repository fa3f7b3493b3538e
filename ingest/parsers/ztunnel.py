"""Istio ambient ztunnel L4 access logs (``ztunnel``), text or JSON.

ztunnel logs one ``connection complete`` line per proxied TCP connection::

    2024-05-03T16:53:43.372364Z  info  access  connection complete  src.addr=10.244.1.5:46632
    src.workload="sleep-7656cf8794-8nnlk" ... direction="inbound" bytes_sent=1839
    bytes_recv=81 duration="2ms"

(tab separated; keys quoted or bare). With ``--log-format json`` the same keys appear in a
JSON object, flat (``"src.addr"``), nested (``{"src": {"addr": ...}}``) or under ``fields``.

Mapping choices:
- ``direction="inbound"``: the destination's ztunnel reported; ``src.identity`` present means
  the caller came over HBONE mTLS (``mtls`` True), absent means plaintext into the mesh
  (False). ``outbound``: the caller's ztunnel; ``mtls`` None (DESIGN.md: a source cannot know).
- Bytes: ztunnel counts like Istio's TCP metrics, from its downstream's view: ``bytes_recv``
  is what the caller sent (the request direction), ``bytes_sent`` what went back to it. So
  ``EdgeEvent.bytes_sent = bytes_recv`` and ``bytes_received = bytes_sent``.
- ``ts`` is the connection start: the log time (written at close) minus ``duration``.
- ``src.workload``/``dst.workload`` are pod names; the workload is the owning Deployment etc.
- ``error="..."`` goes to ``response_flags`` (there is no response code at L4).
- ``destination_port`` is the application port (``dst.hbone_addr``), not HBONE's 15008.
- ``connection opened`` lines (debug level) and non-access lines are counted in ``skipped``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, ClassVar

import msgspec

from ingest.identity import (
    fqdn_namespace,
    normalize_principal,
    principal_namespace,
    split_host_port,
    workload_from_pod,
)
from ingest.parsers.base import PARSERS, ParseResult
from ingest.parsers.common import RecordError, check_ts, decode_utf8, guarded
from ingest.parsers.envoy_fields import to_int, to_time
from meshwatch.records import EdgeEvent, Origin

_HEAD = re.compile(r"^(\d{4}-\d\d-\d\dT\S+)\s+([A-Za-z]+)\s+(\S+)\s+(.*?)\s*(?=[A-Za-z_][\w.]*=|$)")
_PAIR = re.compile(r'([A-Za-z_][\w.]*)=(?:"([^"\\]*+(?:\\.[^"\\]*+)*+)"|(\S*))')
_ESCAPE = re.compile(r"\\(.)")
_DURATION = re.compile(r"^\s*([\d.]+)\s*(ns|µs|us|ms|s|m|h)?\s*$")
_UNIT_MS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6,
            None: 1.0}
_HBONE_PORT = 15008
_decode_json = msgspec.json.Decoder().decode

ZTUNNEL_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\S+\s+[A-Za-z]+\s+\S+\s.*\b(?:src|dst)\.addr=")
ZTUNNEL_JSON_KEY = re.compile(rb'"(?:src\.addr|dst\.addr)"\s*:|"(?:src|dst)"\s*:\s*\{')


def looks_like_ztunnel(payload: bytes) -> bool:
    """A cheap sniff for the ``auto`` parser: a ztunnel access line or JSON object."""
    head = payload[:4096]
    if head.lstrip()[:1] == b"{":
        return ZTUNNEL_JSON_KEY.search(head) is not None
    return ZTUNNEL_LINE.match(head) is not None


def duration_ms(text: Any) -> float:
    """Milliseconds from a Rust ``Duration`` debug string (``2ms``, ``1.5s``, ``340µs``)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    match = _DURATION.match(str(text))
    if match is None:
        raise RecordError(f"key 'duration': expected a duration like '2ms', got {str(text)!r}")
    try:
        return float(match.group(1)) * _UNIT_MS[match.group(2)]
    except ValueError:
        raise RecordError(f"key 'duration': expected a duration like '2ms', got {text!r}"
                          ) from None


def _flatten(obj: dict[str, Any], prefix: str = "", out: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    out = {} if out is None else out
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _flatten(value, "" if key == "fields" else name + ".", out)
        else:
            out[name] = value
    return out


@PARSERS.register("ztunnel")
class ZtunnelParser:
    """Istio ambient ztunnel access logs (text or JSON) -> L4 edge events.

    >>> line = (b'2024-05-03T16:53:43.372364Z\\tinfo\\taccess\\tconnection complete\\t'
    ...   b'src.addr=10.244.1.5:46632 src.workload="sleep-7656cf8794-8nnlk" '
    ...   b'src.namespace="default" src.identity="spiffe://cluster.local/ns/default/sa/sleep" '
    ...   b'dst.addr=10.244.2.8:15008 dst.hbone_addr="10.244.2.8:9080" '
    ...   b'dst.service="productpage.default.svc.cluster.local" '
    ...   b'dst.workload="productpage-v1-87d54dd59-x8k4d" dst.namespace="default" '
    ...   b'direction="inbound" bytes_sent=1839 bytes_recv=81 duration="2ms"')
    >>> [e] = ZtunnelParser().parse(line, Origin("ztunnel.log", 1))
    >>> e.reporter, e.mtls, e.source_workload, e.destination_workload, e.destination_port
    ('destination', True, 'sleep', 'productpage-v1', 9080)
    >>> e.bytes_sent, e.bytes_received, e.ts.isoformat()
    (81, 1839, '2024-05-03T16:53:43.370364+00:00')
    """

    name: ClassVar[str] = "ztunnel"
    origin: ClassVar[str] = "ztunnel"

    def __init__(self, *, trust_domain: str = "cluster.local") -> None:
        self.trust_domain = trust_domain
        self.skipped = 0

    @guarded
    def parse(self, payload: bytes, origin: Origin) -> ParseResult:
        if payload.lstrip()[:1] == b"{":
            fields = self._json_fields(payload)
        else:
            fields = self._text_fields(decode_utf8(payload).rstrip("\r\n"))
        if fields is None:
            self.skipped += 1
            return []
        return [self._event(fields)]

    def flush(self, now: float | None = None) -> ParseResult:
        return []

    def _text_fields(self, line: str) -> dict[str, Any] | None:
        if not line.strip():
            raise RecordError("empty record")
        parts = line.split("\t", 4)
        if len(parts) == 5 and parts[0][:1].isdigit():  # ztunnel's own tab-separated layout
            timestamp, level, target, message, rest = parts
        else:  # copied/reformatted with spaces
            head = _HEAD.match(line)
            if head is None:
                raise RecordError("not a ztunnel log line (expected 'TIMESTAMP LEVEL TARGET "
                                  "MESSAGE key=value ...')")
            timestamp, level, target, message = head.groups()
            rest = line[head.end():]
        if target != "access" or "opened" in message:
            return None
        fields: dict[str, Any] = {"time": timestamp, "level": level, "message": message}
        for key, quoted, bare in _PAIR.findall(rest):
            if quoted:
                fields[key] = _ESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted
            else:
                fields[key] = bare
        if not any(k.startswith(("src.", "dst.")) for k in fields):
            raise RecordError("ztunnel access line has no src.*/dst.* fields")
        return fields

    def _json_fields(self, payload: bytes) -> dict[str, Any] | None:
        try:
            doc = _decode_json(payload)
        except msgspec.DecodeError as exc:
            raise RecordError(f"invalid JSON: {exc}") from None
        except UnicodeDecodeError as exc:
            raise RecordError(f"invalid JSON: invalid UTF-8 at byte {exc.start}") from None
        if not isinstance(doc, dict):
            raise RecordError("JSON value is not an object")
        fields = _flatten(doc)
        target = fields.get("scope") or fields.get("target")
        message = str(fields.get("message") or fields.get("msg") or "")
        if (target is not None and target != "access") or "opened" in message:
            return None
        if not any(k.startswith(("src.", "dst.")) for k in fields):
            raise RecordError("JSON object has no ztunnel src.*/dst.* keys")
        fields.setdefault("time", fields.get("timestamp") or fields.get("ts"))
        return fields

    def _event(self, f: dict[str, Any]) -> EdgeEvent:
        get = f.get
        if not get("time"):
            raise RecordError("ztunnel record has no timestamp")
        end = check_ts(to_time(get("time"), "key 'time'"))
        duration = duration_ms(get("duration")) if get("duration") not in (None, "") else None
        start = end - timedelta(milliseconds=duration) if duration else end
        check_ts(start)
        direction = str(get("direction") or "").lower()
        src_principal = normalize_principal(_str(get("src.identity")), self.trust_domain)
        dst_principal = normalize_principal(_str(get("dst.identity")), self.trust_domain)
        if direction == "inbound":
            reporter, mtls = "destination", src_principal is not None
        elif direction == "outbound":
            reporter, mtls = "source", None
        else:
            reporter, mtls = "unknown", None
        service = _str(get("dst.service"))
        port = split_host_port(_str(get("dst.hbone_addr")))[1]
        if port is None:
            port = split_host_port(_str(get("dst.addr")))[1]
            if port == _HBONE_PORT:
                port = None
        return EdgeEvent(
            ts=start, origin="ztunnel", reporter=reporter,  # type: ignore[arg-type]
            source_workload=workload_from_pod(_str(get("src.workload"))),
            source_namespace=_str(get("src.namespace")) or principal_namespace(src_principal),
            source_principal=src_principal,
            source_address=split_host_port(_str(get("src.addr")))[0],
            destination_service=service,
            destination_workload=workload_from_pod(_str(get("dst.workload"))),
            destination_namespace=_str(get("dst.namespace")) or fqdn_namespace(service)
            or principal_namespace(dst_principal),
            destination_principal=dst_principal,
            destination_port=port,
            protocol="tcp",
            response_flags=_str(get("error")),
            bytes_sent=_bytes(get("bytes_recv"), "bytes_recv"),
            bytes_received=_bytes(get("bytes_sent"), "bytes_sent"),
            duration_ms=duration,
            mtls=mtls,
        )


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text and text != "-" else None


def _bytes(value: Any, key: str) -> int | None:
    if value is None or value == "":
        return None
    return to_int(value, f"key {key!r}")
