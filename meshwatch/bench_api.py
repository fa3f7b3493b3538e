"""`meshwatch bench api`: latency of `GET /api/v1/alerts` over real HTTP with many stored alerts.

Alerts are written through the store's own path (`Store.upsert_alerts`, JSONEachRow), a tenth
of them twice (a later version: an update, as the pipeline and analysts make them), into an
embedded store. The API then runs under uvicorn on a loopback port and a client asks for the
pages analysts ask for — the first page, filtered by status, severity, detector, namespace or
time, sorted by severity or count, the next page by cursor — one request at a time over a
keep-alive connection. Reported per scenario and overall: p50/p99 of the wall time the client
saw (HTTP, auth, query, JSON).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from meshwatch.records import Alert, Endpoint, fingerprint

DETECTORS = ("plaintext_edge", "first_seen_edge", "lateral_chain", "fanout_scan",
             "traffic_anomaly", "policy_violation", "identity_misuse", "mtls_downgrade")
SEVERITIES = ("info", "low", "medium", "high", "critical")
STATUSES = ("open", "acknowledged", "resolved", "resolved", "resolved", "suppressed")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def synthetic_alerts(start: int, count: int, seed: int = 7) -> list[Alert]:
    """Alerts ``start``..``start+count``: 40 namespaces, 8 detectors, one every 3 s."""
    rng = random.Random(seed * 1_000_003 + start)  # noqa: S311 - benchmark data
    out = []
    for i in range(start, start + count):
        ns, dst_ns = f"ns{i % 40}", f"ns{(i * 7) % 40}"
        detector = DETECTORS[i % len(DETECTORS)]
        src = f"spiffe://cluster.local/ns/{ns}/sa/web-{i % 300}"
        dst = f"svc-{i % 900}.{dst_ns}.svc.cluster.local:8080"
        first = T0 + timedelta(seconds=3 * i)
        out.append(Alert(
            id=f"al-{i:020d}", fingerprint=fingerprint(detector, f"{src}->{dst}"),
            detector=detector, severity=SEVERITIES[rng.randrange(5)],  # type: ignore[arg-type]
            title=f"{detector}: {ns}/web-{i % 300} -> svc-{i % 900}.{dst_ns}",
            summary=f"svc-{i % 900}.{dst_ns} received calls from {ns}/web-{i % 300} that the "
                    "detector scored above its threshold.",
            source=Endpoint(workload=f"web-{i % 300}", namespace=ns, principal=src,
                            address=f"10.{i % 250}.{(i // 250) % 250}.{i % 200}"),
            destination=Endpoint(service=dst, namespace=dst_ns),
            first_seen=first, last_seen=first + timedelta(seconds=rng.randrange(900)),
            count=rng.randrange(1, 200), score=round(rng.random() * 10, 3),
            mitre=("TA0008", "T1021"), runbook_url=f"http://127.0.0.1:8080/runbooks/{detector}",
            evidence=tuple({"ts": first.isoformat(), "request_id": f"req-{i}-{k}",
                            "path": f"/api/items/{i % 1000}", "response_code": 200}
                           for k in range(3)),
            status=STATUSES[rng.randrange(len(STATUSES))],  # type: ignore[arg-type]
            labels={}))
    return out


def fill(store: Any, total: int, batch: int = 50_000,
         progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Write ``total`` alerts (and an update of every tenth) unless the store holds them."""
    held = int(store.query("SELECT uniqExact(id) AS n FROM {db}.alerts")[0]["n"])
    if held >= total:
        return {"inserted": 0, "seconds": 0.0, "reused": held}
    started = time.perf_counter()
    spent = 0.0
    for first in range(held, total, batch):
        alerts = synthetic_alerts(first, min(batch, total - first))
        updates = [a for a in alerts[::10]]
        t = time.perf_counter()
        store.upsert_alerts(alerts)
        store.upsert_alerts([_updated(a) for a in updates])
        spent += time.perf_counter() - t
        if progress is not None:
            progress(first + len(alerts), time.perf_counter() - started)
    return {"inserted": total - held, "updates": (total - held) // 10,
            "seconds": round(time.perf_counter() - started, 1),
            "store_seconds": round(spent, 1),
            "rows_per_second": round((total - held) * 1.1 / spent) if spent else None}


def _updated(alert: Alert) -> Alert:
    import dataclasses

    return dataclasses.replace(alert, count=alert.count + 1,
                               last_seen=alert.last_seen + timedelta(seconds=30),
                               status="acknowledged" if alert.status == "open" else alert.status)


def scenarios(total: int) -> list[tuple[str, dict[str, Any]]]:
    """The pages an analyst asks for (latest data is at T0 + 3 s x total)."""
    end = T0 + timedelta(seconds=3 * total)
    return [
        ("first page", {}),
        ("status=open", {"status": "open"}),
        ("severity high+critical", {"severity": ["high", "critical"]}),
        ("detector", {"detector": "lateral_chain", "status": ["open", "acknowledged"]}),
        ("namespace", {"namespace": "ns7"}),
        ("last 6 h", {"since": (end - timedelta(hours=6)).isoformat()}),
        ("a day, a week ago", {"since": (end - timedelta(days=8)).isoformat(),
                               "until": (end - timedelta(days=7)).isoformat()}),
        ("sort=severity", {"sort": "severity"}),
        ("sort=count", {"sort": "count", "status": "open"}),
        ("page 2 (cursor)", {"_page": 2}),
        ("page 3, status=open", {"_page": 3, "status": "open"}),
    ]


@contextlib.contextmanager
def serve(store: Any, settings: Any) -> Iterator[str]:
    """The real app under uvicorn on a free loopback port."""
    import socket

    import uvicorn

    from alerts.api import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store, settings), host="127.0.0.1",
                                           port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(url: str, token: str, total: int, requests: int, limit: int = 50
            ) -> dict[str, Any]:
    """p50/p99 per scenario and overall, ``requests`` timed requests per scenario."""
    import httpx

    per: dict[str, list[float]] = {}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for name, params in scenarios(total):
            params = dict(params)
            pages = int(params.pop("_page", 1))
            query = {**params, "limit": limit}
            cursor = None
            for _ in range(pages - 1):  # the cursor of the page before the one timed
                body = client.get("/api/v1/alerts", params={**query, **(
                    {"cursor": cursor} if cursor else {})}).json()
                cursor = body["next_cursor"]
            if cursor:
                query["cursor"] = cursor
            times = []
            for i in range(requests + 3):
                started = time.perf_counter()
                response = client.get("/api/v1/alerts", params=query)
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise RuntimeError(f"{name}: HTTP {response.status_code}: {response.text}")
                if i >= 3:  # the first requests warm caches
                    times.append(elapsed * 1000)
            items = len(response.json()["items"])
            per[name] = times
            per[name + "\x00items"] = [float(items)]
    results = []
    everything: list[float] = []
    for name, _ in scenarios(total):
        times = per[name]
        everything += times
        results.append({"scenario": name, "items": int(per[name + "\x00items"][0]),
                        "p50_ms": round(statistics.median(times), 1),
                        "p99_ms": round(_quantile(times, 0.99), 1),
                        "max_ms": round(max(times), 1)})
    return {"scenarios": results, "requests": len(everything),
            "p50_ms": round(statistics.median(everything), 1),
            "p99_ms": round(_quantile(everything, 0.99), 1)}


def run(alerts: int = 1_000_000, requests: int = 100, store_path: Path | None = None,
        batch: int = 50_000, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fill a store, serve it, measure; returns the report (see module docstring)."""
    from alerts.tokens import TokenStore
    from meshwatch.settings import load_settings
    from meshwatch.store import Store

    say = progress or (lambda _m: None)
    temp = None
    if store_path is None:
        temp = tempfile.mkdtemp(prefix="meshwatch-bench-api-")
        store_path = Path(temp)
    settings = load_settings(overrides={"store": {"path": str(store_path)}})
    store = Store.open(settings.store)
    try:
        say(f"writing {alerts:,} alerts through Store.upsert_alerts into {store_path}")
        filled = fill(store, alerts, batch, lambda n, s: say(f"{n:,} alerts in {s:.0f} s"))
        parts = store.query("SELECT count() AS n FROM system.parts WHERE database = "
                            "{db:String} AND table = 'alerts' AND active", {"db": store.db})
        rows = int(store.query("SELECT count() AS n FROM {db}.alerts")[0]["n"])
        _, token = TokenStore(store).create("bench", "viewer")
        say(f"serving the API; {requests} timed requests per scenario")
        with serve(store, settings) as url:
            measured = measure(url, token, alerts, requests)
        return {"alerts": alerts, "stored_rows": rows, "alert_parts": int(parts[0]["n"]),
                "fill": filled, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                **measured}
    finally:
        store.close()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
