"""The telemetry path into Kafka: Istio's access-log format, Fluent Bit, the OTel Collector.

The format Istio is configured with must be exactly the one meshwatch recommends and parses best
(meshwatch/formats.py); these tests compare them key by key and byte by byte, so neither can
change without the other.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from meshwatch.formats import MESHWATCH_JSON_FORMAT, MESHWATCH_TEXT_FORMAT
from meshwatch.settings import load_settings
from tests.infra.common import INFRA, yaml_doc, yaml_docs

ISTIO = INFRA / "istio"
MESH_CONFIGS = {
    "istio-operator.yaml": lambda doc: doc["spec"]["meshConfig"],
    "istiod-values.yaml": lambda doc: doc["meshConfig"],
}


def _providers(filename: str) -> dict[str, dict[str, Any]]:
    doc = yaml_doc(ISTIO / filename)
    mesh = MESH_CONFIGS[filename](doc)
    assert "accessLogFile" not in mesh  # would add Istio's default provider on top
    return {p["name"]: p for p in mesh["extensionProviders"]}


@pytest.mark.parametrize("filename", sorted(MESH_CONFIGS))
def test_json_provider_is_meshwatchs_json_format(filename):
    provider = _providers(filename)["meshwatch-json"]["envoyFileAccessLog"]
    assert provider["path"] == "/dev/stdout"
    labels = provider["logFormat"]["labels"]
    assert labels == MESHWATCH_JSON_FORMAT  # same keys, same command operators
    assert "text" not in provider["logFormat"]


@pytest.mark.parametrize("filename", sorted(MESH_CONFIGS))
def test_text_provider_is_meshwatchs_text_format(filename):
    provider = _providers(filename)["meshwatch-text"]["envoyFileAccessLog"]
    assert provider["logFormat"]["text"] == MESHWATCH_TEXT_FORMAT


@pytest.mark.parametrize("filename", sorted(MESH_CONFIGS))
def test_otel_provider_sends_meshwatchs_fields_to_the_collector(filename):
    provider = _providers(filename)["meshwatch-otel"]["envoyOtelAls"]
    assert provider["logFormat"]["labels"] == MESHWATCH_JSON_FORMAT
    assert provider["service"] == "otel-collector.meshwatch.svc.cluster.local"
    assert provider["port"] == 4317
    service = next(d for d in yaml_docs(INFRA / "k8s" / "otel-collector.k8s.yaml")
                   if d["kind"] == "Service")
    assert service["metadata"]["name"] == "otel-collector"
    assert 4317 in {p["port"] for p in service["spec"]["ports"]}


def test_identity_and_tls_fields_are_in_the_format():
    # The reason the format exists (DESIGN.md): peer identity and TLS evidence.
    for key, operator in {
        "downstream_peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
        "downstream_tls_version": "%DOWNSTREAM_TLS_VERSION%",
        "downstream_peer_cert_v_end": "%DOWNSTREAM_PEER_CERT_V_END%",
        "requested_server_name": "%REQUESTED_SERVER_NAME%",
    }.items():
        assert MESHWATCH_JSON_FORMAT[key] == operator
        assert operator in MESHWATCH_TEXT_FORMAT


def test_both_mesh_configs_define_the_same_providers():
    assert _providers("istio-operator.yaml") == _providers("istiod-values.yaml")


@pytest.mark.parametrize("filename,provider", [
    ("telemetry.yaml", "meshwatch-json"),
    ("telemetry-otel.yaml", "meshwatch-otel"),
])
def test_telemetry_enables_one_defined_provider_mesh_wide(filename, provider):
    telemetry = yaml_doc(ISTIO / filename)
    assert telemetry["apiVersion"] == "telemetry.istio.io/v1"
    assert telemetry["kind"] == "Telemetry"
    assert telemetry["metadata"]["namespace"] == "istio-system"  # root namespace: mesh-wide
    assert "selector" not in telemetry["spec"]
    (logging,) = telemetry["spec"]["accessLogging"]
    assert [p["name"] for p in logging["providers"]] == [provider]
    assert provider in _providers("istio-operator.yaml")
    # Both files are the same resource: applying one replaces the other, never doubles logs.
    assert telemetry["metadata"]["name"] == "mesh-default"


def _fluent_bit() -> dict[str, Any]:
    config_map = next(d for d in yaml_docs(ISTIO / "fluent-bit.yaml") if d["kind"] == "ConfigMap")
    return yaml.safe_load(config_map["data"]["fluent-bit.yaml"])


def test_fluent_bit_ships_sidecar_json_lines_raw_to_envoy_access():
    config = _fluent_bit()
    (tail,) = config["pipeline"]["inputs"]
    assert tail["name"] == "tail"
    assert tail["path"].endswith("_istio-proxy-*.log")
    assert tail["db"]  # offsets survive restarts: no re-shipping
    (grep,) = config["pipeline"]["filters"]
    assert grep["name"] == "grep" and grep["regex"].startswith("log ^\\{")
    (kafka,) = config["pipeline"]["outputs"]
    assert kafka["name"] == "kafka"
    assert kafka["topics"] == "envoy.access"
    assert kafka["format"] == "raw" and kafka["raw_log_key"] == "log"
    settings = load_settings(INFRA / "meshwatch.yaml")
    assert settings.kafka.topics[kafka["topics"]].format == "envoy-json"


def test_fluent_bit_daemonset_mounts_its_config_and_node_logs():
    docs = {d["kind"]: d for d in yaml_docs(ISTIO / "fluent-bit.yaml")}
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config_path = container["command"][-1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert config_path.startswith(mounts["config"] + "/")
    assert config_path.rsplit("/", 1)[1] in docs["ConfigMap"]["data"]
    assert mounts["varlog"] == "/var/log"
    namespace = docs["Namespace"]["metadata"]
    assert docs["DaemonSet"]["metadata"]["namespace"] == namespace["name"]
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    annotations = docs["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["sidecar.istio.io/inject"] == "false"


# -- OpenTelemetry Collector -------------------------------------------------------------------

COLLECTOR = yaml_doc(INFRA / "otel-collector.yaml")


def test_collector_pipelines_go_from_otlp_to_kafka():
    pipelines = COLLECTOR["service"]["pipelines"]
    for signal in ("traces", "logs"):
        pipeline = pipelines[signal]
        assert pipeline["receivers"] == ["otlp"]
        assert pipeline["exporters"] == ["kafka"]
        assert pipeline["processors"][0] == "memory_limiter"
        assert "batch" in pipeline["processors"]
        for name in pipeline["processors"]:
            assert name in COLLECTOR["processors"]
    assert {"grpc", "http"} <= set(COLLECTOR["receivers"]["otlp"]["protocols"])


def test_collector_writes_otlp_proto_to_the_topics_meshwatch_reads():
    kafka = COLLECTOR["exporters"]["kafka"]
    assert kafka["traces"] == {"topic": "otlp_spans", "encoding": "otlp_proto"}
    assert kafka["logs"] == {"topic": "otlp_logs", "encoding": "otlp_proto"}
    assert "topic" not in kafka and "encoding" not in kafka  # deprecated top-level fields
    assert kafka["brokers"] == ["${env:KAFKA_BROKERS}"]
    assert kafka["partition_traces_by_id"] is True
    settings = load_settings(INFRA / "meshwatch.yaml")
    assert settings.kafka.topics["otlp_spans"].format == "otlp-proto"
    assert settings.kafka.topics["otlp_logs"].format == "otlp-log"


def test_collector_extensions_are_enabled_and_brokers_come_from_env():
    assert COLLECTOR["service"]["extensions"] == list(COLLECTOR["extensions"])
    compose = yaml_doc(INFRA / "docker-compose.yml")["services"]["otel-collector"]
    assert compose["environment"]["KAFKA_BROKERS"] == "kafka:19092"
    deployment = next(d for d in yaml_docs(INFRA / "k8s" / "otel-collector.k8s.yaml")
                      if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "KAFKA_BROKERS" in {e["name"] for e in container["env"]}
