"""Settings: the one module that reads the environment and the config file.

Sources, lowest to highest precedence: defaults, the YAML config file (``--config`` or
``MESHWATCH_CONFIG``), environment variables ``MESHWATCH_<SECTION>__<KEY>`` (e.g.
``MESHWATCH_STORE__URL``), then explicit overrides from the command line. Unknown keys and bad
values fail at start-up with a message naming the key (`ConfigError`).
"""

from __future__ import annotations

import contextvars
import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "MESHWATCH_"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


class ConfigError(ValueError):
    """A configuration problem, phrased for the operator (names the key)."""


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` or ``"250ms"``.

    >>> parse_duration("15m"), parse_duration(2.5), parse_duration("1d")
    (900.0, 2.5, 86400.0)
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 15m, 2h, 1d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError(f"duration must not be negative: {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

FORMAT_NAMES = ("auto", "envoy-text", "envoy-json", "otlp-log", "otlp-json", "otlp-proto",
                "ztunnel", "edge-event")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StoreSettings(_Section):
    """Where events, windows and alerts are kept."""

    path: Path = Field(Path("meshwatch-data"), description="Embedded (chdb) data directory.")
    url: str | None = Field(
        None, description="ClickHouse server URL (http[s]://host:8123); overrides `path`."
    )
    user: str = Field("default", description="ClickHouse server user.")
    password: str = Field("", repr=False, description="ClickHouse server password (use the "
                                                      "environment).")
    database: str = Field("meshwatch", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                          description="Database meshwatch creates and uses.")
    verify_tls: bool = Field(True, description="Verify the server's TLS certificate.")
    store_events: bool = Field(True, description="Keep raw edge events (subject to retention).")
    manage_schema: bool = Field(
        True, description="Apply migrations and retention at start-up. Set false on a ClickHouse "
                          "cluster whose DDL is managed from infra/clickhouse/cluster.sql; "
                          "start-up then only checks that every migration is recorded.")
    retention_days: dict[str, int] = Field(
        default_factory=lambda: {
            "edge_events": 7, "edge_windows": 90, "dead_letters": 30, "alerts": 365,
        },
        description="TTL per table in days.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value and not re.match(r"^https?://", value):
            raise ValueError("must start with http:// or https://")
        return value or None

    @field_validator("retention_days")
    @classmethod
    def _check_retention(cls, value: dict[str, int]) -> dict[str, int]:
        known = {"edge_events", "edge_windows", "dead_letters", "alerts"}
        for table, days in value.items():
            if table not in known:
                raise ValueError(f"unknown table {table!r} (known: {', '.join(sorted(known))})")
            if days < 1:
                raise ValueError(f"{table}: retention must be at least 1 day")
        return value


class TopicSettings(_Section):
    """How to read one Kafka topic."""

    format: str = "auto"
    format_string: str | None = Field(
        None, description="Envoy format string for envoy-text topics with a custom format."
    )

    @field_validator("format")
    @classmethod
    def _check_format(cls, value: str) -> str:
        if value not in FORMAT_NAMES:
            raise ValueError(f"unknown format {value!r} (known: {', '.join(FORMAT_NAMES)})")
        return value


class KafkaSettings(_Section):
    """The Kafka consumer group meshwatch runs in."""

    bootstrap_servers: list[str] = Field(default_factory=lambda: ["localhost:9092"],
                                         description="Brokers (a list, or comma-separated).")
    group_id: str = Field("meshwatch", description="Consumer group; workers sharing it split "
                                                   "the partitions.")
    topics: dict[str, TopicSettings] = Field(
        default_factory=lambda: {
            "envoy.access": TopicSettings(format="envoy-json"),
            "otlp_spans": TopicSettings(format="otlp-proto"),
        },
        description="Topic -> format (`name: envoy-json`) or {format, format_string}. A topic "
        "the cluster does not have is named in a warning; the others are consumed.",
    )
    max_poll_records: int = Field(5000, ge=1, description="Records per poll (batch size).")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new group starts.")
    session_timeout: Duration = Field(10.0, description="Group session time-out.")
    max_poll_interval: Duration = Field(300.0, description="Longest gap between polls.")
    commit_interval: Duration = Field(5.0, description="Flush-then-commit at most this often.")
    edges_topic: str = Field(
        "meshwatch.edges", description="Scale-out: normalize -> detect hand-off topic (EdgeEvents "
                                       "keyed by source identity).")
    alert_changes_topic: str = Field(
        "meshwatch.alert-changes", description="Scale-out: detect -> notify hand-off topic.")
    state_topic: str = Field(
        "meshwatch.state", description="Scale-out: per-partition processing state (compacted; "
                                       "follows a partition to its new owner).")
    dead_letter_topic: str | None = Field(
        None, description="Also copy dead letters (raw bytes, reason in headers) to this topic.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = Field(None, description="e.g. PLAIN, SCRAM-SHA-512.")
    sasl_username: str | None = None
    sasl_password: str | None = Field(None, repr=False, description="Use the environment.")
    ssl_cafile: Path | None = Field(None, description="CA bundle for SSL listeners.")

    @field_validator("topics", mode="before")
    @classmethod
    def _topics_shorthand(cls, value: Any) -> Any:
        # Accept `topic: envoy-json` as shorthand for `topic: {format: envoy-json}`.
        if isinstance(value, dict):
            return {k: ({"format": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_servers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value


class GraphSettings(_Section):
    """The per-edge window aggregator."""

    window: Duration = Field(60.0, gt=0, description="Tumbling window length.")
    allowed_lateness: Duration = Field(30.0, description="Event-time slack before a window closes.")
    max_edges: int = Field(200_000, ge=1, description="Open edge windows kept in memory.")
    call_dedup_ttl: Duration = Field(
        120.0, gt=0, description="How long a call id is remembered to merge client/server records."
    )
    max_calls: int = Field(500_000, ge=1, description="Call ids remembered for that merge.")


class IdentitySettings(_Section):
    """Identity resolution."""

    trust_domain: str = Field("cluster.local", description="SPIFFE trust domain of the mesh.")
    cluster_domain: str = Field("cluster.local", description="Kubernetes cluster DNS domain.")
    max_addresses: int = Field(100_000, ge=1, description="Learned address -> workload entries.")
    address_ttl: Duration = Field(3600.0, gt=0, description="Forget an address after this long.")


class SpanSettings(_Section):
    """CLIENT/SERVER span pairing."""

    pairing_ttl: Duration = Field(10.0, gt=0, description="Wait this long (event time) for a "
                                                         "span's partner.")
    max_pending: int = Field(100_000, ge=1, description="Unpaired spans held at most.")


class DeliverySettings(_Section):
    """How the outbox delivers notifications (see alerts/outbox.py)."""

    timeout: Duration = Field(10.0, gt=0, description="Per-request time-out of a sink.")
    retry_initial: Duration = Field(1.0, gt=0, description="First retry delay (then doubles).")
    retry_max: Duration = Field(300.0, gt=0, description="Longest delay between retries.")
    give_up_after: Duration = Field(
        86400.0, gt=0, description="Move a notification to the failed list after this long."
    )
    drain_timeout: Duration = Field(
        30.0, description="`meshwatch run --input`: wait this long for deliveries before exit."
    )


class AlertSettings(_Section):
    """How alerts are linked, resolved, routed and delivered.

    ``routing`` (inline) or ``routing_file`` (a YAML file) holds the Alertmanager-shaped
    routing tree and receivers documented in alerts/routing.py. Secret-bearing sink options
    are written ``{secret: NAME}`` and resolved from ``secrets`` (set them through the
    environment: ``MESHWATCH_ALERTS__SECRETS__NAME``), so the routing file holds no secrets.
    """

    public_url: str = Field("http://127.0.0.1:8080", description="Base URL of the feed/API.")
    runbook_base_url: str | None = Field(
        None, description="External runbook base (company wiki); overrides the built-in pages."
    )
    max_evidence: int = Field(5, ge=1, le=50, description="Sample calls kept per alert.")
    series_windows: int = Field(
        12, ge=0, le=1440,
        description="Recent windows of the alert's edge stored as evidence (0: none).",
    )
    quiet_period: Duration = Field(
        6 * 3600.0, gt=0, description="Resolve an alert after this long without a finding."
    )
    quiet_periods: dict[str, Duration] = Field(
        default_factory=dict, description="Per-detector quiet period, e.g. {plaintext_edge: 1d}."
    )
    routing: dict[str, Any] | None = Field(
        None, description="Routing tree and receivers (Alertmanager-shaped; alerts/routing.py)."
    )
    routing_file: Path | None = Field(None, description="YAML file with the routing tree.")
    secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="Named secrets for sinks ({secret: NAME})."
    )
    deny_private_webhooks: bool = Field(
        False, description="Refuse webhook targets in private/loopback/link-local ranges."
    )
    webhook_deny_networks: list[str] = Field(
        default_factory=list, description="Extra CIDR ranges webhook targets may not be in."
    )
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)

    @field_validator("quiet_periods")
    @classmethod
    def _positive_quiet(cls, value: dict[str, float]) -> dict[str, float]:
        for name, seconds in value.items():
            if seconds <= 0:
                raise ValueError(f"{name}: quiet period must be positive")
        return value

    @field_validator("webhook_deny_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for i, item in enumerate(value):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"[{i}]: not a CIDR network: {item!r}") from None
        return value

    @model_validator(mode="after")
    def _load_routing_file(self) -> AlertSettings:
        if self.routing_file is not None:
            if self.routing is not None:
                raise ValueError("set either routing or routing_file, not both")
            loaded = _read_yaml(self.routing_file, what="alerts.routing_file")
            object.__setattr__(self, "routing", loaded)
        return self


class TelemetrySettings(_Section):
    """Self-telemetry: /metrics is always on; OTLP export is optional."""

    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP endpoint (e.g. http://otel-collector:4318) for metrics "
                          "and batch traces.")


class ApiSettings(_Section):
    """The HTTP API and web UI."""

    host: str = Field("127.0.0.1", description="Address the API/UI listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port the API/UI listens on.")
    # Authentication is always on: there is deliberately no switch for it.
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed cross-origin API calls (exact, e.g. https://soc.example); "
                    "empty: CORS off.")
    session_ttl: Duration = Field(12 * 3600.0, gt=0, description="Web UI login lifetime.")
    cookie_secure: Literal["auto", "always", "never"] = Field(
        "auto", description="Secure flag on the session cookie (auto: when served over HTTPS).")
    auth_failure_limit: int = Field(
        20, ge=1, description="Invalid credentials per client address per window before 429.")
    auth_failure_window: Duration = Field(60.0, gt=0, description="That window.")
    stream_keepalive: Duration = Field(15.0, gt=0, description="SSE keep-alive interval.")
    stream_poll_interval: Duration = Field(
        1.0, gt=0, description="How often the SSE feed polls the store for other writers.")
    feedback_rule_ttl: Duration = Field(
        30 * 86400.0, gt=0, description="Lifetime of a rule a false-positive verdict creates.")

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for i, origin in enumerate(value):
            if not re.match(r"^https?://[^/\s*]+$", origin):
                raise ValueError(f"[{i}]: an origin is scheme://host[:port] without a path or "
                                 f"wildcard, got {origin!r}")
        return value


class Settings(BaseSettings):
    """Everything meshwatch can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    store: StoreSettings = Field(default_factory=StoreSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    graph: GraphSettings = Field(default_factory=GraphSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    spans: SpanSettings = Field(default_factory=SpanSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    detectors: dict[str, Any] = Field(
        default_factory=dict,
        description="Detector configuration (see detectors/config.py); validated at start-up.",
    )
    detectors_file: Path | None = Field(
        None, description="A YAML file with detector configuration, merged over `detectors`."
    )

    @model_validator(mode="after")
    def _load_detectors_file(self) -> Settings:
        if self.detectors_file is not None:
            loaded = _read_yaml(self.detectors_file, what="detectors_file")
            if "detectors" in loaded and isinstance(loaded["detectors"], dict):
                loaded = loaded["detectors"]
            merged = dict(self.detectors)
            merged.update(loaded)
            object.__setattr__(self, "detectors", merged)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Command-line overrides win over the environment, which wins over the file: a
        # deployment (Kubernetes, compose) can override one key of a shared file.
        return (init_settings, env_settings, _FileSource(settings_cls))


_FILE_DATA: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "meshwatch_file", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """The YAML config file's contents, as the lowest-precedence settings source."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get() or {})


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what}: {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: {path} must hold a mapping at the top level")
    return data


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}")
    return f"invalid configuration ({source}):\n" + "\n".join(lines)


def load_settings(
    config_file: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Build `Settings` from file, environment and overrides, or raise `ConfigError`.

    ``overrides`` is a nested dict, e.g. ``{"store": {"path": "/tmp/x"}}``; ``None`` values are
    ignored so CLI options that were not given do not mask the file.

    >>> load_settings(overrides={"graph": {"window": "2m"}}).graph.window
    120.0
    >>> load_settings(overrides={"graph": {"windw": 1}})
    Traceback (most recent call last):
    ...
    meshwatch.settings.ConfigError: invalid configuration (defaults < environment < overrides):
      graph.windw: unknown key
    """
    if config_file is None:
        config_file = os.environ.get(ENV_PREFIX + "CONFIG") or None
    file_data: dict[str, Any] = {}
    sources = ["defaults", "environment"]
    if config_file is not None:
        file_data = _read_yaml(Path(config_file), what="config")
        sources.insert(1, str(config_file))
    init = _drop_none(overrides or {})
    if init:
        sources.append("overrides")
    token = _FILE_DATA.set(file_data)
    try:
        return Settings(**init)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, " < ".join(sources))) from None
    finally:
        _FILE_DATA.reset(token)


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = _drop_none(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def env_flag(name: str) -> str | None:
    """Read a non-config environment knob (e.g. a test server URL); the one other env reader."""
    return os.environ.get(name) or None
