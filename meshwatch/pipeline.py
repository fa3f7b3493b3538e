"""The composition root: records -> parsers -> identity -> graph -> detectors -> alerts -> store.

This is the one place that wires `ingest`, `detectors` and `alerts` together. Sources (files,
Kafka) feed `Pipeline.process` in batches; `checkpoint` writes everything buffered (events,
windows, dead letters, alerts), then the processing state (parser pairing state, identity map,
open windows, detector baselines) — in that order, so the caller may commit source offsets only
after `checkpoint` returns (flush-then-commit, DESIGN.md step 7).
"""

from __future__ import annotations

import hashlib
import pickle
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from alerts.export import AlertFileExport
from alerts.lifecycle import AlertBook, AlertChange
from alerts.persist import AlertWriter
from alerts.runbooks import RunbookLinks
from detectors.engine import DetectionEngine
from ingest.graph import EdgeGraph
from ingest.identity import IdentityResolver
from ingest.parsers.base import Parser, make_parser
from meshwatch.records import Alert, EdgeEvent, ParseFailure, RawRecord
from meshwatch.settings import Settings
from meshwatch.store import Store
from meshwatch.store.store import event_id

STATE_VERSION = 1
# Formats with one record per line; a Kafka message may batch several newline-separated lines.
LINE_FORMATS = frozenset({"envoy-text", "envoy-json", "ztunnel"})
_JSON_DECODER = msgspec.json.Decoder()


def split_lines(format_name: str, payload: bytes) -> list[bytes]:
    """The records in one payload: several for a batch of log lines, else the payload itself.

    With ``auto`` a multi-line payload is split only when it is clearly line records (an Envoy
    TEXT line, or a first line that is a whole JSON object), never a pretty-printed document.
    """
    if b"\n" not in payload.rstrip(b"\r\n"):
        return [payload]
    if format_name == "auto":
        first = payload.lstrip()[:1]
        if first == b"{":
            try:
                _JSON_DECODER.decode(payload.lstrip().split(b"\n", 1)[0])
            except msgspec.DecodeError:
                return [payload]
        elif first != b"[":
            return [payload]
    elif format_name not in LINE_FORMATS:
        return [payload]
    return [line for line in payload.splitlines() if line.strip()]


@dataclass
class PipelineStats:
    """What a run did; printed as the end-of-run summary and exported as metrics."""

    records: int = 0
    events: int = 0
    parse_failures: int = 0
    windows: int = 0
    findings: Counter[str] = field(default_factory=Counter)
    alerts_opened: Counter[str] = field(default_factory=Counter)
    failures_by_reason: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "events": self.events,
            "parse_failures": self.parse_failures,
            "windows": self.windows,
            "findings": dict(self.findings),
            "alerts_opened": dict(self.alerts_opened),
        }


