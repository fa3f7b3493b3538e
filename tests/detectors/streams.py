"""Realistic detector inputs for tests: edge notes and closed windows from the real graph
builder, and value series, so detectors are tested on the dicts the pipeline gives them."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.graph import EdgeGraph
from meshwatch.records import EdgeEvent

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def mesh_events(n_sources: int = 30, minutes: int = 120, seed: int = 7) -> list[EdgeEvent]:
    """Inbound records of a small mesh: each source calls a few fixed destinations."""
    rng = random.Random(seed)
    events = []
    for minute in range(minutes):
        for s in range(n_sources):
            for d in (s % 5, (s + 1) % 5):
                ts = T0 + timedelta(minutes=minute, seconds=rng.random() * 59)
                events.append(EdgeEvent(
                    ts=ts, origin="envoy_json", reporter="destination",
                    source_principal=f"spiffe://cluster.local/ns/ns{s % 3}/sa/app{s}",
                    source_workload=f"app{s}-v1", source_namespace=f"ns{s % 3}",
                    source_address=f"10.0.{s}.1",
                    destination_service=f"svc{d}.ns{d % 3}.svc.cluster.local",
                    destination_port=8080, response_code=200 if rng.random() > 0.02 else 503,
                    duration_ms=5 + rng.random() * 20, bytes_sent=100, bytes_received=1000,
                    mtls=True, tls_version="TLSv1.3", request_id=f"r{minute}-{s}-{d}"))
    events.sort(key=lambda e: e.ts)
    return events


def notes_and_windows(events: list[EdgeEvent]) -> tuple[list[dict[str, Any]],
                                                        list[dict[str, Any]]]:
    graph = EdgeGraph(window=60, allowed_lateness=0)
    notes: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    for event in events:
        notes.extend(graph.add(event).notes)
        windows.extend(graph.advance())
    windows.extend(graph.close_all())
    return notes, windows


def value_series(n: int = 600, seed: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"value": 10 + 3 * math.sin(i / 20) + rng.gauss(0, 0.3),
             "ts": T0 + timedelta(minutes=i)} for i in range(n)]


def inputs_for(consumes: str) -> list[dict[str, Any]]:
    if consumes == "values":
        return value_series()
    notes, windows = notes_and_windows(mesh_events())
    return notes if consumes == "events" else windows
