"""Same seed and arguments: the same bytes in every file. Another seed: other traffic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshwatch.simulate import FORMAT_FILES
from tests.simulate.helpers import run_sim

REPO = Path(__file__).resolve().parents[2]
FILES = [*FORMAT_FILES.values(), "labels.json", "mesh.json"]


def _bytes(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in FILES}


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("det-a")
    run_sim(out, duration_s=900, services=12, rps=2.0)
    return _bytes(out)


def test_every_format_file_is_written_and_not_empty(first: dict[str, bytes]) -> None:
    assert all(first[name] for name in FILES)


def test_same_seed_gives_identical_bytes(first: dict[str, bytes], tmp_path: Path) -> None:
    run_sim(tmp_path, duration_s=900, services=12, rps=2.0)
    again = _bytes(tmp_path)
    for name in FILES:
        assert again[name] == first[name], name


def _sim_in_fresh_process(out: Path, workers: int) -> tuple[int, int]:
    """Simulate in a new interpreter: the simulator forks span workers only from a
    single-threaded process, and this test process may hold threads left by other tests."""
    code = (
        "import json, sys; from pathlib import Path; from tests.simulate.helpers import run_sim;"
        "r = run_sim(Path(sys.argv[1]), duration_s=1200, services=12, rps=2.0,"
        " span_workers=int(sys.argv[2]), formats=('otlp-proto', 'otlp-json'));"
        "print(json.dumps([r.summary.span_workers, r.summary.spans]))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(out), str(workers)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    used, spans = json.loads(done.stdout.strip().splitlines()[-1])
    return used, spans


def test_span_workers_change_nothing_but_speed(tmp_path: Path) -> None:
    """Windows rendered by 1 or 3 processes join into the same bytes."""
    runs = []
    for workers in (1, 3):
        out = tmp_path / str(workers)
        used, spans = _sim_in_fresh_process(out, workers)
        assert used == workers
        runs.append((_bytes_of(out, ("spans.otlp.pb", "spans.otlp.json", "labels.json")),
                     spans))
    assert runs[0] == runs[1]
    assert not list(tmp_path.glob("*/.spans-parts"))


def _bytes_of(out: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in names}


def test_another_seed_gives_other_traffic(first: dict[str, bytes], tmp_path: Path) -> None:
    run_sim(tmp_path, duration_s=900, services=12, rps=2.0, seed=12)
    other = _bytes(tmp_path)
    for name in FILES:
        assert other[name] != first[name], name


def test_separate_processes_with_other_hash_seeds_agree(tmp_path: Path) -> None:
    """No output depends on set/dict hash order (PYTHONHASHSEED differs per process)."""
    import os
    import subprocess
    import sys

    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        subprocess.run(
            [sys.executable, "-m", "meshwatch.cli.main", "simulate", "-q", "-o", str(out),
             "-d", "10m", "--services", "20", "--rps", "2", "--start", "2026-02-01T12:00:00Z",
             "-f", "envoy-text,otlp-json"],
            check=True, env={**os.environ, "PYTHONHASHSEED": hash_seed},
            cwd=Path(__file__).resolve().parents[2])
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert outputs[0] == outputs[1]
