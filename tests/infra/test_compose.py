"""infra/docker-compose.yml: schema-valid, and wired the way infra/README.md describes.

No Docker engine runs here, so the stack itself is not started; these checks cover what can go
wrong on paper: the compose-spec schema, dependency order, health checks, mounted files, and the
meshwatch configuration it mounts (validated by meshwatch's own settings loader).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess

import pytest

from meshwatch.settings import load_settings
from meshwatch.stages import STAGES
from tests.infra.common import INFRA, parse_meshwatch_args, yaml_doc

COMPOSE_FILE = INFRA / "docker-compose.yml"
COMPOSE = yaml_doc(COMPOSE_FILE)
SERVICES = COMPOSE["services"]
SINGLE_FILE = INFRA / "docker-compose.single.yml"
SINGLE = yaml_doc(SINGLE_FILE)

# One-shot jobs: they exit, so they have no health check; others depend on their completion.
ONE_SHOT = {"kafka-init", "migrate"}
# The scale-out stage workers, each a consumer group of its own.
STAGE_SERVICES = {"normalize", "detect", "notify"}
# Long-running services without a health check: the collector's image has no shell or HTTP
# client.
NO_HEALTHCHECK = {"otel-collector"}
MESHWATCH_SERVICES = STAGE_SERVICES | {"api", "migrate"}
SETTINGS = load_settings(INFRA / "meshwatch.yaml")
# The port every long-running meshwatch process serves /metrics, /livez and /readyz on
# (`--metrics-port`, no token); infra/README.md, "Metrics and probes".
METRICS_PORT = 9464


def _compose_schema():
    check_jsonschema = pytest.importorskip(
        "check_jsonschema", reason="check-jsonschema vendors the compose-spec JSON schema")
    from importlib import resources

    text = (resources.files(check_jsonschema) / "builtin_schemas" / "vendor"
            / "compose-spec.json").read_text(encoding="utf-8")
    return json.loads(text)


def test_matches_the_compose_spec_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = _compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(COMPOSE), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
    # The validator is not vacuous: a misspelt key is an error.
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["api"]["helthcheck"] = broken["services"]["api"].pop("healthcheck")
    assert list(validator.iter_errors(broken))


def test_single_process_override_matches_the_compose_spec_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = _compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(SINGLE), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_the_stack_has_every_component():
    expected = {"kafka", "kafka-init", "clickhouse", "migrate", "otel-collector", "normalize",
                "detect", "notify", "api", "prometheus", "grafana"}
    assert expected <= set(SERVICES)
    # The single-process worker is not part of the default topology (no double processing).
    assert "worker" not in SERVICES


def test_images():
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert SERVICES["otel-collector"]["image"].startswith("otel/opentelemetry-collector-contrib:")
    for service in [SERVICES[name] for name in MESHWATCH_SERVICES] + [SINGLE["services"]["worker"]]:
        assert service["image"] == "meshwatch:0.1.0"
        assert service["build"] == {"context": "..", "dockerfile": "infra/Dockerfile"}
    assert (INFRA / "Dockerfile").is_file()


def _meshwatch_command_lines() -> list[tuple[str, list[str]]]:
    lines = [(name, SERVICES[name]["command"]) for name in sorted(MESHWATCH_SERVICES)]
    return [*lines, ("single:worker", SINGLE["services"]["worker"]["command"])]


@pytest.mark.parametrize("name_args", _meshwatch_command_lines(), ids=lambda x: x[0])
def test_meshwatch_commands_exist_in_the_cli(name_args):
    # The image's entrypoint is `meshwatch`: every command line must parse with this CLI.
    name, args = name_args
    assert "entrypoint" not in SERVICES.get(name, {})
    path, params = parse_meshwatch_args(args)
    if path == "meshwatch run":
        assert params["stage"] in STAGES


def test_kafka_runs_in_kraft_mode():
    env = SERVICES["kafka"]["environment"]
    assert "broker" in env["KAFKA_PROCESS_ROLES"] and "controller" in env["KAFKA_PROCESS_ROLES"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith("1@kafka:")
    assert not any("ZOOKEEPER" in key for key in env)
    # Containers reach kafka:19092, the host reaches localhost:9092 (README's produce example).
    assert "INTERNAL://kafka:19092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "HOST://localhost:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "9092:9092" in SERVICES["kafka"]["ports"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def _topic_script() -> str:
    # Compose turns $$ into $ before the shell sees the script.
    return "\n".join(SERVICES["kafka-init"]["command"]).replace("$$", "$")


def _created_topics() -> dict[str, str]:
    """topic -> the rest of its `create` line (partitions, configs)."""
    script = _topic_script().replace("\\\n", " ")
    created = {}
    for topic in re.search(r"for topic in ([^;]+);", script).group(1).split():
        created[topic] = re.search(r"for topic in [^\n]*\n\s*create (.*)", script).group(1)
    for topic, rest in re.findall(r"^\s*create --topic ([\w.\-]+) (.*)$", script, re.M):
        created[topic] = rest
    return created


def test_topic_init_creates_every_topic_meshwatch_uses():
    created = _created_topics()
    kafka = SETTINGS.kafka
    assert set(created) == set(kafka.topics) | {
        kafka.edges_topic, kafka.alert_changes_topic, kafka.state_topic}
    script = _topic_script()
    assert "--if-not-exists" in script
    for topic in kafka.topics:
        assert '--partitions "$TOPIC_PARTITIONS"' in created[topic]
    # The edges topic's partitions bound the detect workers; the default covers the replicas.
    assert '--partitions "$EDGES_PARTITIONS"' in created[kafka.edges_topic]
    edges_default = int(re.search(r"\$\{EDGES_PARTITIONS:-(\d+)\}",
                                  SERVICES["kafka-init"]["environment"]["EDGES_PARTITIONS"])[1])
    assert edges_default >= SERVICES["detect"]["deploy"]["replicas"]
    # One notifier reads alert changes; the state topic is one compacted partition
    # (meshwatch.kafka_state reads partition 0 only).
    assert "--partitions 1" in created[kafka.alert_changes_topic]
    assert "--partitions 1" in created[kafka.state_topic]
    assert "--config cleanup.policy=compact" in created[kafka.state_topic]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_topic_init_script_is_valid_bash():
    result = subprocess.run(["bash", "-n"], input=_topic_script(), text=True,
                            capture_output=True, check=False)
    assert result.returncode == 0, result.stderr


def test_long_running_services_have_healthchecks():
    for name, service in SERVICES.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            continue
        if name in NO_HEALTHCHECK:
            assert "healthcheck" not in service
            continue
        check = service.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        assert check.get("interval") and check.get("retries"), name


def test_depends_on_uses_conditions_that_exist():
    for name, service in SERVICES.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            if dep in ONE_SHOT:
                assert condition == "service_completed_successfully", (name, dep)
            elif condition == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep}'s health"
            else:
                assert condition == "service_started", (name, dep)


def test_start_order():
    deps = {name: set(s.get("depends_on", {})) for name, s in SERVICES.items()}
    for name in STAGE_SERVICES:
        assert {"kafka-init", "migrate"} <= deps[name], name
    assert {"kafka-init", "migrate"} <= set(SINGLE["services"]["worker"]["depends_on"])
    assert "migrate" in deps["api"]
    assert "clickhouse" in deps["migrate"]
    assert "kafka" in deps["kafka-init"]
    # No cycles: a topological order exists.
    done: set[str] = set()
    while len(done) < len(deps):
        ready = {n for n, d in deps.items() if n not in done and d <= done}
        assert ready, f"dependency cycle among {set(deps) - done}"
        done |= ready


def test_bind_mounts_point_at_files_in_infra():
    mounts = 0
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                mounts += 1
                assert (INFRA / source).exists(), f"{name}: {source} does not exist in infra/"
            else:
                assert source in COMPOSE["volumes"], f"{name}: undeclared volume {source}"
    assert mounts >= 6


def test_config_files_named_in_commands_are_mounted():
    # e.g. --config=/etc/otelcol-contrib/config.yaml must be a mounted path.
    for name, service in SERVICES.items():
        args = " ".join(str(a) for a in service.get("command", []) or [])
        targets = {v.split(":")[1] for v in service.get("volumes", []) if v.startswith(".")}
        for path in re.findall(r"--config(?:\.file)?=(\S+)", args):
            assert path in targets, f"{name}: {path} is not mounted"


def test_meshwatch_services_share_one_config_and_take_secrets_from_env():
    for service in [SERVICES[name] for name in MESHWATCH_SERVICES] + [SINGLE["services"]["worker"]]:
        assert service["environment"]["MESHWATCH_CONFIG"] == "/etc/meshwatch/meshwatch.yaml"
        assert "./meshwatch.yaml:/etc/meshwatch/meshwatch.yaml:ro" in service["volumes"]
        assert service["environment"]["MESHWATCH_STORE__PASSWORD"].startswith(
            "${CLICKHOUSE_PASSWORD:?")
    for name, service in [*SERVICES.items(), *SINGLE["services"].items()]:
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET", key):
                assert str(value).startswith("${"), f"{name}.{key} must come from infra/.env"


def test_mounted_meshwatch_config_is_valid_and_points_at_the_stack():
    settings = SETTINGS
    assert settings.store.url == "http://clickhouse:8123"
    password = settings.store.password  # str today; SecretStr-proof
    assert getattr(password, "get_secret_value", lambda: password)() == ""  # from the env only
    assert settings.kafka.bootstrap_servers == ["kafka:19092"]
    assert settings.kafka.topics["envoy.access"].format == "envoy-json"
    assert settings.kafka.topics["otlp_spans"].format == "otlp-proto"
    assert settings.kafka.topics["otlp_logs"].format == "otlp-log"
    assert settings.api.host == "0.0.0.0"
    assert SERVICES["clickhouse"]["environment"]["CLICKHOUSE_USER"] == settings.store.user


def test_stage_workers():
    for name in STAGE_SERVICES:
        service = SERVICES[name]
        assert service["command"] == ["run", "--stage", name, "--metrics-port", str(METRICS_PORT)]
        # `--scale` must work: no fixed container name, no published port.
        assert "container_name" not in service and "ports" not in service, name
        assert service["stop_grace_period"], name  # checkpoint + commit on SIGTERM
        assert service["restart"] == "unless-stopped", name
    assert SERVICES["normalize"]["deploy"]["replicas"] >= 1
    assert SERVICES["detect"]["deploy"]["replicas"] >= 1
    # Exactly one notifier: its delivery threads work the whole outbox.
    assert SERVICES["notify"]["deploy"]["replicas"] == 1


def _long_running_meshwatch_services() -> dict[str, dict]:
    """The stage workers, the API and the single-process worker (not the one-shot migrate)."""
    services = {name: SERVICES[name] for name in sorted(STAGE_SERVICES | {"api"})}
    return {**services, "worker": SINGLE["services"]["worker"]}


def _metrics_port(service: dict) -> int | None:
    return parse_meshwatch_args(service["command"])[1].get("metrics_port")


def _healthcheck_url(service: dict) -> str:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test  # the image has python, not curl/wget
    (url,) = re.findall(r"urlopen\('([^']+)'", test[3])
    return url


@pytest.mark.parametrize("name", list(_long_running_meshwatch_services()))
def test_meshwatch_services_serve_metrics_and_probes_on_the_metrics_port(name):
    service = _long_running_meshwatch_services()[name]
    port = _metrics_port(service)
    # One port everywhere (prometheus.yml, the k8s manifests and the README use it too).
    assert port == METRICS_PORT, name
    # Reachable on the compose network only: exposed, never published (no token protects it).
    assert str(port) in [str(p) for p in service["expose"]], name
    assert not any(str(port) in str(p) for p in service.get("ports", [])), name
    url = _healthcheck_url(service)
    if name == "api":
        # The API's healthcheck stays on the port users reach: /healthz (public, and 503
        # while ClickHouse is unreachable); the metrics port's /livez would not notice a
        # wedged API.
        assert url == "http://127.0.0.1:8080/healthz"
    else:
        # Workers: /livez (fails only when the consume loop is stuck, never on an outage).
        assert url == f"http://127.0.0.1:{port}/livez", name
        check = service["healthcheck"]
        assert check["start_period"] and check["retries"] >= 3, name


def test_single_process_override():
    services = SINGLE["services"]
    # The override disables the stages (a profile nobody enables) and adds the one worker.
    assert {name: s for name, s in services.items() if name != "worker"} == {
        name: {"profiles": ["scale-out"]} for name in STAGE_SERVICES}
    worker = services["worker"]
    assert worker["command"] == ["run", "--serve", "--metrics-port", str(METRICS_PORT)]
    assert worker["deploy"]["replicas"] == 1  # whole-mesh state in one process
    assert "ports" not in worker  # users go through `api`
    assert _healthcheck_url(worker) == f"http://127.0.0.1:{METRICS_PORT}/livez"
    assert worker["stop_grace_period"]
    # The same image, environment and config mount as the services of the main file.
    base = SERVICES["detect"]
    for key in ("image", "build", "init", "environment", "volumes", "restart"):
        assert worker[key] == base[key], key
    for dep, spec in worker["depends_on"].items():
        assert dep in SERVICES and spec["condition"] == "service_completed_successfully"


def test_api_is_a_separate_process_with_a_health_endpoint():
    api = SERVICES["api"]
    assert api["command"] == ["serve", "--host", "0.0.0.0", "--metrics-port", str(METRICS_PORT)]
    assert "entrypoint" not in api
    assert "8080:8080" in api["ports"]
    assert _healthcheck_url(api) == "http://127.0.0.1:8080/healthz"


def test_prometheus_scrapes_every_meshwatch_process_on_its_metrics_port():
    prom = yaml_doc(INFRA / "prometheus.yml")
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    assert set(jobs) == {"meshwatch-api", "meshwatch-worker", "meshwatch-stages"}
    services = _long_running_meshwatch_services()
    scraped: dict[str, int] = {}  # compose service -> scraped port
    for target in jobs["meshwatch-api"]["static_configs"][0]["targets"]:
        host, _, port = target.partition(":")
        scraped[host] = int(port)
    for name in ("meshwatch-worker", "meshwatch-stages"):
        for sd in jobs[name]["dns_sd_configs"]:
            assert sd["type"] == "A"  # one record per container: `--scale` needs no change
            scraped.update(dict.fromkeys(sd["names"], sd["port"]))
    assert jobs["meshwatch-worker"]["dns_sd_configs"][0]["names"] == ["worker"]
    assert set(jobs["meshwatch-stages"]["dns_sd_configs"][0]["names"]) == STAGE_SERVICES
    # Every long-running meshwatch process is scraped, on the port its command line serves.
    assert scraped == {name: _metrics_port(s) for name, s in services.items()}
    # The stage each target came from becomes a label.
    (relabel,) = jobs["meshwatch-stages"]["relabel_configs"]
    assert relabel == {"source_labels": ["__meta_dns_name"], "target_label": "stage"}
    # The metrics port needs no token: no job carries credentials, Prometheus mounts no secrets.
    for name, job in jobs.items():
        assert job.get("metrics_path", "/metrics") == "/metrics", name
        assert not {"authorization", "basic_auth", "oauth2", "bearer_token_file"} & set(job), name
    assert SERVICES["prometheus"]["volumes"] == [
        "./prometheus.yml:/etc/prometheus/prometheus.yml:ro", "prometheus-data:/prometheus"]


def test_env_example_defines_every_variable_compose_requires():
    lines = (COMPOSE_FILE.read_text(encoding="utf-8").splitlines()
             + SINGLE_FILE.read_text(encoding="utf-8").splitlines())
    text = "\n".join(line.split(" #", 1)[0] for line in lines if not line.lstrip().startswith("#"))
    required = set(re.findall(r"\$\{(\w+):\?", text)) | set(re.findall(r"\$\{(\w+):-", text))
    example = (INFRA / ".env.example").read_text(encoding="utf-8")
    defined = set(re.findall(r"^(\w+)=", example, re.M))
    assert required and required <= defined, sorted(required - defined)
    # infra/.env holds the real values: git-ignored.
    assert ".env" in (INFRA / ".gitignore").read_text(encoding="utf-8").split()