class Pipeline:
    """One worker's processing state and the writers it flushes."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        alerts_out: Path | None = None,
        format_options: dict[str, dict[str, Any]] | None = None,
        checkpoint_scope: str = "files",
    ) -> None:
        self.settings = settings
        self.store = store
        self.checkpoint_scope = checkpoint_scope
        self.format_options = format_options or {}
        self.parsers: dict[str, Parser] = {}
        self.resolver = IdentityResolver(
            trust_domain=settings.identity.trust_domain,
            cluster_domain=settings.identity.cluster_domain,
            max_addresses=settings.identity.max_addresses,
            address_ttl=settings.identity.address_ttl,
        )
        g = settings.graph
        self.graph = EdgeGraph(
            window=g.window,
            allowed_lateness=g.allowed_lateness,
            max_edges=g.max_edges,
            call_dedup_ttl=g.call_dedup_ttl,
            max_calls=g.max_calls,
        )
        self.engine = DetectionEngine.from_config(settings.detectors)
        self.alert_book = AlertBook(
            RunbookLinks(settings.alerts.public_url, settings.alerts.runbook_base_url),
            max_evidence=settings.alerts.max_evidence,
        )
        self.alert_writer = AlertWriter(store, self.alert_book)
        self.export = AlertFileExport(alerts_out) if alerts_out else None
        self.stats = PipelineStats()
        self._events: list[tuple[str, EdgeEvent, str, str, str]] = []
        self._windows: list[dict[str, Any]] = []
        self._dead: list[ParseFailure] = []
        self._alert_changes: list[AlertChange] = []
        self._notes: list[dict[str, Any]] = []

    # -- set-up ----------------------------------------------------------------------------

    def _parser(self, format_name: str) -> Parser:
        parser = self.parsers.get(format_name)
        if parser is None:
            options = dict(self.format_options.get(format_name, {}))
            if format_name in ("otlp-json", "otlp-proto", "auto"):
                options.setdefault("pairing_ttl", self.settings.spans.pairing_ttl)
                options.setdefault("max_pending", self.settings.spans.max_pending)
            parser = make_parser(format_name, **options)
            self.parsers[format_name] = parser
        return parser

    def restore(self) -> bool:
        """Resume from the last checkpoint in the store, if any; returns whether it did."""
        self.alert_book.load(self.store.list_alerts(limit=100_000, status=["open",
                                                                        "acknowledged",
                                                                        "suppressed"]))
        saved = self.store.load_checkpoint(self.checkpoint_scope, "pipeline")
        if saved is None:
            return False
        blob, _offsets = saved
        state = pickle.loads(blob)  # noqa: S301 - our own checkpoint table
        if state.get("version") != STATE_VERSION:
            return False
        self.parsers = state["parsers"]
        self.resolver = state["resolver"]
        self.graph = state["graph"]
        self.engine.restore(state["engine"])
        return True

    # -- processing ------------------------------------------------------------------------

    def process(self, records: Iterable[RawRecord]) -> None:
        """Parse, resolve, aggregate and score one batch of raw records."""
        for record in records:
            self.stats.records += 1
            origin = str(record.origin)
            parser = self._parser(record.format)
            index = 0
            for line in split_lines(record.format, record.payload):
                for item in parser.parse(line, record.origin):
                    if isinstance(item, ParseFailure):
                        self._dead_letter(item)
                    else:
                        self._on_event(item, event_id(origin, index), origin)
                    index += 1
        self._after_batch()

    def advance_idle(self, seconds: float) -> None:
        """No input for a while: move event time on by the wall-clock gap and close windows."""
        if self.graph.max_ts == float("-inf"):
            return
        self.graph.max_ts += seconds
        self._after_batch()

    def _dead_letter(self, failure: ParseFailure) -> None:
        self._dead.append(failure)
        self.stats.parse_failures += 1
        self.stats.failures_by_reason[failure.reason.split(":", 1)[0][:80]] += 1

    def _on_event(self, event: EdgeEvent, eid: str, origin: str) -> None:
        event = self.resolver.resolve(event)
        observation = self.graph.add(event)
        self.stats.events += 1
        if observation.notes:
            self._notes.extend(observation.notes)
        if self.settings.store.store_events:
            self._events.append((eid, event, observation.edge_src, observation.edge_dst, origin))

    def _flush_parsers(self, now: float | None) -> None:
        for name, parser in self.parsers.items():
            for item in parser.flush(now):
                if isinstance(item, ParseFailure):
                    self._dead_letter(item)
                else:
                    digest = hashlib.blake2b(item.to_json(), digest_size=12).hexdigest()
                    self._on_event(item, digest, f"{name}:flush")

    def _after_batch(self) -> None:
        if self.graph.max_ts != float("-inf"):
            self._flush_parsers(self.graph.max_ts)
        findings = self.engine.process_events(self._notes)
        self._notes = []
        windows = self.graph.advance()
        self._take_windows(windows)
        findings += self.engine.process_windows(self._complete(windows))
        self._take_findings(findings)
        if self.graph.max_ts != float("-inf"):
            now = datetime.fromtimestamp(self.graph.max_ts, UTC)
            self._alert_changes.extend(self.alert_book.resolve_quiet(now))

    def _complete(self, windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Windows fit to score: the first part of a window the input fully covers.

        Late parts, early-evicted buckets and the window cut off by the end of the input hold
        partial counts; scoring them would flag every end of file as a traffic drop.
        """
        horizon = self.graph.max_ts
        return [w for w in windows if w["part"] == 0
                and w["window_start"].timestamp() + w["window_seconds"] <= horizon]

    def _take_windows(self, windows: list[dict[str, Any]]) -> None:
        self.stats.windows += len(windows)
        self._windows.extend(windows)

    def _take_findings(self, findings: list[Any]) -> None:
        for finding in findings:
            self.stats.findings[finding.detector] += 1
            change = self.alert_book.apply(finding)
            if change.kind == "opened":
                self.stats.alerts_opened[finding.detector] += 1
            self._alert_changes.append(change)

    def finish(self) -> None:
        """End of input: release held spans, close every window, score them."""
        self._flush_parsers(None)
        findings = self.engine.process_events(self._notes)
        self._notes = []
        windows = self.graph.close_all()
        self._take_windows(windows)
        findings += self.engine.process_windows(self._complete(windows))
        self._take_findings(findings)

    # -- writing ---------------------------------------------------------------------------

    def flush(self) -> list[Alert]:
        """Write everything buffered to the store; returns the alerts written."""
        if self._events:
            self.store.insert_events(self._events)
            self._events = []
        if self._windows:
            self.store.insert_windows([_window_row(w) for w in self._windows])
            self._windows = []
        if self._dead:
            self.store.insert_dead_letters(self._dead)
            self._dead = []
        written: list[Alert] = []
        if self._alert_changes:
            written = self.alert_writer.write(self._alert_changes)
            self._alert_changes = []
            if self.export is not None:
                self.export.update(written)
        if self.export is not None:
            self.export.flush()
        return written

    def checkpoint(self, offsets: dict[str, int] | None = None) -> list[Alert]:
        """Flush writers, then persist processing state (with the offsets it corresponds to)."""
        written = self.flush()
        state = {
            "version": STATE_VERSION,
            "parsers": self.parsers,
            "resolver": self.resolver,
            "graph": self.graph,
            "engine": self.engine.state(),
        }
        self.store.save_checkpoint(self.checkpoint_scope, "pipeline",
                                   pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), offsets)
        return written


def _window_row(window: dict[str, Any]) -> dict[str, Any]:
    row = dict(window)
    for key in ("window_start", "first_seen", "last_seen", "min_cert_not_after"):
        value = row.get(key)
        if isinstance(value, datetime):
            row[key] = value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return row
