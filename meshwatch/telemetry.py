"""Self-telemetry with the OpenTelemetry SDK: metrics as Prometheus text on ``/metrics``
(and optionally OTLP), and a trace span around each processed batch.

The metric names are a contract (infra/README.md, the Grafana dashboard):

- ``meshwatch_records_consumed_total{topic,format}``
- ``meshwatch_records_parsed_total{topic,format}``
- ``meshwatch_parse_failures_total{topic,format,reason}``
- ``meshwatch_consumer_lag{topic,partition}``
- ``meshwatch_batch_seconds``, ``meshwatch_store_write_seconds{table}``
- ``meshwatch_alerts_raised_total{detector,severity}``
- ``meshwatch_notifications_total{sink,outcome}``
- ``meshwatch_state_evictions_total{map}``

Instruments are updated once per batch from aggregated counts, never per record, so telemetry
stays off the hot path. One process has one `Telemetry` (`get_telemetry`); gauges and eviction
totals are read through callbacks the pipeline and worker register.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry, generate_latest

from meshwatch import __version__

log = logging.getLogger(__name__)

_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

GaugeSource = Callable[[], Mapping[tuple[tuple[str, str], ...], float]]


class Telemetry:
    """The process's meter, tracer and Prometheus registry."""

    def __init__(self, otlp_endpoint: str | None = None, service_name: str = "meshwatch") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        readers: list[MetricReader] = [PrometheusMetricReader(registry=self.registry)]
        resource = Resource.create({"service.name": service_name,
                                    "service.version": __version__})
        self.tracer_provider = TracerProvider(resource=resource)
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            base = otlp_endpoint.rstrip("/")
            readers.append(PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=f"{base}/v1/metrics"), export_interval_millis=15000))
            self.tracer_provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
        self.meter_provider = MeterProvider(metric_readers=readers, resource=resource)
        meter = self.meter_provider.get_meter("meshwatch", __version__)
        self.tracer: Tracer = self.tracer_provider.get_tracer("meshwatch", __version__)
        self.records_consumed = meter.create_counter(
            "meshwatch.records.consumed", description="Raw records read from a source")
        self.records_parsed = meter.create_counter(
            "meshwatch.records.parsed", description="Edge events produced by parsers")
        self.parse_failures = meter.create_counter(
            "meshwatch.parse.failures", description="Records dead-lettered, by reason")
        self.batch_seconds = meter.create_histogram(
            "meshwatch.batch.seconds", unit="s", description="Time to process one batch",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS)
        self.store_write_seconds = meter.create_histogram(
            "meshwatch.store.write.seconds", unit="s", description="Time of one store write",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS)
        self.alerts_raised = meter.create_counter(
            "meshwatch.alerts.raised", description="Alerts opened, by detector and severity")
        self.notifications = meter.create_counter(
            "meshwatch.notifications", description="Notification attempts by sink and outcome")
        self._gauges: dict[str, list[GaugeSource]] = {"lag": [], "evictions": []}
        self._lock = threading.Lock()
        meter.create_observable_gauge(
            "meshwatch.consumer.lag", callbacks=[self._observe("lag")],
            description="Records behind the log end, per partition")
        meter.create_observable_counter(
            "meshwatch.state.evictions", callbacks=[self._observe("evictions")],
            description="Entries evicted from bounded in-memory state, by map")

    def _observe(self, kind: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                sources = list(self._gauges[kind])
            for source in sources:
                try:
                    values = source()
                except Exception:  # a broken source must not break /metrics, but must show
                    log.warning("telemetry source %r failed", source, exc_info=True)
                    continue
                for labels, value in values.items():
                    yield Observation(value, dict(labels))
        return callback

    def watch(self, kind: str, source: GaugeSource) -> None:
        """Register a callback giving {labels: value} for ``lag`` or ``evictions``."""
        with self._lock:
            self._gauges[kind].append(source)

    def unwatch(self, kind: str, source: GaugeSource) -> None:
        with self._lock:
            if source in self._gauges[kind]:
                self._gauges[kind].remove(source)

    def prometheus_text(self) -> bytes:
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


_TELEMETRY: Telemetry | None = None
_INIT_LOCK = threading.Lock()


def get_telemetry(otlp_endpoint: str | None = None) -> Telemetry:
    """The process-wide telemetry (created on first use; ``otlp_endpoint`` applies then)."""
    global _TELEMETRY
    with _INIT_LOCK:
        if _TELEMETRY is None:
            _TELEMETRY = Telemetry(otlp_endpoint=otlp_endpoint)
        return _TELEMETRY


def labels(**kw: Any) -> tuple[tuple[str, str], ...]:
    """A hashable label set for gauge sources."""
    return tuple(sorted((k, str(v)) for k, v in kw.items()))
