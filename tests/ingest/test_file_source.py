"""ingest.sources.files: framing per format, offsets, stdin, errors."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from ingest.sources.files import SourceError, read_records, split_delimited
from tests.ingest.otlp_helpers import Mesh, delimited, otlp_json, proto_bytes
from tests.ingest.samples import ISTIO_INBOUND, ISTIO_OUTBOUND, LOGS_JSON, TRACE_JSON


def records(path: Path | str, fmt: str) -> list[tuple[int, bytes]]:
    return [(r.origin.offset, r.payload) for r in read_records(path, fmt)]


def test_lines_keep_bytes_skip_blank_lines_and_count_from_one(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_bytes(ISTIO_OUTBOUND + b"\r\n\n   \n" + b"bad \xff line\n" + ISTIO_INBOUND)
    assert records(path, "envoy-text") == [(1, ISTIO_OUTBOUND), (4, b"bad \xff line"),
                                          (5, ISTIO_INBOUND)]
    [record] = list(read_records(path, "envoy-text"))[:1]
    assert (record.origin.source, record.format) == (str(path), "envoy-text")


def test_one_pretty_printed_json_document_is_one_record(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    path.write_bytes(b"\n" + TRACE_JSON)
    for fmt in ("otlp-json", "auto"):
        [(offset, payload)] = records(path, fmt)
        assert (offset, payload) == (2, TRACE_JSON.strip())
    path.write_bytes(LOGS_JSON)
    assert len(records(path, "otlp-log")) == 1


def test_json_lines_are_one_record_per_line(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    doc = TRACE_JSON.replace(b"\n", b"")
    path.write_bytes(doc + b"\n" + doc + b"\n")
    assert [offset for offset, _ in records(path, "otlp-json")] == [1, 2]


def test_a_broken_pretty_document_is_one_record_for_the_parser_to_reject(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(TRACE_JSON[:300])
    [(offset, payload)] = records(path, "otlp-json")
    assert (offset, payload) == (1, TRACE_JSON[:300].strip())


def test_delimited_protobuf_messages(tmp_path: Path) -> None:
    mesh = Mesh()
    mesh.call(mesh.tracer("web"), mesh.tracer("cart"))
    messages = [proto_bytes([span]) for span in mesh.spans()]
    path = tmp_path / "spans.bin"
    path.write_bytes(delimited(messages))
    for fmt in ("otlp-proto", "auto"):
        assert records(path, fmt) == [(1, messages[0]), (2, messages[1])]


def test_a_bare_protobuf_message_is_one_record(tmp_path: Path) -> None:
    mesh = Mesh()
    mesh.call(mesh.tracer("web"), mesh.tracer("cart"))
    message = proto_bytes(mesh.spans())
    path = tmp_path / "spans.pb"
    path.write_bytes(message)
    assert records(path, "otlp-proto") == [(1, message)]


def test_split_delimited_requires_exact_framing() -> None:
    assert split_delimited(delimited([b"a" * 300, b"b"])) == [b"a" * 300, b"b"]
    assert split_delimited(b"\x05abc") is None
    assert split_delimited(b"\x80") is None
    assert split_delimited(b"\x00") is None


def test_otlp_json_of_spans_in_an_auto_file(tmp_path: Path) -> None:
    mesh = Mesh()
    mesh.call(mesh.tracer("web"), None)
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    path = tmp_path / "one.json"
    path.write_bytes(otlp_json(encode_spans(mesh.spans())))
    assert len(records(path, "auto")) == 1


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(ISTIO_OUTBOUND + b"\n" + ISTIO_INBOUND + b"\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert [(r.origin.source, r.origin.offset) for r in read_records("-", "auto")] == [
        ("<stdin>", 1), ("<stdin>", 2)]


def test_missing_file_and_directory_raise_naming_them(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"cannot read .*nope\.log: no such file"):
        read_records(tmp_path / "nope.log", "envoy-text")
    with pytest.raises(SourceError, match="it is a directory") as caught:
        read_records(tmp_path, "auto")
    assert isinstance(caught.value, OSError)
    assert caught.value.strerror == "it is a directory"
