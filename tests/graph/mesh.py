"""A small synthetic mesh with known traffic, written through the real write path.

Calls are generated here (with their true latencies and mTLS), turned into the EdgeEvents the
parsers would produce (both sidecars of a call, or only the callee's), counted by the real
`EdgeGraph`, and stored with the pipeline's own row conversion and `Store.insert_windows` /
`Store.insert_events`. Tests compare what the graph layer reads back with `Truth`, which is
computed from the generated calls, not from the code under test.

Two periods: A = minutes 0-9, B = minutes 20-29 after T0.

  edge                                   A                          B
  web -> cart:7070                       20/min mTLS                80/min mTLS
  10.9.9.9 -> cart:7070                  3/min plaintext (min 5-9)  -
  web -> pay:8443                        7 mTLS + 3 plaintext /min  10/min mTLS
  cart -> db:5432 (caller side only)     5/min unknown              5/min unknown
  batch -> cart:7070                     -                          5/min mTLS
  + 2 late calls web -> cart for minute 3, arriving after minute 9 (a second window part)
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ingest.graph import EdgeGraph
from meshwatch.pipeline import _window_row
from meshwatch.records import EdgeEvent
from meshwatch.store import Store
from meshwatch.store.store import event_id

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WEB = "spiffe://cluster.local/ns/shop/sa/web"
CART_SA = "spiffe://cluster.local/ns/shop/sa/cart"
BATCH = "spiffe://cluster.local/ns/pay/sa/batch"
CART = "cart.shop.svc.cluster.local:7070"
PAY = "pay.pay.svc.cluster.local:8443"
DB = "db.pay.svc.cluster.local:5432"
INTRUDER = "10.9.9.9"

_CALLERS = {
    WEB: dict(source_principal=WEB, source_workload="web", source_namespace="shop",
              source_address="10.1.0.5"),
    CART_SA: dict(source_principal=CART_SA, source_workload="cart", source_namespace="shop",
                  source_address="10.1.0.7"),
    BATCH: dict(source_principal=BATCH, source_workload="batch", source_namespace="pay",
                source_address="10.2.0.3"),
    INTRUDER: dict(source_address=INTRUDER),
}
_CALLEES = {
    CART: ("cart.shop.svc.cluster.local", 7070, "cart", "shop"),
    PAY: ("pay.pay.svc.cluster.local", 8443, "pay", "pay"),
    DB: ("db.pay.svc.cluster.local", 5432, "db", "pay"),
}


@dataclass(frozen=True)
class Call:
    ts: datetime
    src: str
    dst: str
    mtls: bool | None  # None: only the caller's sidecar logged it
    latency: float  # what the first-counted record reports
    method: str
    path: str
    sides: str  # "both" | "inbound" | "outbound"
    late: bool = False

    @property
    def minute(self) -> int:
        return int((self.ts - T0).total_seconds() // 60)


@dataclass
class Truth:
    """What the generated calls say, per edge and minute."""

    calls: list[Call] = field(default_factory=list)

    def select(self, start: int, end: int, src: str | None = None,
               dst: str | None = None) -> list[Call]:
        """Calls in minutes [start, end) of an edge (or all edges)."""
        return [c for c in self.calls if start <= c.minute < end
                and (src is None or c.src == src) and (dst is None or c.dst == dst)]

    def requests(self, start: int, end: int) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = defaultdict(int)
        for c in self.select(start, end):
            out[(c.src, c.dst)] += 1
        return dict(out)


def generate(seed: int = 7) -> Truth:
    rng = random.Random(seed)
    truth = Truth()

    def spread(minute: int, src: str, dst: str, n: int, mtls: list[bool | None],
               sides: str, start_s: float = 0.0) -> None:
        for i in range(n):
            ts = T0 + timedelta(minutes=minute, seconds=start_s + i * (50.0 / n))
            method = "POST" if i % 4 == 0 else "GET"
            truth.calls.append(Call(ts, src, dst, mtls[i % len(mtls)],
                                    round(rng.expovariate(1 / 20.0), 3), method,
                                    f"/api/{dst.split('.', 1)[0]}?id={i}", sides))

    for m in range(10):
        spread(m, WEB, CART, 20, [True], "both")
        if m >= 5:
            spread(m, INTRUDER, CART, 3, [False], "inbound", 3.0)
        spread(m, WEB, PAY, 10, [True, True, False, True, True, False, True, True, False, True],
               "both", 1.0)
        spread(m, CART_SA, DB, 5, [None], "outbound", 2.0)
    for m in range(20, 30):
        spread(m, WEB, CART, 80, [True], "both")
        spread(m, WEB, PAY, 10, [True], "both", 1.0)
        spread(m, CART_SA, DB, 5, [None], "outbound", 2.0)
        spread(m, BATCH, CART, 5, [True], "both", 4.0)
    for i in range(2):  # late: minute 3, delivered after period A
        truth.calls.append(Call(T0 + timedelta(minutes=3, seconds=55 + i), WEB, CART, True,
                                round(rng.expovariate(1 / 20.0), 3), "GET", "/api/cart", "both",
                                late=True))
    return truth


def events_of(call: Call, rid: str) -> list[EdgeEvent]:
    """The records the sidecars log for one call (caller side first, 5 ms apart)."""
    service, port, workload, namespace = _CALLEES[call.dst]
    caller = _CALLERS[call.src]
    out = []
    if call.sides in ("both", "outbound"):
        out.append(EdgeEvent(ts=call.ts, origin="envoy_json", reporter="source", **caller,
                             destination_service=service, destination_port=port,
                             method=call.method, path=call.path, response_code=200,
                             bytes_sent=100, bytes_received=1000, duration_ms=call.latency,
                             mtls=None, request_id=rid))
    if call.sides in ("both", "inbound"):
        peer = caller.get("source_principal") if call.mtls else None
        out.append(EdgeEvent(ts=call.ts + timedelta(milliseconds=5), origin="envoy_json",
                             reporter="destination", source_principal=peer,
                             source_address=caller["source_address"],
                             destination_service=service, destination_port=port,
                             destination_workload=workload, destination_namespace=namespace,
                             method=call.method, path=call.path, response_code=200,
                             bytes_sent=100, bytes_received=1000,
                             duration_ms=call.latency - 1.0 if call.sides == "both"
                             else call.latency,
                             mtls=call.mtls, tls_version="TLSv1.3" if call.mtls else None,
                             request_id=rid))
    return out


def build(truth: Truth) -> tuple[list[dict], list[tuple]]:
    """Run the calls through EdgeGraph: (window rows, event rows) as the pipeline writes them.

    Windows close as event time passes (allowed lateness 0); the late calls come last and
    land in a second part of their (closed) window.
    """
    graph = EdgeGraph(window=60, allowed_lateness=0)
    windows: list[dict] = []
    events: list[tuple] = []
    ordered = sorted((c for c in truth.calls if not c.late), key=lambda c: c.ts)
    ordered += [c for c in truth.calls if c.late]
    for n, call in enumerate(ordered):
        for k, event in enumerate(events_of(call, f"req-{n}")):
            obs = graph.add(event)
            events.append((event_id(f"mesh:{n}", k), event, obs.edge_src, obs.edge_dst,
                           f"mesh:{n}"))
        windows += graph.advance()
    windows += graph.close_all()
    return [_window_row(w) for w in windows], events


def populate(store: Store, truth: Truth) -> list[dict]:
    """Write the mesh into ``store``; returns the window rows written."""
    rows, events = build(truth)
    store.insert_windows(rows)
    store.insert_events(events)
    return rows


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)
