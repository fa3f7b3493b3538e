"""`meshwatch parse`: acceptance on the shared samples, exit codes, stderr format, key set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from meshwatch.cli.main import app
from meshwatch.records import EDGE_EVENT_FIELDS
from tests.ingest.otlp_helpers import Mesh, delimited, proto_bytes

DATA = Path(__file__).resolve().parents[1] / "data"
runner = CliRunner()


def run(*args: str) -> tuple[int, list[dict], str]:
    result = runner.invoke(app, ["parse", *args])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, lines, result.stderr


def test_acceptance_on_the_shared_samples() -> None:
    code, events, stderr = run(str(DATA / "istio_text_sidecar_pair.log"),
                               str(DATA / "envoy_default_format.log"), str(DATA / "trace.json"))
    assert (code, stderr) == (0, "")
    assert all(list(event) == list(EDGE_EVENT_FIELDS) for event in events)
    outbound, inbound, envoy, span = events
    assert (outbound["reporter"], outbound["mtls"]) == ("source", None)
    assert (inbound["reporter"], inbound["mtls"]) == ("destination", True)
    assert inbound["destination_service"] == "httpbin.foo.svc.cluster.local"
    assert inbound["destination_port"] == 8000
    assert (envoy["reporter"], envoy["response_code"]) == ("unknown", 204)
    assert (span["origin"], span["reporter"]) == ("otlp_span", "destination")
    assert span["destination_service"] == "my.service"
    assert span["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert inbound["ts"].startswith("2020-11-25T21:26:18.409")


def test_failures_go_to_stderr_as_file_line_reason(tmp_path: Path) -> None:
    path = tmp_path / "mixed.log"
    lines = (DATA / "istio_text_sidecar_pair.log").read_bytes().splitlines()
    path.write_bytes(lines[0] + b"\nnot an access log\n\n" + lines[1].replace(b" 418 ", b" x ")
                     + b"\n")
    code, events, stderr = run("--format", "envoy-text", str(path))
    assert code == 0 and len(events) == 1
    assert stderr.splitlines() == [
        f"{path}:2: line matches no known Envoy format; set format_string (closest, meshwatch: "
        "expected '[' at the start at column 1, found 'not an access log')",
        f"{path}:4: field 5 (RESPONSE_CODE): expected an integer, got 'x'",
    ]


def test_nothing_parsed_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "junk.log"
    path.write_text("junk\n")
    code, events, stderr = run(str(path))
    assert (code, events) == (1, [])
    assert stderr.startswith(f"{path}:1: unknown format")
    empty = tmp_path / "empty.log"
    empty.write_text("")
    assert run(str(empty))[0] == 1


def test_usage_errors_exit_2_and_name_the_problem(tmp_path: Path) -> None:
    code, _, stderr = run(str(tmp_path / "missing.log"))
    assert code == 2 and f"cannot read {tmp_path / 'missing.log'}: no such file" in stderr
    code, _, stderr = run("--format", "envoy-xml", str(DATA / "trace.json"))
    assert code == 2 and "unknown format 'envoy-xml'" in stderr
    code, _, stderr = run("--format-string", "%START_TIME% %BOGUS%", str(DATA / "trace.json"))
    assert code == 2 and "unknown Envoy command operator %BOGUS%" in stderr
    code, _, stderr = run("-f", "otlp-json", "--format-string", "%START_TIME%", "x")
    assert code == 2 and "--format-string applies to" in stderr
    assert "Traceback" not in stderr


def test_custom_format_string(tmp_path: Path) -> None:
    path = tmp_path / "custom.log"
    path.write_text("2024-05-01T10:00:00Z 503 outbound|80||api.prod.svc.cluster.local\n")
    code, [event], _ = run("-f", "envoy-text", "--format-string",
                           "%START_TIME% %RESPONSE_CODE% %UPSTREAM_CLUSTER%", str(path))
    assert code == 0
    assert (event["response_code"], event["destination_namespace"]) == (503, "prod")


def test_delimited_protobuf_spans_pair_across_files(tmp_path: Path) -> None:
    mesh = Mesh()
    mesh.call(mesh.tracer("web"), mesh.tracer("cart"))
    server, client = mesh.spans()
    (tmp_path / "a.bin").write_bytes(delimited([proto_bytes([client])]))
    (tmp_path / "b.bin").write_bytes(delimited([proto_bytes([server])]))
    code, [event], _ = run("-f", "otlp-proto", str(tmp_path / "a.bin"), str(tmp_path / "b.bin"))
    assert code == 0
    assert (event["source_workload"], event["destination_service"]) == ("web", "cart")


def test_resolve_fills_the_caller_from_its_own_outbound_record(tmp_path: Path) -> None:
    from tests.ingest.samples import INBOUND, OUTBOUND, text_line

    path = tmp_path / "pair.log"
    path.write_bytes(text_line(OUTBOUND) + b"\n" + text_line(INBOUND) + b"\n")
    _, [_, inbound], _ = run(str(path))
    assert inbound["source_workload"] is None
    _, [_, inbound], _ = run("--resolve", str(path))
    assert inbound["source_workload"] == "productpage-v1"


def test_stdin_through_the_installed_entry_point() -> None:
    data = (DATA / "istio_text_sidecar_pair.log").read_bytes()
    result = subprocess.run([sys.executable, "-m", "meshwatch.cli.main", "parse", "-"],
                            input=data, capture_output=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["reporter"] for line in result.stdout.splitlines()] == [
        "source", "destination"]


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_bytes((DATA / "istio_text_sidecar_pair.log").read_bytes() * 20000)
    process = subprocess.Popen([sys.executable, "-m", "meshwatch.cli.main", "parse", str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert json.loads(process.stdout.readline())["reporter"] == "source"
    process.stdout.close()  # like `| head -1`
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 0
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr
