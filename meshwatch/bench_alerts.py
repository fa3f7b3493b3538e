"""`meshwatch bench alerts`: end-to-end latency from a record entering the pipeline to the
webhook POST of the new alert it causes, under load.

Synthetic Istio inbound JSON access-log lines are fed to a real `Pipeline` (embedded chdb
store, the configured detectors) at a target rate: background mTLS calls on a fixed set of
edges, and every so often a plaintext call from a new source address, which opens a new
``plaintext_edge`` alert. A loopback HTTP receiver records when each alert's first
notification arrives. The latency of an alert is arrival time minus the time the batch holding
its first record entered `Pipeline.process` (records are fed in batches, flushed after each,
as the Kafka worker does at its commit interval). Routing: one webhook receiver,
``group_wait: 0s`` and ``group_by: ['...']``, so the number measures the pipeline, the store
writes, the outbox and the HTTP delivery, not a configured wait.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from meshwatch.records import Origin, RawRecord

LINE_TEMPLATE = (
    '{{"start_time":"{ts}","method":"GET","path":"/api/{n}","protocol":"HTTP/1.1",'
    '"response_code":200,"response_flags":"-","bytes_received":120,"bytes_sent":{size},'
    '"duration":{dur},"request_id":"req-{n}","authority":"{svc}:8080",'
    '"upstream_host":"10.244.2.9:8080","upstream_cluster":"inbound|8080||",'
    '"downstream_local_address":"10.244.2.9:8080","downstream_remote_address":"{ip}:40112",'
    '"requested_server_name":{sni},"downstream_peer_uri_san":{san},'
    '"downstream_tls_version":{tls},"pod_name":"{svc}-7d9f-abcde","pod_namespace":"{ns}"}}'
)


def _line(n: int, ts: datetime, ip: str, svc: str, ns: str, mtls: bool) -> bytes:
    stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    if mtls:
        sni = f'"outbound_.8080_._.{svc}.{ns}.svc.cluster.local"'
        san, tls = f'"spiffe://cluster.local/ns/{ns}/sa/caller-{ip.rsplit(".", 1)[1]}"', \
            '"TLSv1.3"'
    else:
        sni = san = tls = "null"
    return LINE_TEMPLATE.format(ts=stamp, n=n, size=200 + n % 900, dur=1 + n % 40, svc=svc,
                                ip=ip, sni=sni, san=san, tls=tls, ns=ns).encode()


@dataclass
class _Arrivals:
    """What the loopback webhook receiver saw: first arrival per alerting source address."""

    first: dict[str, float] = field(default_factory=dict)
    posts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _receiver(arrivals: _Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            now = time.monotonic()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            payload = json.loads(body)
            with arrivals.lock:
                arrivals.posts += 1
                for alert in payload.get("alerts", []):
                    address = (alert.get("source") or {}).get("address")
                    if address and alert.get("status") != "resolved":
                        arrivals.first.setdefault(address, now)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="bench-receiver").start()
    return server


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run(rate: float = 50_000, seconds: float = 20.0, alerts_per_second: float = 10.0,
        batch: int = 5000, edges: int = 500, store_path: Path | None = None,
        drain_timeout: float = 10.0, on_progress: Any = None) -> dict[str, Any]:
    """Run the benchmark; returns the measured numbers (see module docstring)."""
    from alerts.notify import Notifier
    from meshwatch.pipeline import Pipeline
    from meshwatch.settings import load_settings
    from meshwatch.store import Store

    arrivals = _Arrivals()
    server = _receiver(arrivals)
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    workdir = Path(store_path) if store_path else Path(tempfile.mkdtemp(prefix="mw-bench-"))
    settings = load_settings(overrides={"store": {"path": str(workdir)}, "alerts": {
        "routing": {"route": {"receiver": "bench", "group_by": ["..."], "group_wait": "0s",
                              "group_interval": "1s"},
                    "receivers": [{"name": "bench", "webhook_configs": [{"url": url}]}]},
        "series_windows": 0}})
    store = Store.open(settings.store)
    notifier = Notifier(settings, store)
    pipeline = Pipeline(settings, store, notifier=notifier, checkpoint_scope="bench")
    notifier.start()
    entered: dict[str, float] = {}
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    every = max(1, int(rate / alerts_per_second)) if alerts_per_second > 0 else 0
    services = [(f"svc-{i % 50}", f"ns{i % 20}") for i in range(edges)]
    sent = 0
    started = time.monotonic()
    process_seconds = 0.0
    try:
        while time.monotonic() - started < seconds:
            wall = time.monotonic()
            ts = t0 + timedelta(seconds=wall - started)
            records = []
            plaintext: list[str] = []
            for _ in range(batch):
                n = sent + len(records)
                if every and n % every == every - 1:
                    k = len(entered) + len(plaintext)
                    ip = f"10.{200 + k // 65536 % 50}.{k // 256 % 256}.{k % 256}"
                    plaintext.append(ip)
                    line = _line(n, ts, ip, "ledger", "pay", mtls=False)
                else:
                    svc, ns = services[n % edges]
                    line = _line(n, ts, f"10.1.{n % edges // 256}.{n % edges % 256}", svc, ns,
                                 mtls=True)
                records.append(RawRecord(line, Origin("bench", n), "envoy-json"))
            t_enter = time.monotonic()
            for ip in plaintext:
                entered[ip] = t_enter
            pipeline.process(records)
            pipeline.flush()
            process_seconds += time.monotonic() - t_enter
            sent += len(records)
            if on_progress is not None:
                on_progress(sent, time.monotonic() - started)
            # Pace to the target rate (when the pipeline is faster than that).
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline:
            with arrivals.lock:
                if all(ip in arrivals.first for ip in entered):
                    break
            time.sleep(0.05)
    finally:
        notifier.stop()
        store.close()
        server.shutdown()
        server.server_close()
    with arrivals.lock:
        latencies = [arrivals.first[ip] - t for ip, t in entered.items() if ip in arrivals.first]
        posts = arrivals.posts
    return {
        "target_events_per_second": rate,
        "events": sent,
        "seconds": round(elapsed, 2),
        "achieved_events_per_second": round(sent / elapsed) if elapsed else 0,
        "pipeline_busy_share": round(process_seconds / elapsed, 3) if elapsed else 0,
        "batch": batch,
        "new_alerts": len(entered),
        "notified": len(latencies),
        "webhook_posts": posts,
        "latency_seconds": {
            "p50": _percentile(latencies, 0.50),
            "p90": _percentile(latencies, 0.90),
            "p99": _percentile(latencies, 0.99),
            "max": max(latencies) if latencies else None,
        },
        "store": str(workdir),
    }
