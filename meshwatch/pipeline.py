"""The composition root: records -> parsers -> identity -> graph -> detectors -> alerts -> store.

This is the one place that wires `ingest`, `detectors` and `alerts` together. Sources (files,
Kafka) feed `Pipeline.process` in batches; `checkpoint` writes everything buffered (events,
windows, dead letters, alerts), then the processing state (parser pairing state, identity map,
open windows, detector baselines) — in that order, so the caller may commit source offsets only
after `checkpoint` returns (flush-then-commit, DESIGN.md step 7).
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import msgspec

from alerts.actions import StatusMirror
from alerts.export import AlertFileExport
from alerts.feedback import FeedbackRules, detector_thresholds
from alerts.lifecycle import AlertBook, AlertChange
from alerts.notify import Notifier
from alerts.persist import AlertWriter
from alerts.runbooks import RunbookLinks
from alerts.series import EdgeSeries
from detectors.engine import DetectionEngine
from ingest.graph import EdgeGraph
from ingest.identity import IdentityResolver
from ingest.parsers.base import Parser, make_parser
from meshwatch.bounded import BoundedMap
from meshwatch.records import Alert, EdgeEvent, ParseFailure, RawRecord
from meshwatch.settings import ConfigError, Settings
from meshwatch.store import Store
from meshwatch.store.store import event_id
from meshwatch.telemetry import get_telemetry, labels

STATE_VERSION = 2


class CheckpointStore(Protocol):
    """Where a pipeline saves and finds its processing state (Store, or a Kafka state topic)."""

    def save_checkpoint(self, scope: str, name: str, state: bytes,
                        offsets: dict[str, int] | None = None) -> None: ...

    def load_checkpoint(self, scope: str, name: str) -> tuple[bytes, dict[str, int]] | None: ...
# Formats with one record per line; a Kafka message may batch several newline-separated lines.
LINE_FORMATS = frozenset({"envoy-text", "envoy-json", "ztunnel"})
_JSON_DECODER = msgspec.json.Decoder()


@functools.lru_cache(maxsize=256)
def _format_name(format_key: str) -> str:
    """``envoy-text`` of a format key ``envoy-text#topic`` (a topic with its own options)."""
    return format_key.split("#", 1)[0]


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
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        # Silences, routing and durable delivery of alert changes (alerts/notify.py).
        self.notifier = notifier
        self.checkpoint_scope = checkpoint_scope
        #: Where processing state is saved: the store's checkpoint table by default; the
        #: scale-out stages use a Kafka state topic so a partition's state follows it between
        #: workers whatever store each writes to.
        self.checkpoints: CheckpointStore = store
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
        a = settings.alerts
        _check_quiet_periods(a.quiet_periods)
        self.alert_book = AlertBook(
            RunbookLinks(a.public_url, a.runbook_base_url),
            max_evidence=a.max_evidence,
            quiet_periods=a.quiet_periods,
            default_quiet_period=a.quiet_period,
            series=EdgeSeries(store, a.series_windows, g.window) if a.series_windows else None,
        )
        self.alert_writer = AlertWriter(store, self.alert_book)
        # The analyst loop (alerts/feedback.py, alerts/actions.py): rules from false-positive
        # verdicts drop matching findings (reloaded at each checkpoint); analyst status changes
        # from an API in this process reach the alert book at each flush; listeners (the live
        # feed) hear of every alert written.
        self.feedback_rules = FeedbackRules(store, detector_thresholds(self.engine.configured))
        self.status_mirror = StatusMirror()
        self.alert_listeners: list[Callable[[list[Alert]], None]] = []
        self.export = AlertFileExport(alerts_out) if alerts_out else None
        self.stats = PipelineStats()
        self._events: list[tuple[str, EdgeEvent, str, str, str]] = []
        self._windows: list[dict[str, Any]] = []
        self._dead: list[ParseFailure] = []
        self._alert_changes: list[AlertChange] = []
        self._notes: list[dict[str, Any]] = []
        #: Extra destination for dead letters (the Kafka dead-letter topic); called before the
        #: store write, and must raise if it could not take them.
        self.dead_letter_sink: Callable[[list[ParseFailure]], None] | None = None
        #: Extra destination for alert changes (the scale-out notify stage's topic); called
        #: with what was written at each flush, and must raise if it could not take them.
        self.alert_change_sink: Callable[[list[AlertChange]], None] | None = None
        #: Keys of records already processed (scale-out detect stage: a normalize worker that
        #: crashed before committing republishes what it had sent; those copies are dropped).
        self.seen_keys: BoundedMap[str, bool] | None = None
        self.duplicates_dropped = 0
        #: File mode (records without a partition, checkpoints without caller offsets): per
        #: input, its first offset, a hash of its first record and the last offset processed.
        #: Saved with each checkpoint, so a rerun after a crash resumes after the checkpoint
        #: instead of counting the checkpointed records twice (`_resumed_past`).
        self._files: dict[str, list[int]] = {}
        self._file_resume: dict[str, list[int]] = {}
        self.resumed_past = 0
        self.telemetry = get_telemetry()
        self.telemetry.watch("evictions", self.evictions)

    # -- set-up ----------------------------------------------------------------------------

    def _parser(self, format_key: str) -> Parser:
        """The parser for a record's format key: a format name, or ``format#topic`` when a
        topic has its own options (a custom Envoy format string)."""
        parser = self.parsers.get(format_key)
        if parser is None:
            format_name = format_key.split("#", 1)[0]
            options = dict(self.format_options.get(format_key, {}))
            if format_name in ("otlp-json", "otlp-proto", "auto"):
                options.setdefault("pairing_ttl", self.settings.spans.pairing_ttl)
                options.setdefault("max_pending", self.settings.spans.max_pending)
            parser = make_parser(format_name, **options)
            self.parsers[format_key] = parser
        return parser

    def prepare(self, format_keys: Iterable[str]) -> None:
        """Build the parsers for these format keys now (a bad option fails at start-up)."""
        for key in format_keys:
            self._parser(key)

    def restore(self, load_active_alerts: bool = True) -> dict[str, int] | None:
        """Resume from the last checkpoint, if any; returns its source offsets.

        The active alerts come from the checkpoint too (not from the store), so records replayed
        after a crash update exactly the counts they updated the first time. Without a
        checkpoint they are loaded from the store unless ``load_active_alerts`` is false (a
        partition's state in scale-out must depend on that partition only).
        """
        saved = self.checkpoints.load_checkpoint(self.checkpoint_scope, "pipeline")
        state = pickle.loads(saved[0]) if saved is not None else {}  # noqa: S301 - our table
        if state.get("version") != STATE_VERSION:
            if load_active_alerts:
                self.alert_book.load(self.store.list_alerts(
                    limit=100_000, status=["open", "acknowledged", "suppressed"]))
            return None
        self.parsers = state["parsers"]
        self.resolver = state["resolver"]
        self.graph = state["graph"]
        self.engine.restore(state["engine"])
        self.alert_book.restore_state(state["alerts"])
        self.seen_keys = state["seen_keys"]
        offsets = saved[1] if saved is not None else None
        self._file_resume = _file_positions(offsets or {})
        return offsets

    # -- processing ------------------------------------------------------------------------

    def process(self, records: Iterable[RawRecord]) -> None:
        """Parse, resolve, aggregate and score one batch of raw records.

        The batch goes through one stage at a time (parse every record, then resolve every
        event, then aggregate them) rather than record by record: each stage's code and
        caches stay hot, about a fifth less time per record (`meshwatch bench ingest`). Each
        stage still sees the events in input order, so the result is the same.
        """
        started = time.perf_counter()
        consumed: Counter[tuple[str, str]] = Counter()
        parsed: Counter[tuple[str, str]] = Counter()
        failed_before = self.stats.parse_failures
        with self.telemetry.tracer.start_as_current_span("meshwatch.batch") as span:
            keep = self.settings.store.store_events
            events: list[EdgeEvent] = []
            # (event id, origin) of each event, for the events table only: a blake2b per
            # event is a tenth of the per-record cost, not worth paying when nothing stores it.
            ids: list[tuple[str, str]] | None = [] if keep else None
            parsers = self.parsers
            seen_keys = self.seen_keys
            for record in records:
                origin_ = record.origin
                if origin_.partition is None and self._resumed_past(record):
                    continue
                fmt = record.format
                consumed[(origin_.source, fmt)] += 1
                if record.key is not None and seen_keys is not None:
                    if record.key in seen_keys:
                        self.duplicates_dropped += 1
                        continue
                    seen_keys.put(record.key, True, time.time())
                events_before = len(events)
                parser = parsers.get(fmt) or self._parser(fmt)
                lines = split_lines(_format_name(fmt), record.payload)
                if ids is None:
                    for line in lines:
                        for item in parser.parse(line, origin_):
                            if item.__class__ is ParseFailure:
                                self._dead_letter(item)  # type: ignore[arg-type]
                            else:
                                events.append(item)  # type: ignore[arg-type]
                else:
                    origin = record.key or str(origin_)
                    index = 0
                    for line in lines:
                        for item in parser.parse(line, origin_):
                            if item.__class__ is ParseFailure:
                                self._dead_letter(item)  # type: ignore[arg-type]
                            else:
                                events.append(item)  # type: ignore[arg-type]
                                ids.append((event_id(origin, index), origin))
                            index += 1
                if len(events) > events_before:
                    parsed[(origin_.source, fmt)] += len(events) - events_before
            self.stats.records += sum(consumed.values())
            self._add_events(events, ids)
            self._after_batch()
            span.set_attribute("meshwatch.records", sum(consumed.values()))
            span.set_attribute("meshwatch.parse_failures", self.stats.parse_failures
                               - failed_before)
        t = self.telemetry
        for (topic, fmt), n in consumed.items():
            t.records_consumed.add(n, {"topic": topic, "format": fmt})
        for (topic, fmt), n in parsed.items():
            if n:
                t.records_parsed.add(n, {"topic": topic, "format": fmt})
        t.batch_seconds.record(time.perf_counter() - started)

    def _resumed_past(self, record: RawRecord) -> bool:
        """Track a file record's position; True if a restored checkpoint already covers it.

        A checkpointed input is recognised by its path, its first offset and a hash of its
        first record: a new file at the same path (a rotated log) is read from the start.
        """
        origin = record.origin
        track = self._files.get(origin.source)
        if track is None:
            head = _head_hash(record.payload)
            skip_to = -1
            saved = self._file_resume.pop(origin.source, None)
            if saved is not None and saved[0] == origin.offset and saved[1] == head:
                skip_to = saved[2]
            track = self._files[origin.source] = [origin.offset, head, origin.offset, skip_to]
        if origin.offset <= track[3]:
            self.resumed_past += 1
            return True
        track[2] = max(track[2], origin.offset)
        return False

    def advance_idle(self, seconds: float) -> None:
        """No input for a while: move event time on by the wall-clock gap and close windows."""
        if self.graph.max_ts == float("-inf"):
            return
        self.graph.advance_time(seconds)
        self._after_batch()

    def _dead_letter(self, failure: ParseFailure) -> None:
        self._dead.append(failure)
        self.stats.parse_failures += 1
        reason = failure.reason.split(":", 1)[0][:80]
        self.stats.failures_by_reason[reason] += 1
        self.telemetry.parse_failures.add(1, {"topic": failure.origin.source,
                                              "format": failure.format, "reason": reason})

    def _add_events(self, events: list[EdgeEvent], ids: list[tuple[str, str]] | None) -> None:
        """Resolve identities, then aggregate. ``ids[i]`` is (event id, origin) of event i,
        given when events are stored."""
        resolve = self.resolver.resolve
        resolved = [resolve(event) for event in events]
        add = self.graph.add
        notes = self._notes
        if ids is None:
            for event in resolved:
                observation = add(event)
                if observation.notes:
                    notes.extend(observation.notes)
        else:
            stored = self._events
            for event, (eid, origin) in zip(resolved, ids, strict=True):
                observation = add(event)
                if observation.notes:
                    notes.extend(observation.notes)
                stored.append((eid, event, observation.edge_src, observation.edge_dst, origin))
        self.stats.events += len(resolved)

    def _flush_parsers(self, now: float | None) -> None:
        events: list[EdgeEvent] = []
        ids: list[tuple[str, str]] = []
        for name, parser in self.parsers.items():
            for item in parser.flush(now):
                if isinstance(item, ParseFailure):
                    self._dead_letter(item)
                else:
                    events.append(item)
                    ids.append((hashlib.blake2b(item.to_json(), digest_size=12).hexdigest(),
                                f"{name}:flush"))
        if events:
            self._add_events(events, ids if self.settings.store.store_events else None)

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
        self.status_mirror.drain_into(self.alert_book)
        for finding in self.feedback_rules.apply(findings):
            self.stats.findings[finding.detector] += 1
            change = self.alert_book.apply(finding)
            if change.kind == "opened":
                self.stats.alerts_opened[finding.detector] += 1
                self.telemetry.alerts_raised.add(1, {"detector": finding.detector,
                                                     "severity": finding.severity})
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

    def _timed(self, table: str, write: Any, rows: Any) -> None:
        started = time.perf_counter()
        write(rows)
        self.telemetry.store_write_seconds.record(time.perf_counter() - started,
                                                  {"table": table})

    def flush(self) -> list[Alert]:
        """Write everything buffered to the store; returns the alerts written.

        A buffer is cleared only after its write succeeded, so a store failure keeps the data
        for the retry (the worker pauses consumption meanwhile).
        """
        if self._events:
            self._timed("edge_events", self.store.insert_events, self._events)
            self._events = []
        if self._windows:
            self._timed("edge_windows", self.store.insert_windows,
                        [_window_row(w) for w in self._windows])
            self._windows = []
        if self._dead:
            if self.dead_letter_sink is not None:
                self.dead_letter_sink(self._dead)
            self._timed("dead_letters", self.store.insert_dead_letters, self._dead)
            self._dead = []
        written: list[Alert] = []
        self.status_mirror.drain_into(self.alert_book)
        if self._alert_changes:
            review = self.notifier.submit if self.notifier is not None else None
            written = self.alert_writer.write(self._alert_changes, review=review)
            if self.alert_change_sink is not None:
                kinds = {c.alert.id: c.kind for c in self._alert_changes}
                self.alert_change_sink([AlertChange(kinds[a.id], a) for a in written])
            self._alert_changes = []
            if self.export is not None:
                self.export.update(written)
            for listener in self.alert_listeners:
                listener(written)
        if self.export is not None:
            self.export.flush()
        return written

    def evictions(self) -> dict[tuple[tuple[str, str], ...], float]:
        """Eviction totals of every bounded map, for ``meshwatch_state_evictions_total``."""
        out = {labels(map=f"graph_{k}"): float(v) for k, v in self.graph.evictions().items()}
        for k, counts in self.resolver.evictions.items():
            out[labels(map=f"identity_{k}")] = float(counts.total)
        return out

    def close(self) -> None:
        """Stop reporting this pipeline's gauges (the store is closed by its owner)."""
        self.telemetry.unwatch("evictions", self.evictions)

    def checkpoint(self, offsets: dict[str, int] | None = None) -> list[Alert]:
        """Flush writers, then persist processing state (with the offsets it corresponds to).

        Without ``offsets`` (file mode) the positions reached in each input file are saved.
        """
        written = self.flush()
        if offsets is None and (self._files or self._file_resume):
            offsets = {}
            for source, (first, head, last) in self._file_resume.items():
                offsets.update(_file_offsets(source, first, head, last))
            for source, (first, head, last, skip_to) in self._files.items():
                offsets.update(_file_offsets(source, first, head, max(last, skip_to)))
        self.feedback_rules.reload()
        state = {
            "version": STATE_VERSION,
            "parsers": self.parsers,
            "resolver": self.resolver,
            "graph": self.graph,
            "engine": self.engine.state(),
            "alerts": self.alert_book.state(),
            "seen_keys": self.seen_keys,
        }
        self.checkpoints.save_checkpoint(self.checkpoint_scope, "pipeline",
                                   pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), offsets)
        return written


