"""infra/k8s (and the Fluent Bit DaemonSet in infra/istio): valid Kubernetes objects.

Structural checks always run. With `kubernetes-validate` installed (it ships the Kubernetes
OpenAPI schemas, so it works offline), every object is also validated strictly against the
schema of a current Kubernetes release, which catches misspelt fields and wrong types.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshwatch.settings import load_settings
from meshwatch.stages import STAGES
from tests.infra.common import INFRA, parse_meshwatch_args, yaml_doc, yaml_docs

K8S = INFRA / "k8s"
KUSTOMIZATION = yaml_doc(K8S / "kustomization.yaml")
RESOURCE_FILES = [K8S / name for name in KUSTOMIZATION["resources"]]
# The single-process overlay: the base (../k8s) minus the stages, plus its own files.
SINGLE = INFRA / "k8s-single-process"
SINGLE_KUSTOMIZATION = yaml_doc(SINGLE / "kustomization.yaml")
SINGLE_FILES = [SINGLE / name for name in SINGLE_KUSTOMIZATION["resources"] if name != "../k8s"]
EXTRA_FILES = [K8S / "secret.example.yaml", INFRA / "istio" / "fluent-bit.yaml"]
KUBERNETES_VERSION = "1.31.0"
STAGE_NAMES = ("normalize", "detect", "notify")
# Every meshwatch container serves /metrics, /livez and /readyz without a token on this port
# (`--metrics-port`, container port `metrics`); infra/README.md, "Metrics and probes".
METRICS_PORT = 9464


def _objects(paths: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in paths for doc in yaml_docs(path)]


OBJECTS = _objects(RESOURCE_FILES)
SINGLE_OBJECTS = _objects(SINGLE_FILES)
ALL_OBJECTS = OBJECTS + SINGLE_OBJECTS + _objects(EXTRA_FILES)


def _by_kind(kind: str, objects=OBJECTS) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in objects if doc["kind"] == kind}


def _pod_specs(objects=ALL_OBJECTS):
    for _, doc in objects:
        if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def test_kustomization_references_existing_files():
    assert KUSTOMIZATION["kind"] == "Kustomization"
    assert KUSTOMIZATION["namespace"] == "meshwatch"
    for path in RESOURCE_FILES + SINGLE_FILES:
        assert path.is_file(), path
    assert "../k8s" in SINGLE_KUSTOMIZATION["resources"]
    assert SINGLE_KUSTOMIZATION["namespace"] == KUSTOMIZATION["namespace"]
    assert SINGLE_KUSTOMIZATION["images"] == KUSTOMIZATION["images"]
    for generator in KUSTOMIZATION["configMapGenerator"]:
        for entry in generator["files"]:
            assert (K8S / entry.split("=")[-1]).is_file(), entry
    assert "secret.example.yaml" not in KUSTOMIZATION["resources"]  # never deploy placeholders


def test_every_object_has_the_basic_shape():
    assert len(ALL_OBJECTS) >= 10
    for path, doc in ALL_OBJECTS:
        assert isinstance(doc.get("apiVersion"), str) and doc["apiVersion"], path
        assert isinstance(doc.get("kind"), str) and doc["kind"], path
        assert doc.get("metadata", {}).get("name"), f"{path}: {doc['kind']} without a name"
    kinds = {doc["kind"] for _, doc in OBJECTS}
    assert {"Namespace", "Deployment", "Service", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "ServiceAccount"} <= kinds


@pytest.mark.parametrize("path_doc", ALL_OBJECTS,
                         ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}"
                              for p, d in ALL_OBJECTS])
def test_matches_the_kubernetes_schema(path_doc):
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate ships the Kubernetes JSON schemas")
    _, doc = path_doc
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_is_not_vacuous():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = copy.deepcopy(_by_kind("Deployment")["meshwatch-api"])
    deployment["spec"]["replica"] = 2  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_workload_selectors_match_their_pod_labels():
    for _, doc in ALL_OBJECTS:
        if doc["kind"] not in ("Deployment", "DaemonSet"):
            continue
        selector = doc["spec"]["selector"]["matchLabels"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert selector and selector.items() <= labels.items(), doc["metadata"]["name"]


def test_containers_have_requests_limits_and_probes():
    for name, pod in _pod_specs():
        for container in pod["containers"]:
            where = f"{name}/{container['name']}"
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert "memory" in resources.get("limits", {}), where
            assert container.get("livenessProbe"), f"{where} has no liveness probe"
            assert container.get("readinessProbe"), f"{where} has no readiness probe"
            ports = {p.get("name") for p in container.get("ports", [])}
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = container.get(kind) or {}
                for action in ("httpGet", "tcpSocket"):
                    if action in probe:
                        port = probe[action]["port"]
                        assert port in ports or isinstance(port, int), f"{where} {kind}: {port}"
        for container in pod.get("initContainers", []):
            assert container.get("resources", {}).get("requests"), f"{name} init container"


def test_images_are_pinned():
    images = {kustom["name"]: kustom for kustom in KUSTOMIZATION["images"]}
    assert images["meshwatch"]["newTag"] == "0.1.0"
    for name, pod in _pod_specs():
        for container in pod["containers"] + pod.get("initContainers", []):
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"


def test_meshwatch_pods_run_restricted():
    namespace = _by_kind("Namespace")["meshwatch"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, pod in _pod_specs(OBJECTS + SINGLE_OBJECTS):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name


def _env_names(container: dict[str, Any]) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


def _meshwatch_containers():
    for name, pod in _pod_specs(OBJECTS + SINGLE_OBJECTS):
        for container in pod["containers"] + pod.get("initContainers", []):
            if container["image"].startswith("meshwatch:"):
                yield f"{name}/{container['name']}", container


@pytest.mark.parametrize("where_container", list(_meshwatch_containers()), ids=lambda x: x[0])
def test_meshwatch_commands_exist_in_the_cli(where_container):
    # The image's entrypoint is `meshwatch`: every container's args must parse with this CLI.
    _, container = where_container
    assert "command" not in container  # keep the entrypoint
    path, params = parse_meshwatch_args(container["args"])
    if path == "meshwatch run":
        assert params["stage"] in STAGES


def _main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _meshwatch_deployments() -> dict[str, dict[str, Any]]:
    """The stages, the API and the single-process worker."""
    return {name: d for name, d in _by_kind("Deployment", OBJECTS + SINGLE_OBJECTS).items()
            if _main_container(d)["image"].startswith("meshwatch:")}


def _http_probe(container: dict[str, Any], kind: str) -> tuple[str, str | int]:
    probe = container[kind]["httpGet"]
    return probe["path"], probe["port"]


def _worker_probes(container: dict[str, Any]) -> None:
    """A pipeline worker is probed on its metrics port: /livez fails only when the consume loop
    is stuck (a Kafka or ClickHouse outage does not restart pods), /readyz once it consumes."""
    assert _http_probe(container, "startupProbe") == ("/livez", "metrics")
    assert _http_probe(container, "livenessProbe") == ("/livez", "metrics")
    assert _http_probe(container, "readinessProbe") == ("/readyz", "metrics")
    # Startup covers the store, the Kafka clients and a checkpoint restore: minutes, not seconds.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def _api_probes(container: dict[str, Any]) -> None:
    """The API is probed on the port users reach. Every route but /healthz needs a token
    (alerts/api/auth.py): the kubelet has none. Liveness must not depend on the store either
    (restarts do not fix ClickHouse): TCP; readiness is /healthz (503 without the store)."""
    assert _http_probe(container, "readinessProbe") == ("/healthz", "http")
    for kind in ("livenessProbe", "startupProbe"):
        assert container[kind]["tcpSocket"] == {"port": "http"}, kind


def test_stage_deployments():
    deployments = _by_kind("Deployment")
    for stage in STAGE_NAMES:
        deployment = deployments[f"meshwatch-{stage}"]
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == ["run", "--stage", stage, "--metrics-port", str(METRICS_PORT)]
        assert spec["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == stage
        assert pod["terminationGracePeriodSeconds"] >= 60  # checkpoint + commit on SIGTERM
        assert "MESHWATCH_CONFIG" in _env_names(container)
        assert {"secretRef": {"name": "meshwatch-secrets"}} in container["envFrom"]
        assert pod["initContainers"][0]["args"] == ["db", "migrate"]
        _worker_probes(container)
    # normalize and detect scale by replicas (up to their topics' partitions), one pod at a
    # time so each change is one rebalance; the notifier is exactly one, never two at once.
    for stage in ("normalize", "detect"):
        spec = deployments[f"meshwatch-{stage}"]["spec"]
        assert spec["replicas"] >= 1
        assert spec["strategy"]["type"] == "RollingUpdate"
        assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
        # Ready = the consumer exists, not "rebalanced and restored": keep a pause per pod.
        assert spec["minReadySeconds"] >= 20
    notify = deployments["meshwatch-notify"]["spec"]
    assert notify["replicas"] == 1
    assert notify["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("name", sorted(_meshwatch_deployments()))
def test_metrics_port_is_served_declared_and_annotated(name):
    deployment = _meshwatch_deployments()[name]
    container = _main_container(deployment)
    _, params = parse_meshwatch_args(container["args"])
    port = params["metrics_port"]
    assert port == METRICS_PORT  # the same port as compose and the README
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                           "prometheus.io/path": "/metrics"}
    # The unauthenticated port is for Prometheus and the kubelet only: no Service routes to it.
    for service in _by_kind("Service").values():
        targets = {p.get("targetPort") for p in service["spec"]["ports"]}
        assert not targets & {"metrics", port}, service["metadata"]["name"]


def test_no_probe_needs_a_token():
    """Port http (the API) answers only /healthz without a token; port metrics answers only
    /livez and /readyz (and /metrics). Nothing probes anything else."""
    allowed = {"http": {"/healthz"}, "metrics": {"/livez", "/readyz"}}
    seen = set()
    for name, deployment in _meshwatch_deployments().items():
        container = _main_container(deployment)
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container[kind]
            if "httpGet" in probe:
                path, port = _http_probe(container, kind)
                assert path in allowed[port], (name, kind, path, port)
                seen.add((port, path))
    assert seen == {("http", "/healthz"), ("metrics", "/livez"), ("metrics", "/readyz")}


def test_single_process_worker():
    (worker,) = [doc for _, doc in SINGLE_OBJECTS if doc["kind"] == "Deployment"]
    spec = worker["spec"]
    assert worker["metadata"]["name"] == "meshwatch-worker"
    assert spec["replicas"] == 1  # whole-mesh state in one process
    assert spec["strategy"]["type"] == "Recreate"  # checkpoint handover, see the manifest
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60
    (container,) = pod["containers"]
    assert container["args"] == ["run", "--serve", "--metrics-port", str(METRICS_PORT)]
    _worker_probes(container)
    assert {"secretRef": {"name": "meshwatch-secrets"}} in container["envFrom"]
    deleted = {(p["patch"].split("kind: ")[1].split()[0], p["patch"].split("name: ")[1].split()[0])
               for p in SINGLE_KUSTOMIZATION["patches"] if "$patch: delete" in p["patch"]}
    assert deleted == {(kind, f"meshwatch-{stage}") for stage in STAGE_NAMES
                       for kind in ("Deployment", "PodDisruptionBudget")}


def test_api_deployment_and_service():
    api = _by_kind("Deployment")["meshwatch-api"]
    pod = api["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--metrics-port", str(METRICS_PORT)]
    _api_probes(container)
    service = _by_kind("Service")["meshwatch-api"]
    selector = service["spec"]["selector"]
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    workers = [d for name, d in _by_kind("Deployment", OBJECTS + SINGLE_OBJECTS).items()
               if name != "meshwatch-api" and d["metadata"]["labels"].get(
                   "app.kubernetes.io/name") == "meshwatch"]
    assert len(workers) == 4
    for worker in workers:  # workers are not behind it
        labels = worker["spec"]["template"]["metadata"]["labels"]
        assert not selector.items() <= labels.items(), worker["metadata"]["name"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert "http" in {p["name"] for p in container["ports"]}


def test_disruption_budgets_select_pods():
    deployments = _by_kind("Deployment", OBJECTS + SINGLE_OBJECTS)
    for name, pdb in _by_kind("PodDisruptionBudget", OBJECTS + SINGLE_OBJECTS).items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [d for d in deployments.values()
                   if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert matched, f"PDB {name} selects no pods"
        if pdb["spec"].get("minAvailable") == 1:
            assert all(d["spec"]["replicas"] > 1 for d in matched), (
                f"PDB {name}: minAvailable 1 on a single replica blocks node drains")


def test_hpa_targets_the_api():
    hpa = _by_kind("HorizontalPodAutoscaler")["meshwatch-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] in _by_kind("Deployment")
    assert hpa["spec"]["minReplicas"] >= 2


def test_every_meshwatch_deployment_has_a_disruption_budget():
    pdbs = _by_kind("PodDisruptionBudget", OBJECTS + SINGLE_OBJECTS)
    for name, deployment in _by_kind("Deployment", OBJECTS + SINGLE_OBJECTS).items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
                   for pdb in pdbs.values()), name


def test_pods_mount_configmaps_that_kustomize_generates():
    generated = {g["name"] for g in KUSTOMIZATION["configMapGenerator"]}
    for name, pod in _pod_specs(OBJECTS + SINGLE_OBJECTS):
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in generated, name


def test_secret_example_holds_placeholders_only():
    (secret,) = yaml_docs(K8S / "secret.example.yaml")
    assert secret["kind"] == "Secret"
    assert set(secret["stringData"].values()) == {"REPLACE_ME"}
    assert all(key.startswith("MESHWATCH_") for key in secret["stringData"])


def test_k8s_meshwatch_config_is_valid():
    settings = load_settings(K8S / "meshwatch.yaml")
    assert settings.store.url and settings.store.url.startswith("http")
    assert settings.api.host == "0.0.0.0"
    assert set(settings.kafka.topics) == {"envoy.access", "otlp_spans", "otlp_logs"}


def test_collector_config_copy_is_identical():
    copy_bytes = (K8S / "otel-collector.yaml").read_bytes()
    assert copy_bytes == (INFRA / "otel-collector.yaml").read_bytes()
    collector = _by_kind("Service")["otel-collector"]
    ports = {p["port"] for p in collector["spec"]["ports"]}
    assert {4317, 4318} <= ports


# -- kustomize (kubectl's built-in) -----------------------------------------------------------


def _kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _names(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}


def test_kustomize_builds_the_scale_out_topology():
    built = _kustomize(K8S)
    names = _names(built)
    for stage in STAGE_NAMES:
        assert ("Deployment", f"meshwatch-{stage}") in names
        assert ("PodDisruptionBudget", f"meshwatch-{stage}") in names
    assert ("Deployment", "meshwatch-worker") not in names
    assert _names([o for _, o in OBJECTS]) <= names  # every listed resource is built
    for obj in built:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "meshwatch", obj["metadata"]["name"]
        if obj["kind"] == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            for container in pod["containers"] + pod.get("initContainers", []):
                assert not container["image"].startswith("meshwatch:"), "images not rewritten"
            for volume in pod.get("volumes", []):
                if "configMap" in volume:  # the generated, hashed name
                    assert volume["configMap"]["name"].rsplit("-", 1)[0] in {
                        g["name"] for g in KUSTOMIZATION["configMapGenerator"]}
                    assert volume["configMap"]["name"] not in {
                        g["name"] for g in KUSTOMIZATION["configMapGenerator"]}


def test_kustomize_builds_the_single_process_topology():
    built = _kustomize(SINGLE)
    names = _names(built)
    assert ("Deployment", "meshwatch-worker") in names
    assert ("PodDisruptionBudget", "meshwatch-worker") in names
    for stage in STAGE_NAMES:
        assert ("Deployment", f"meshwatch-{stage}") not in names
        assert ("PodDisruptionBudget", f"meshwatch-{stage}") not in names
    assert {("Deployment", "meshwatch-api"), ("Service", "meshwatch-api"),
            ("Deployment", "otel-collector")} <= names
    (worker,) = [o for o in built if o["metadata"]["name"] == "meshwatch-worker"
                 and o["kind"] == "Deployment"]
    pod = worker["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/meshwatch:0.1.0"
    config = next(v for v in pod["volumes"] if v["name"] == "config")["configMap"]["name"]
    assert config.startswith("meshwatch-config-")  # the base's generated ConfigMap


@pytest.mark.parametrize("path", [K8S, SINGLE], ids=["scale-out", "single-process"])
def test_kustomize_output_matches_the_kubernetes_schema(path):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for obj in _kustomize(path):
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
