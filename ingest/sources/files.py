"""Records from files or stdin: the embedded mode's source and `meshwatch parse`'s input.

Framing depends on the format:

- line formats (``envoy-text``, ``envoy-json``, ``ztunnel``): one record per non-empty line,
  the offset is the 1-based line number. Bytes are kept as they are (CRLF endings are
  stripped; invalid UTF-8 is the parser's to reject, with a reason).
- JSON documents (``otlp-json``, ``otlp-log``, ``envoy-json``, ``auto``): a file holding ONE
  (pretty-printed) JSON document, like OTLP's ``trace.json`` example, is one record (offset 1);
  otherwise JSON lines.
- ``otlp-proto`` (and binary ``otlp-log``/``auto`` files): varint-length-delimited messages
  (protobuf's ``writeDelimitedTo`` framing, what the simulator writes), offsets 1, 2, ...;
  when that framing does not consume the file exactly, the whole file is one message.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from meshwatch.records import Origin, RawRecord

DOCUMENT_FORMATS = frozenset({"otlp-json", "otlp-log", "envoy-json", "auto"})
BINARY_FORMATS = frozenset({"otlp-proto", "otlp-log", "auto"})
STDIN = "-"
_SNIFF = 512
_CONTROL = frozenset(range(0x00, 0x09)) | frozenset(range(0x0e, 0x20)) | {0x0b, 0x7f}


class SourceError(OSError):
    """A source that cannot be read; ``str()`` names it, ``strerror`` says why.

    An `OSError`, so callers that already handle I/O errors handle this one too.
    """

    def __init__(self, source: str | Path, reason: str) -> None:
        super().__init__(reason)
        self.filename = str(source)
        self.strerror = reason

    def __str__(self) -> str:
        return f"cannot read {self.filename}: {self.strerror}"


def read_records(path: Path | str, format_name: str) -> Iterator[RawRecord]:
    """Open ``path`` (``-`` for stdin) now, and return an iterator over its records.

    Opening is eager so a missing or unreadable file fails here, with `SourceError` naming it,
    not at the first ``next()``.
    """
    if str(path) == STDIN:
        return _records(sys.stdin.buffer, "<stdin>", format_name, close=False)
    return _records(_open(path), str(path), format_name, close=True)


def check_readable(path: Path | str) -> None:
    """Raise `SourceError` unless ``path`` (or ``-``) can be read; opens nothing for long."""
    if str(path) != STDIN:
        _open(path).close()


def _open(path: Path | str) -> BinaryIO:
    try:
        return open(path, "rb")  # the caller closes it
    except FileNotFoundError:
        raise SourceError(path, "no such file") from None
    except IsADirectoryError:
        raise SourceError(path, "it is a directory") from None
    except OSError as exc:
        raise SourceError(path, exc.strerror or str(exc)) from None


def _records(stream: BinaryIO, source: str, format_name: str, close: bool
             ) -> Iterator[RawRecord]:
    try:
        yield from _frame(stream, source, format_name)
    except SourceError:
        raise
    except OSError as exc:
        raise SourceError(source, exc.strerror or str(exc)) from None
    finally:
        if close:
            stream.close()


def _frame(stream: BinaryIO, source: str, format_name: str) -> Iterator[RawRecord]:
    if format_name == "otlp-proto":
        yield from _messages(stream.read(), source, format_name)
        return
    if format_name not in DOCUMENT_FORMATS | BINARY_FORMATS:
        yield from _lines(stream, source, format_name)
        return
    head = stream.read(_SNIFF)
    if format_name in BINARY_FORMATS and is_binary(head):
        yield from _messages(head + stream.read(), source, format_name)
        return
    lines = _prefixed_lines(head, stream)
    leading: list[bytes] = []
    for line in lines:
        leading.append(line)
        if line.strip():
            break
    first = leading[-1] if leading else b""
    if first.lstrip()[:1] == b"{" and not _is_json(first):
        # The first line is not a whole JSON value: one (pretty-printed) document. If the
        # whole file does not parse either, it is still one record when it opens like a
        # pretty-printed document ('{' alone), else JSON lines with a bad first line.
        whole = b"".join(leading) + b"".join(lines)
        if _is_json(whole) or first.strip() == b"{":
            yield RawRecord(whole.strip(), Origin(source, len(leading)), format_name)
            return
        yield from _lines(whole.splitlines(keepends=True), source, format_name)
        return
    yield from _lines(_chain(leading, lines), source, format_name)


def _prefixed_lines(head: bytes, stream: BinaryIO) -> Iterator[bytes]:
    """The stream's lines, the first ``head`` bytes of which were already read."""
    parts = head.split(b"\n")
    for part in parts[:-1]:
        yield part + b"\n"
    if parts[-1]:
        yield parts[-1] + stream.readline()
    yield from stream


def _chain(first: list[bytes], rest: Iterable[bytes]) -> Iterator[bytes]:
    yield from first
    yield from rest


def _lines(lines: Iterable[bytes], source: str, format_name: str) -> Iterator[RawRecord]:
    for number, line in enumerate(lines, 1):
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield RawRecord(line, Origin(source, number), format_name)


def _is_json(data: bytes) -> bool:
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError:
        return False
    return True


def is_binary(head: bytes) -> bool:
    """Whether the first bytes of a file are binary (protobuf), not text.

    >>> is_binary(b"\\x0a\\x8b\\x01\\x0a\\x12"), is_binary(b'{"resourceSpans": []}\\n')
    (True, False)
    """
    head = head[:_SNIFF]
    if any(byte in _CONTROL for byte in head):
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(head) - 3  # not just a character cut at the sniff boundary
    return False


def split_delimited(data: bytes) -> list[bytes] | None:
    """Split varint-length-delimited messages; None unless the framing consumes ``data`` exactly.

    >>> split_delimited(b"\\x02ab\\x01c"), split_delimited(b"\\x05ab")
    ([b'ab', b'c'], None)
    """
    frames: list[bytes] = []
    pos, size = 0, len(data)
    while pos < size:
        length = shift = 0
        while True:
            if pos >= size or shift > 63:
                return None
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if length == 0 or pos + length > size:
            return None
        frames.append(data[pos:pos + length])
        pos += length
    return frames


def _decodes_as_otlp(message: bytes) -> bool:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    for message_type in (ExportTraceServiceRequest, ExportLogsServiceRequest):
        try:
            decoded = message_type.FromString(message)
        except DecodeError:
            continue
        if decoded.ListFields():
            return True
    return False


def _messages(data: bytes, source: str, format_name: str) -> Iterator[RawRecord]:
    if not data:
        return
    frames = split_delimited(data)
    if frames is not None and len(frames) >= 1 and not _decodes_as_otlp(frames[0]) \
            and _decodes_as_otlp(data):
        frames = None  # a bare message that happened to read as framing
    if frames is None:
        frames = [data]
    for number, frame in enumerate(frames, 1):
        yield RawRecord(frame, Origin(source, number), format_name)