_FILE_KEYS = ("file-first:", "file-head:", "file-last:")


def _head_hash(payload: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(payload, digest_size=7).digest(), "big")


def _file_offsets(source: str, first: int, head: int, last: int) -> dict[str, int]:
    return dict(zip((k + source for k in _FILE_KEYS), (first, head, last), strict=True))


def _file_positions(offsets: dict[str, int]) -> dict[str, list[int]]:
    """source -> [first offset, first record hash, last offset] from checkpoint offsets.

    >>> _file_positions(_file_offsets("a.log", 1, 99, 42) | {"topic:0": 7})
    {'a.log': [1, 99, 42]}
    """
    out: dict[str, list[int]] = {}
    for key, value in offsets.items():
        for index, prefix in enumerate(_FILE_KEYS):
            if key.startswith(prefix):
                out.setdefault(key[len(prefix):], [0, 0, -1])[index] = int(value)
    return out


def _check_quiet_periods(quiet_periods: dict[str, float]) -> None:
    """Per-detector quiet periods must name a detector (a typo would silently do nothing)."""
    import detectors.catalog  # noqa: F401 - registers the built-in detectors
    from detectors.base import DETECTORS

    known = set(DETECTORS.names()) | {"alertmanager"}
    for name in quiet_periods:
        if name not in known:
            raise ConfigError(f"alerts.quiet_periods.{name}: unknown detector "
                              f"(known: {', '.join(sorted(known))})")


def _window_row(window: dict[str, Any]) -> dict[str, Any]:
    row = dict(window)
    for key in ("window_start", "first_seen", "last_seen", "min_cert_not_after"):
        value = row.get(key)
        if isinstance(value, datetime):
            row[key] = value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return row
