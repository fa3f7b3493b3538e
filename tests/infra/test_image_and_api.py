"""The meshwatch image's inputs, its pinned dependencies, and the API command it runs."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.infra.common import INFRA, REPO, parse_meshwatch_args, yaml_doc

DOCKERFILE = (INFRA / "Dockerfile").read_text(encoding="utf-8")


def test_dockerfile_copies_files_that_exist():
    sources = []
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert "pyproject.toml" in sources and "infra/meshwatch.yaml" in sources
    # The API is `meshwatch serve` now: no separate entry-point script in the image.
    assert "meshwatch_api" not in DOCKERFILE
    assert not (INFRA / "meshwatch_api.py").exists()
    # A glob may match nothing (Docker copies what matches); a plain path must exist.
    missing = [s for s in sources if "*" not in s and not (REPO / s).exists()]
    assert not missing, f"COPY sources missing from the repository: {missing}"


def test_dockerfile_packages_every_top_level_package():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]
                ["include"]}
    for package in packages:
        assert re.search(rf"^COPY {package} /src/{package}$", DOCKERFILE, re.M), package
        assert f"!{package}/**" in (INFRA / "Dockerfile.dockerignore").read_text("utf-8")


def test_dockerfile_runs_as_non_root_and_pins_its_base():
    assert re.search(r"^USER 10001", DOCKERFILE, re.M)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+$", DOCKERFILE, re.M)
    assert "--constraint /src/constraints.txt" in DOCKERFILE
    assert 'ENTRYPOINT ["meshwatch"]' in DOCKERFILE
    # The default command is a valid meshwatch command line.
    default = json.loads(re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M).group(1))
    assert parse_meshwatch_args(default)[0] == "meshwatch run"


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies():
    ignore = (INFRA / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    allowed = {line[1:].removesuffix("/**") for line in ignore.splitlines()
               if line.startswith("!")}
    copied = set()
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            copied |= {s.rstrip("*") for s in line.split()[1:-1]}
    assert copied == allowed


def _constraints() -> dict[str, Version]:
    pins = {}
    for line in (INFRA / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"constraints.txt: not an exact pin: {line!r}"
        pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pins


def test_constraints_pin_every_dependency_within_range():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    pins = _constraints()
    assert "meshwatch" not in pins
    problems = []
    # Runtime and the dev extra: the environment the tests (and this freeze) run in.
    dev = pyproject["project"].get("optional-dependencies", {}).get("dev", [])
    for spec in pyproject["project"]["dependencies"] + dev:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement.name} is not pinned")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement.name}=={pins[name]} is outside {requirement.specifier}")
    assert not problems, ("infra/constraints.txt is out of date (regenerate: .venv/bin/python "
                          "infra/freeze_constraints.py): " + "; ".join(problems))


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in list(__import__("os").environ):
        if key.startswith("MESHWATCH_"):
            monkeypatch.delenv(key)
    # An embedded store in a temporary directory: same app, no server needed.
    monkeypatch.setenv("MESHWATCH_STORE__PATH", str(tmp_path / "store"))
    return tmp_path


def test_meshwatch_serve_builds_the_app_the_containers_run(clean_env, monkeypatch):
    """`meshwatch serve --host 0.0.0.0` (compose `api`, the k8s API pods; their --metrics-port
    is tested below) serves /healthz and /metrics on the API port: run the command with uvicorn
    replaced by a test client over the app it builds."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from meshwatch.cli.main import app

    seen = {}

    def fake_run(asgi_app, host, port, **_kw):
        seen.update(host=host, port=port)
        with TestClient(asgi_app) as client:
            health = client.get("/healthz")  # public: the probes' endpoint
            seen.update(health=health.status_code, status=health.json().get("status"))
            # /metrics on the API port needs a viewer token (Prometheus scrapes the metrics
            # port instead, without one).
            metrics = client.get("/metrics")
            if metrics.status_code == 401:
                from alerts.tokens import TokenStore

                _, secret = TokenStore(asgi_app.state.store).create(
                    "prometheus", "viewer", created_by="test")
                metrics = client.get("/metrics", headers={"Authorization": f"Bearer {secret}"})
            seen.update(metrics=metrics.status_code,
                        text=metrics.headers["content-type"].startswith("text/plain"))

    monkeypatch.setattr("uvicorn.run", fake_run)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert seen == {"host": "0.0.0.0", "port": 8080, "health": 200, "status": "ok",
                    "metrics": 200, "text": True}


