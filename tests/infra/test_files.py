"""Every config file in infra/ parses, holds no secrets, and pins its images."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.infra.common import INFRA, REPO, infra_files, yaml_docs

YAML_FILES = infra_files(".yaml", ".yml")
JSON_FILES = infra_files(".json")
XML_FILES = infra_files(".xml")
TEXT_FILES = [p for p in infra_files("") if p.suffix not in {".pyc"}]


def _id(path: Path) -> str:
    return str(path.relative_to(INFRA))


def test_infra_has_the_expected_files():
    expected = [
        "docker-compose.yml", "Dockerfile", "README.md", "meshwatch.yaml", "otel-collector.yaml",
        "prometheus.yml", "constraints.txt", "freeze_constraints.py", "docker-compose.single.yml",
        "k8s/kustomization.yaml", "k8s-single-process/kustomization.yaml",
        "istio/istio-operator.yaml", "istio/istiod-values.yaml",
        "istio/telemetry.yaml", "istio/fluent-bit.yaml", "clickhouse/cluster.sql",
        "clickhouse/generate_cluster_ddl.py", "clickhouse/README.md",
        "grafana/meshwatch-dashboard.json",
    ]
    missing = [name for name in expected if not (INFRA / name).is_file()]
    assert not missing
    assert (REPO / "docs" / "scale-out.md").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=_id)
def test_yaml_parses(path):
    docs = yaml_docs(path)
    assert docs, f"{path} holds no YAML document"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: every document should be a mapping"


@pytest.mark.parametrize("path", JSON_FILES, ids=_id)
def test_json_parses(path):
    assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)


@pytest.mark.parametrize("path", XML_FILES, ids=_id)
def test_xml_parses(path):
    assert ET.parse(path).getroot().tag == "clickhouse"


def test_shell_scripts_are_executable_and_strict():
    scripts = infra_files(".sh")
    assert scripts
    for script in scripts:
        text = script.read_text(encoding="utf-8")
        assert text.startswith("#!/bin/bash"), script
        assert "set -euo pipefail" in text, script
        assert script.stat().st_mode & 0o111, f"{script} is not executable"


# Things that look like real credentials. Placeholders (change-me, REPLACE_ME) and references
# (${VAR}, from_env, secretKeyRef, absolute paths of mounted files) are how infra/ passes
# secrets.
_SECRET_PATTERNS = [
    re.compile(r"(?i)\w*(password|passwd|secret|token|api_?key)\w*[\"']?[ \t]*[:=][ \t]*"
               r"(?![\"']?(\$|<|\{|/|REPLACE_ME|change-me|MESHWATCH_))[\"']?"
               r"[A-Za-z0-9+/_\-]{8,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"hooks\.slack\.com/services/T[A-Z0-9]+/"),
]
_SECRET_ALLOWED = {".env.example", "secret.example.yaml"}


@pytest.mark.parametrize("path", TEXT_FILES, ids=_id)
def test_no_secrets_in_files(path):
    text = path.read_text(encoding="utf-8", errors="replace")
    for pattern in _SECRET_PATTERNS:
        for match in pattern.finditer(text):
            line = text[: match.start()].count("\n") + 1
            if path.name in _SECRET_ALLOWED:
                assert re.search(r"change-me|REPLACE_ME", match.group(0)), (path, line)
                continue
            pytest.fail(f"{path}:{line} looks like a credential: {match.group(0)[:60]!r}")


def _images(value):
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "image" and isinstance(item, str):
                yield item
            else:
                yield from _images(item)
    elif isinstance(value, list):
        for item in value:
            yield from _images(item)


def test_every_image_is_pinned_to_a_version():
    found = []
    for path in YAML_FILES:
        for doc in yaml_docs(path):
            found += [(path, image) for image in _images(doc)]
    dockerfile = (INFRA / "Dockerfile").read_text(encoding="utf-8")
    found += [(INFRA / "Dockerfile", m) for m in re.findall(r"^ARG PYTHON_IMAGE=(\S+)",
                                                            dockerfile, re.M)]
    assert len(found) >= 10
    for path, image in found:
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{path}: {image} has no tag"
        assert tag != "latest" and re.match(r"^v?\d+(\.\d+)+", tag), (
            f"{path}: {image} is not pinned to a version tag")


@pytest.mark.parametrize("line", [
    "password: hunter2hunter2",
    "MESHWATCH_STORE__PASSWORD=s3cr3tvalue99",
    'api_key: "AKIAABCDEFGHIJKL"',
    "-----BEGIN RSA PRIVATE KEY-----",
])
def test_secret_scan_catches_credentials(line):
    assert any(p.search(line) for p in _SECRET_PATTERNS)


@pytest.mark.parametrize("line", [
    "password: $GRAFANA_CLICKHOUSE_PASSWORD",
    "CLICKHOUSE_PASSWORD: ${CLICKHOUSE_PASSWORD:?set it}",
    "# password: from MESHWATCH_STORE__PASSWORD (compose reads it from infra/.env)",
    "MESHWATCH_STORE__PASSWORD: REPLACE_ME",
    "<secret from_env=\"CLICKHOUSE_CLUSTER_SECRET\"/>",
    "      - ./secrets:/etc/prometheus/secrets:ro",
    "      credentials_file: /etc/prometheus/secrets/meshwatch-viewer.token",
])
def test_secret_scan_accepts_references(line):
    assert not any(p.search(line) for p in _SECRET_PATTERNS)
