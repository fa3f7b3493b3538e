"""meshwatch's own EdgeEvents on Kafka (``edge-event``): the hand-off between the normalize and
detect stages when meshwatch scales out (docs/scale-out.md).

The normalize stage parses raw records once and republishes each EdgeEvent as MessagePack to a
topic keyed by source identity, so every record of one source reaches the same detect worker.
MessagePack through msgspec costs about a microsecond each way and keeps timestamps typed.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from ingest.parsers.base import PARSERS, ParseResult, StatelessParser
from ingest.parsers.common import RecordError, check_ts, guarded
from meshwatch.records import EdgeEvent, Origin

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(EdgeEvent)


def encode_event(event: EdgeEvent) -> bytes:
    """The wire form of one EdgeEvent."""
    return _ENCODER.encode(event)


@PARSERS.register("edge-event")
class EdgeEventParser(StatelessParser):
    """Decode an EdgeEvent published by meshwatch's normalize stage.

    >>> from datetime import UTC, datetime
    >>> e = EdgeEvent(ts=datetime(2026, 1, 1, tzinfo=UTC), origin="envoy_json", mtls=True,
    ...               reporter="destination")
    >>> [back] = EdgeEventParser().parse(encode_event(e), Origin("meshwatch.edges", 0, 0))
    >>> back == e
    True
    >>> EdgeEventParser().parse(b"junk", Origin("t", 1))[0].reason[:22]
    'not a meshwatch EdgeEv'
    """

    name: ClassVar[str] = "edge-event"

    @guarded
    def parse(self, payload: bytes, origin: Origin) -> ParseResult:
        try:
            event = _DECODER.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raise RecordError(f"not a meshwatch EdgeEvent (MessagePack): {exc}") from None
        check_ts(event.ts)
        if event.reporter != "destination" and event.mtls is not None:
            raise RecordError("source-side EdgeEvent claims mTLS evidence")
        return [event]
