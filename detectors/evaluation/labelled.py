"""Scoring alerts against labelled traffic (the simulator's ``labels.json``).

Pure functions over plain data, so notebooks and CI can use them without running anything:
`load_labels` reads the ground truth, `Sighting`/`EvalAlert` describe what the pipeline raised,
and `evaluate` returns a `Report` (per detector, per attack kind, overall).

Matching rule (one finding = one *sighting*; an alert is the findings that share a fingerprint):

* **time** - the sighting's event time lies in ``[start - before, end + after]`` of the instance
  (defaults 60 s / 600 s: window detectors stamp findings with the window start, and deferred
  checks such as identity misuse report minutes after the evidence);
* **identity** - any known part of the sighting's source (workload, principal, address) equals
  the same part of the instance's source or of one of its chain hops (``chain[].source``);
  a sighting with no source identity at all matches on its destination instead (service FQDN,
  short name or workload equal to one of the instance's destinations);
* **benign look-alikes** must match on the destination as well (a canary's source is a normal
  workload: only an alert about the look-alike's own edge is the look-alike paging).

An alert is a *true alert* when its opening finding matches an attack instance, else a *false
alert* (listed with the benign look-alike it matched, if any). An instance is *detected* by a
detector when any finding of that detector matches it, whether it opened an alert or updated one
(the analyst sees the count and evidence grow); *time to detect* is its first matching finding
minus the instance start. False alerts are normalised per simulated day and per 100 services.
Average precision ranks alerts by their highest score (ties: earlier first) and averages the
precision at each true alert (1.0 when no false alert outranks a true one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from meshwatch.records import parse_ts

IDENTITY_KEYS = ("workload", "principal", "address")


@dataclass(frozen=True)
class Instance:
    """One labelled attack or benign look-alike."""

    id: str
    kind: str
    label: str  # "attack" | "benign"
    start: datetime
    end: datetime
    sources: tuple[Mapping[str, Any], ...]
    destinations: tuple[Mapping[str, Any], ...]
    expected_detectors: tuple[str, ...]

    @property
    def is_attack(self) -> bool:
        return self.label == "attack"


@dataclass(frozen=True)
class Labels:
    """The ground truth of one simulated run."""

    instances: tuple[Instance, ...]
    start: datetime
    end: datetime
    services: int
    scenario: str = ""
    seed: int | None = None

    @property
    def days(self) -> float:
        return max((self.end - self.start).total_seconds(), 1.0) / 86400.0


@dataclass(frozen=True)
class Sighting:
    """One finding as the evaluation sees it."""

    ts: datetime
    detector: str
    score: float
    source: Mapping[str, Any]
    destination: Mapping[str, Any]


@dataclass
class EvalAlert:
    """One alert (one page): its detector, severity and every finding that fed it."""

    id: str
    detector: str
    severity: str
    title: str
    findings: list[Sighting] = field(default_factory=list)

    @property
    def score(self) -> float:
        return max((f.score for f in self.findings), default=0.0)

    @property
    def first_seen(self) -> datetime:
        return self.findings[0].ts


def _as_list(value: Any) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [value]
    return [v for v in value if isinstance(v, Mapping)]


def load_labels(data: Mapping[str, Any]) -> Labels:
    """Labels from a parsed ``labels.json``.

    >>> labels = load_labels({"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T12:00:00Z",
    ...     "services": 30, "attacks": [{"id": "a", "kind": "service_scan", "label": "attack",
    ...     "source": {"workload": "w"}, "destination": [], "start": "2026-01-01T06:00:00Z",
    ...     "end": "2026-01-01T06:02:00Z", "expected_detectors": ["fanout_scan"]}]})
    >>> labels.days, labels.instances[0].expected_detectors
    (0.5, ('fanout_scan',))
    """
    instances = []
    for item in [*data.get("attacks", ()), *data.get("benign", ())]:
        sources = _as_list(item.get("source"))
        for hop in item.get("chain") or ():
            sources += _as_list(hop.get("source"))
        instances.append(Instance(
            id=str(item["id"]),
            kind=str(item["kind"]),
            label=str(item.get("label", "attack")),
            start=parse_ts(item["start"]),
            end=parse_ts(item["end"]),
            sources=tuple(sources),
            destinations=tuple(_as_list(item.get("destination"))),
            expected_detectors=tuple(item.get("expected_detectors") or ()),
        ))
    return Labels(
        instances=tuple(instances),
        start=parse_ts(data["start"]),
        end=parse_ts(data["end"]),
        services=int(data.get("services") or 1),
        scenario=str(data.get("scenario", "")),
        seed=data.get("seed"),
    )


# -- matching ----------------------------------------------------------------------------------


def _host(address: Any) -> str | None:
    if not address:
        return None
    text = str(address)
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text


def _identities(endpoint: Mapping[str, Any]) -> set[tuple[str, str]]:
    out = set()
    for key in IDENTITY_KEYS:
        value = endpoint.get(key)
        if key == "address":
            value = _host(value)
        if value:
            out.add((key, str(value)))
    return out


def _service_names(endpoint: Mapping[str, Any]) -> set[str]:
    names = set()
    service = endpoint.get("service")
    if service:
        host = str(service).rsplit(":", 1)[0] if ":" in str(service) else str(service)
        names.add(host)
        names.add(host.split(".", 1)[0])
    for key in ("fqdn", "workload"):
        if endpoint.get(key):
            names.add(str(endpoint[key]))
    return names


def destination_matches(sighting: Sighting, instance: Instance) -> bool:
    """The sighting's destination is one of the instance's (FQDN, short name or workload)."""
    ours = _service_names(sighting.destination)
    if not ours:
        return False
    return any(ours & _service_names(d) for d in instance.destinations)


def source_matches(sighting: Sighting, instance: Instance) -> bool:
    """Any known part of the sighting's source equals that part of an instance source."""
    ours = _identities(sighting.source)
    return any(ours & _identities(s) for s in instance.sources)


