"""`meshwatch bench nab` end to end on a small copy of the NAB subset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshwatch.cli.main import app

FILES = (
    "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv",
    "realAWSCloudwatch/rds_cpu_utilization_e47b3b.csv",
    "artificialNoAnomaly/art_daily_small_noise.csv",
)


@pytest.fixture
def small_nab(tmp_path: Path, shared_data: Path) -> Path:
    """A NAB-shaped folder with 3 series, a filtered labels file and NAB's config/results."""
    src = shared_data / "nab"
    root = tmp_path / "nab"
    for key in FILES:
        (root / "data" / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "data" / key, root / "data" / key)
    labels = json.loads((src / "labels" / "combined_windows.json").read_text())
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(
        json.dumps({k: labels[k] for k in FILES}))
    (root / "config").mkdir()
    shutil.copy(src / "config" / "profiles.json", root / "config")
    (root / "results").mkdir()
    shutil.copy(src / "results" / "final_results.json", root / "results")
    return root


def _bench(*args: str):
    return CliRunner().invoke(app, ["bench", "nab", *args])


def test_table_output(small_nab: Path) -> None:
    result = _bench("--data", str(small_nab / "data"),
                    "--labels", str(small_nab / "labels" / "combined_windows.json"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "value_anomaly on 3 files" in out
    for word in ("standard", "reward_low_FP_rate", "reward_low_FN_rate", "realAWSCloudwatch",
                 "artificialNoAnomaly", "rows/s", "58-file", "ARTime", "randomCutForest"):
        assert word in out, word


def test_json_output(small_nab: Path) -> None:
    result = _bench("--data", str(small_nab / "data"),
                    "--labels", str(small_nab / "labels" / "combined_windows.json"),
                    "--profile", "standard", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["detector"] == "value_anomaly" and report["files"] == 3
    assert list(report["profiles"]) == ["standard"]
    standard = report["profiles"]["standard"]
    assert standard["windows"] == 4  # 2 windows in each AWS file
    assert standard["null"] == -4.0 and standard["perfect"] == 4.0
    assert -100.0 <= standard["normalized"] <= 100.0
    assert report["categories"]["artificialNoAnomaly"]["standard"]["normalized"] is None
    assert report["published"]["scores"]["randomCutForest"]["standard"] == pytest.approx(51.7,
                                                                                         abs=0.1)
    assert "58-file" in report["published"]["note"]
    assert report["rows"] == sum(
        len((small_nab / "data" / k).read_text().splitlines()) - 1 for k in FILES)


def test_detector_params_are_passed_through(small_nab: Path) -> None:
    args = ["--data", str(small_nab / "data"),
            "--labels", str(small_nab / "labels" / "combined_windows.json"), "--json",
            "--profile", "standard"]
    base = json.loads(_bench(*args).stdout)["profiles"]["standard"]
    coarse = json.loads(_bench(*args, "--param", "resolutions=[2]").stdout)
    assert coarse["profiles"]["standard"] != base


def test_clear_errors_without_traceback(small_nab: Path, tmp_path: Path) -> None:
    labels = small_nab / "labels" / "combined_windows.json"
    missing = _bench("--data", str(tmp_path / "nope"), "--labels", str(labels))
    assert missing.exit_code == 2
    assert "data folder not found" in missing.output and "Traceback" not in missing.output

    bad = small_nab / "labels" / "bad.json"
    bad.write_text('{"realAWSCloudwatch/x.csv": "oops"}')
    malformed = _bench("--data", str(small_nab / "data"), "--labels", str(bad))
    assert malformed.exit_code == 2
    assert "must be a list of [start, end]" in malformed.output
    assert "Traceback" not in malformed.output

    unknown = _bench("--data", str(small_nab / "data"), "--labels", str(labels),
                     "--detector", "nope")
    assert unknown.exit_code == 2 and "unknown detector 'nope'" in unknown.output

    wrong_kind = _bench("--data", str(small_nab / "data"), "--labels", str(labels),
                        "--detector", "traffic_anomaly")
    assert wrong_kind.exit_code == 2 and "consumes windows" in wrong_kind.output

    bad_param = _bench("--data", str(small_nab / "data"), "--labels", str(labels),
                       "--param", "order=9")
    assert bad_param.exit_code == 2 and "order must be between 0 and 3" in bad_param.output
