"""Every notebook in notebooks/ runs top to bottom on small data, so none of them rots.

Each one runs in a fresh kernel of this interpreter (a kernelspec written for the test and put
first on JUPYTER_PATH, so a user-level ``python3`` kernel pointing elsewhere cannot interfere),
in its own temporary directory, with the small parameters below injected after its
``parameters`` cell the way papermill does. A cell that raises fails the test.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from detectors.config import load_detectors

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"

# Small data: together the three run in about a minute on a 2-core machine.
SMALL: dict[str, dict[str, object]] = {
    "01_explore_mesh.ipynb": {"SIM_DURATION": "4h", "SIM_RPS": 0.5, "SIM_SERVICES": 12,
                              "NEW_EDGE_BUCKET": "1h", "COVERAGE_BUCKET": "20m"},
    "02_tune_detectors.ipynb": {"DURATION": "3h", "RPS": 2.0, "SERVICES": 20,
                                "ALERT_BUDGET_PER_DAY": 20.0},
    "03_nab_benchmark.ipynb": {"MAX_FILES_PER_CATEGORY": 3},
}


def committed() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_every_notebook_is_executed_by_this_module():
    assert [p.name for p in committed()] == sorted(SMALL)


@pytest.mark.parametrize("path", committed(), ids=lambda p: p.name)
def test_committed_notebooks_are_stripped_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        assert cell.outputs == [], f"{path.name}: outputs committed in cell {cell.get('id')}"
        assert cell.execution_count is None, f"{path.name}: execution count committed"
    assert "parameters" in code[0].metadata.get("tags", []), "parameters must come first"
    names = {line.split("=", 1)[0].strip() for line in code[0].source.splitlines()
             if "=" in line and not line.startswith("#")}
    assert set(SMALL[path.name]) <= names, "the test overrides parameters the notebook lacks"


@pytest.fixture
def kernel_env(tmp_path, monkeypatch) -> str:
    """A ``python3`` kernelspec for this very interpreter, first on JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "meshwatch tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv("MESHWATCH_CONFIG", raising=False)
    return "python3"


def execute(name: str, kernel: str, workdir: Path, params: dict[str, object]
            ) -> tuple[nbformat.NotebookNode, float]:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    first = next(i for i, c in enumerate(nb.cells)
                 if "parameters" in c.metadata.get("tags", []))
    injected = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(first + 1, nbformat.v4.new_code_cell(injected))
    started = time.monotonic()
    NotebookClient(nb, kernel_name=kernel, timeout=180,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb, time.monotonic() - started


def outputs(nb: nbformat.NotebookNode, kind: str) -> list[str]:
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if kind == "stream" and out.output_type == "stream":
                found.append(out.text)
            elif kind in out.get("data", {}):
                found.append(out["data"][kind])
    return found


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs_top_to_bottom(name, kernel_env, tmp_path, shared_data):
    params = {"WORK_DIR": str(tmp_path / "work"), **SMALL[name]}
    if name.startswith("03"):
        params["NAB_DIR"] = str(shared_data / "nab")
    nb, seconds = execute(name, kernel_env, tmp_path, params)
    print(f"{name}: {seconds:.1f} s")
    images = outputs(nb, "image/png")
    text = "\n".join(outputs(nb, "stream") + outputs(nb, "text/plain"))
    work = tmp_path / "work"
    if name.startswith("01"):
        assert len(images) >= 4  # graph, coverage, top talkers, new edges
        assert (work / "explore-store").is_dir()
        assert "all-mtls" in text or "plaintext" in text
    elif name.startswith("02"):
        assert len(images) >= 3  # PR curves, score timeline, held-out comparison
        tuned = yaml.safe_load((work / "tuned-detectors.yaml").read_text())["detectors"]
        assert set(tuned) == {"first_seen_edge", "source_behaviour"}
        assert {c.name for c in load_detectors(tuned)} >= set(tuned)
        assert "tuned" in text and "default" in text
    else:
        assert len(images) >= 3  # same-files bars, scoreboard, series
        assert "value_anomaly (ours)" in text and "windowedGaussian" in text