def matches(sighting: Sighting, instance: Instance, before: float = 60.0,
            after: float = 600.0) -> bool:
    """The matching rule of this module's docstring.

    >>> from datetime import UTC, timedelta
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> inst = Instance("x", "service_scan", "attack", t0, t0 + timedelta(minutes=2),
    ...                 ({"workload": "cart", "address": "10.0.0.7"},), (), ("fanout_scan",))
    >>> src = {"workload": None, "address": "10.0.0.7"}
    >>> matches(Sighting(t0 + timedelta(seconds=30), "fanout_scan", 1.0, src, {}), inst)
    True
    >>> matches(Sighting(t0 - timedelta(hours=1), "fanout_scan", 1.0, src, {}), inst)
    False
    """
    lo = instance.start.timestamp() - before
    hi = instance.end.timestamp() + after
    if not lo <= sighting.ts.timestamp() <= hi:
        return False
    if not instance.is_attack:
        return destination_matches(sighting, instance) and (
            source_matches(sighting, instance) or not _identities(sighting.source))
    if _identities(sighting.source):
        return source_matches(sighting, instance)
    return destination_matches(sighting, instance)


# -- metrics -----------------------------------------------------------------------------------


def average_precision(ranked: Sequence[tuple[float, float, bool]]) -> float | None:
    """AP of (score, ts, relevant) items ranked by score desc, then time; None without a
    relevant item.

    >>> average_precision([(0.9, 0, True), (0.8, 1, False), (0.7, 2, True)])
    0.8333
    """
    order = sorted(ranked, key=lambda r: (-r[0], r[1]))
    hits = 0
    total = 0.0
    for k, (_, _, relevant) in enumerate(order, start=1):
        if relevant:
            hits += 1
            total += hits / k
    return round(total / hits, 4) if hits else None


