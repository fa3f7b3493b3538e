"""`meshwatch simulate` through the real CLI app."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from meshwatch.cli.main import app
from meshwatch.simulate import SCENARIOS

runner = CliRunner()


def test_help_documents_the_options() -> None:
    result = runner.invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0
    for option in ("--scenario", "--duration", "--out", "--format", "--seed", "--services",
                   "--rps", "--start", "--list-scenarios"):
        assert option in result.output


def test_list_scenarios_names_each_with_a_description() -> None:
    result = runner.invoke(app, ["simulate", "--list-scenarios"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(SCENARIOS)
    assert all(len(line.split()) > 3 for line in lines)


def test_a_short_run_writes_files_and_a_summary(tmp_path: Path) -> None:
    result = runner.invoke(app, [
        "simulate", "-s", "service-scan", "-d", "12m", "-o", str(tmp_path),
        "-f", "envoy-json,envoy-text", "-f", "otlp-proto", "--services", "10", "--rps", "2",
        "--start", "2026-01-05T10:00:00Z", "--seed", "3"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"envoy-json.log", "envoy-text.log", "spans.otlp.pb", "labels.json",
                     "mesh.json"}
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert labels["start"] == "2026-01-05T10:00:00.000Z"
    assert labels["end"] == "2026-01-05T10:12:00.000Z"
    assert [a["kind"] for a in labels["attacks"]] == ["service_scan"]
    for name in ("envoy-json.log", "spans.otlp.pb", "service-scan", "must not page"):
        assert name in result.output


def test_default_start_is_the_duration_before_now_on_a_minute(tmp_path: Path) -> None:
    before = int(time.time())
    result = runner.invoke(app, ["simulate", "-d", "10m", "-o", str(tmp_path), "-q",
                                 "--services", "10", "--rps", "1"])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    labels = json.loads((tmp_path / "labels.json").read_text())
    start = labels["start"]
    assert start.endswith(":00.000Z")
    from meshwatch.records import parse_ts

    start_s = parse_ts(start).timestamp()
    assert before - 600 - 60 <= start_s <= int(time.time()) - 600


def test_bad_arguments_are_refused_with_a_message(tmp_path: Path) -> None:
    cases = [
        (["--services", "5"], "between"),
        (["-s", "nope"], "unknown scenario"),
        (["-f", "envoy-xml"], "unknown format"),
        (["-d", "soon"], "--duration"),
        (["--start", "yesterday"], "--start"),
        (["--rps", "0"], "--rps"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["simulate", "-o", str(tmp_path), *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
    result = runner.invoke(app, ["simulate"])
    assert result.exit_code == 2 and "--out" in result.output