def _get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) without raising on 4xx/5xx; no Authorization header."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["content-type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read().decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_port(args: list[str], port: int) -> list[str]:
    """A compose command line with its --metrics-port value replaced (tests run in parallel
    with whatever already listens on 9464)."""
    index = args.index("--metrics-port") + 1
    return [*args[:index], str(port), *args[index + 1:]]


def test_api_metrics_port_serves_metrics_and_probes_without_a_token(clean_env, monkeypatch):
    """The API's command line (compose `api`, the k8s API pods, which Prometheus scrapes on
    --metrics-port): /metrics, /livez and /readyz without a token, nothing else."""
    from typer.testing import CliRunner

    from meshwatch.cli.main import app

    command = yaml_doc(INFRA / "docker-compose.yml")["services"]["api"]["command"]
    port = _free_port()
    seen = {}

    def fake_run(asgi_app, **_kw):
        base = f"http://127.0.0.1:{port}"
        status, content_type, _ = _get(f"{base}/metrics")
        seen.update(metrics=status, text=content_type.startswith("text/plain"))
        seen.update({path: _get(base + path)[0] for path in ("/livez", "/readyz")})
        seen["alerts"] = _get(f"{base}/api/v1/alerts")[0]  # no API, no data on this port

    monkeypatch.setattr("uvicorn.run", fake_run)
    result = CliRunner().invoke(app, _with_port(command, port))
    assert result.exit_code == 0, result.output
    # /readyz: the (embedded, temporary) store answers.
    assert seen == {"metrics": 200, "text": True, "/livez": 200, "/readyz": 200, "alerts": 404}


def test_worker_metrics_port_answers_the_healthcheck_and_the_probes():
    """A pipeline worker's endpoint (`meshwatch run --metrics-port`, meshwatch.cli.run._health)
    with infra's settings, probed by the compose healthcheck itself: healthy while the consume
    loop turns, unhealthy once it has not turned within kafka.max_poll_interval."""
    from meshwatch.cli.run import _health
    from meshwatch.settings import load_settings

    settings = load_settings(INFRA / "meshwatch.yaml")
    compose = yaml_doc(INFRA / "docker-compose.yml")
    healthcheck = compose["services"]["detect"]["healthcheck"]["test"]
    assert healthcheck[:3] == ["CMD", "python", "-c"] and ":9464/livez" in healthcheck[3]
    worker = SimpleNamespace(last_loop=time.monotonic(), source=SimpleNamespace(consumer=None))
    server = _health(settings, 0, worker)
    base = f"http://127.0.0.1:{server.port}"
    code = healthcheck[3].replace(":9464/", f":{server.port}/")

    def healthy() -> bool:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30,
                                check=False)
        return result.returncode == 0

    try:
        assert healthy()
        assert _get(f"{base}/livez")[0] == 200
        assert _get(f"{base}/readyz")[0] == 503  # no consumer yet
        worker.source.consumer = object()
        assert _get(f"{base}/readyz")[0] == 200
        status, content_type, _ = _get(f"{base}/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        # Stuck: the loop has not turned within max_poll_interval (5 min in infra's config).
        worker.last_loop = time.monotonic() - settings.kafka.max_poll_interval - 1
        assert _get(f"{base}/livez")[0] == 503
        assert not healthy()
    finally:
        server.stop()