@dataclass
class Group:
    """Metrics of one group of instances and alerts (a detector, an attack kind, or all)."""

    name: str
    instances: int = 0
    detected: int = 0
    alerts: int = 0
    true_alerts: int = 0
    false_alerts: int = 0
    detect_seconds: list[float] = field(default_factory=list)
    ranked: list[tuple[float, float, bool]] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    matched: int = 0  # attack instances any finding matched, expected or not (detectors)

    def as_dict(self, days: float, services: float) -> dict[str, Any]:
        scale = days * services / 100.0
        ttd = sorted(self.detect_seconds)
        return {
            "name": self.name,
            "instances": self.instances,
            "detected": self.detected,
            "detection_rate": round(self.detected / self.instances, 4) if self.instances else None,
            "alerts": self.alerts,
            "true_alerts": self.true_alerts,
            "false_alerts": self.false_alerts,
            "false_alerts_per_day_per_100_services": (round(self.false_alerts / scale, 3)
                                                      if scale > 0 else None),
            "average_precision": average_precision(self.ranked),
            "mean_time_to_detect_s": round(sum(ttd) / len(ttd), 1) if ttd else None,
            "median_time_to_detect_s": round(ttd[len(ttd) // 2], 1) if ttd else None,
            "max_time_to_detect_s": round(ttd[-1], 1) if ttd else None,
            "attack_instances_matched": self.matched,
            "missed": sorted(self.missed),
        }


@dataclass
class Report:
    """Evaluation of one or more labelled runs."""

    runs: list[str]
    days: float
    services: float
    overall: Group
    by_detector: dict[str, Group]
    by_kind: dict[str, Group]
    false_alerts: list[dict[str, Any]]
    benign_paged: list[dict[str, Any]]
    detections: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        d, s = self.days, self.services
        return {
            "runs": self.runs,
            "simulated_days": round(d, 4),
            "services": round(s, 3),
            "overall": self.overall.as_dict(d, s),
            "by_detector": {k: g.as_dict(d, s) for k, g in sorted(self.by_detector.items())},
            "by_attack_kind": {k: g.as_dict(d, s) for k, g in sorted(self.by_kind.items())},
            "false_alerts": self.false_alerts,
            "benign_lookalikes_paged": self.benign_paged,
            "detections": self.detections,
        }


def evaluate(alerts: Iterable[EvalAlert], labels: Labels, *, before: float = 60.0,
             after: float = 600.0, run: str = "") -> Report:
    """Score one run's alerts against its labels (see the module docstring for the rules)."""
    alerts = [a for a in alerts if a.findings]
    attacks = [i for i in labels.instances if i.is_attack]
    benign = [i for i in labels.instances if not i.is_attack]
    overall = Group("all")
    by_detector: dict[str, Group] = {}
    by_kind: dict[str, Group] = {}
    false_alerts: list[dict[str, Any]] = []
    benign_paged: list[dict[str, Any]] = []

    def det_group(name: str) -> Group:
        return by_detector.setdefault(name, Group(name))

    for alert in alerts:
        det_group(alert.detector)
    for inst in attacks:
        for name in inst.expected_detectors:
            det_group(name)
        by_kind.setdefault(inst.kind, Group(inst.kind))

    # Which instances each alert's findings match, and whether its opening finding does.
    first_hit: dict[tuple[str, str], float] = {}  # (instance, detector) -> first match ts
    alert_kinds: list[set[str]] = []
    for alert in alerts:
        opening = alert.findings[0]
        opened_on = {i.kind for i in attacks if matches(opening, i, before, after)}
        alert_kinds.append(opened_on)
        for f in alert.findings:
            for inst in attacks:
                if matches(f, inst, before, after):
                    key = (inst.id, alert.detector)
                    ts = f.ts.timestamp()
                    if key not in first_hit or ts < first_hit[key]:
                        first_hit[key] = ts
        score_ts = (alert.score, alert.first_seen.timestamp())
        true = bool(opened_on)
        for group in (overall, det_group(alert.detector)):
            group.alerts += 1
            group.true_alerts += true
            group.false_alerts += not true
            group.ranked.append((*score_ts, true))
        for kind, group in by_kind.items():
            if true and kind not in opened_on:
                continue  # another attack kind's alert: neither hit nor false alarm here
            group.alerts += 1
            group.true_alerts += true
            group.false_alerts += not true
            group.ranked.append((*score_ts, true))
        if not true:
            paged = [i.id for i in benign if matches(opening, i, before, after)]
            entry = {"run": run, "alert": alert.id, "detector": alert.detector,
                     "severity": alert.severity, "score": round(alert.score, 4),
                     "first_seen": opening.ts.isoformat(), "title": alert.title,
                     "benign_lookalike": paged[0] if paged else None}
            false_alerts.append(entry)
            if paged:
                benign_paged.append(entry)

    detections = []
    for inst in attacks:
        hits = {d: ts for (iid, d), ts in first_hit.items() if iid == inst.id}
        start = inst.start.timestamp()
        groups = [overall, by_kind[inst.kind]]
        for group in groups:
            group.matched += bool(hits)
            group.instances += 1
            if hits:
                group.detected += 1
                group.detect_seconds.append(max(0.0, min(hits.values()) - start))
            else:
                group.missed.append(f"{run}:{inst.id}" if run else inst.id)
        for name in hits:
            det_group(name).matched += 1
        for name in inst.expected_detectors:
            group = det_group(name)
            group.instances += 1
            if name in hits:
                group.detected += 1
                group.detect_seconds.append(max(0.0, hits[name] - start))
            else:
                group.missed.append(f"{run}:{inst.id}" if run else inst.id)
        detections.append({
            "run": run, "instance": inst.id, "kind": inst.kind,
            "expected": list(inst.expected_detectors),
            "detected_by": {d: round(max(0.0, ts - start), 1) for d, ts in sorted(hits.items())},
        })
    return Report([run] if run else [], labels.days, float(labels.services), overall,
                  by_detector, by_kind, false_alerts, benign_paged, detections)


def _merge_group(into: Group, other: Group) -> None:
    into.instances += other.instances
    into.detected += other.detected
    into.alerts += other.alerts
    into.true_alerts += other.true_alerts
    into.false_alerts += other.false_alerts
    into.detect_seconds += other.detect_seconds
    into.ranked += other.ranked
    into.missed += other.missed
    into.matched += other.matched


def combine(reports: Sequence[Report]) -> Report:
    """Pool several runs (e.g. seeds): counts add up, days add up, services are averaged
    weighted by days, so false alerts per day per 100 services stay comparable."""
    if not reports:
        raise ValueError("nothing to combine")
    days = sum(r.days for r in reports)
    services = sum(r.services * r.days for r in reports) / days
    overall = Group("all")
    by_detector: dict[str, Group] = {}
    by_kind: dict[str, Group] = {}
    for r in reports:
        _merge_group(overall, r.overall)
        for key, group in r.by_detector.items():
            _merge_group(by_detector.setdefault(key, Group(key)), group)
        for key, group in r.by_kind.items():
            _merge_group(by_kind.setdefault(key, Group(key)), group)
    return Report(
        runs=[run for r in reports for run in r.runs], days=days, services=services,
        overall=overall, by_detector=by_detector, by_kind=by_kind,
        false_alerts=[a for r in reports for a in r.false_alerts],
        benign_paged=[a for r in reports for a in r.benign_paged],
        detections=[d for r in reports for d in r.detections],
    )
