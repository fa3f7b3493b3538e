"""The simulator is core: it must not import the ingest, detectors or alerts packages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import meshwatch.simulate

FORBIDDEN = ("ingest", "detectors", "alerts")
FILES = [*Path(meshwatch.simulate.__file__).parent.glob("*.py"),
         Path(meshwatch.simulate.__file__).parents[1] / "cli" / "simulate.py"]


def test_no_source_file_imports_a_forbidden_package() -> None:
    assert len(FILES) > 5
    for path in FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, (path, name)


def test_importing_and_running_loads_none_of_them(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from meshwatch.simulate import SimulationConfig, simulate\n"
        "import meshwatch.cli.simulate\n"
        f"simulate(SimulationConfig(out_dir=Path({str(tmp_path)!r}),"
        " start_us=1_767_000_000_000_000, duration_s=120, services=10, rps=1,"
        " formats=('envoy-json', 'otlp-proto')))\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(meshwatch.simulate.__file__).parents[2])
    assert out.stdout.strip() == "[]"
