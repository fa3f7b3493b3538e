"""Benign load: users through the ingress gateway, in-mesh pollers and pooled TCP clients.

The load follows a daily curve (peak mid-afternoon UTC, trough at night) with minute-to-minute
noise, so baselines learnt in the first hours have the texture of production traffic. ``rps`` is
the mesh-wide mean of calls per second over a day: the pollers' steady calls plus user requests
arriving at the remaining rate divided by the mean size of a request's call tree.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

from meshwatch.simulate.builder import CallBuilder, Counter
from meshwatch.simulate.calls import Call
from meshwatch.simulate.catalog import BROWSER_AGENTS
from meshwatch.simulate.seeding import stream
from meshwatch.simulate.topology import US, Mesh, Operation, Pod, Service

MINUTE_US = 60 * US
DAY_S = 86400
DIURNAL_AMPLITUDE = 0.4
PEAK_HOUR_UTC = 15.0
CLIENTS = 600


def diurnal(t_us: int) -> float:
    """The smooth daily load curve, mean 1 over a day."""
    hour = (t_us / US % DAY_S) / 3600
    return 1.0 + DIURNAL_AMPLITUDE * math.cos(2 * math.pi * (hour - PEAK_HOUR_UTC) / 24)


def expected_tree_size(op: Operation, depth: int = 0) -> float:
    """Mean number of calls one request to ``op`` causes, itself included."""
    if depth > 12:
        return 1.0
    total = 1.0
    svc = op.service
    for child in op.children:
        share = 1.0
        if child.versions is not None:
            weights = svc.weights_at(2**62)
            if weights:
                total_w = sum(weights.values()) or 1.0
                share = sum(w for v, w in weights.items() if v in child.versions) / total_w
            else:
                versions = [w.version for w in svc.workloads]
                share = sum(v in child.versions for v in versions) / max(1, len(versions))
        lo, hi = child.count
        total += child.prob * share * (lo + hi) / 2 * expected_tree_size(child.op, depth + 1)
    return total


class BenignTraffic:
    """Generates the healthy mesh's calls one time window at a time."""

    def __init__(self, mesh: Mesh, *, seed: int, start_us: int, end_us: int, rps: float,
                 counter: Counter) -> None:
        self.mesh = mesh
        self.start_us = start_us
        self.end_us = end_us
        self.builder = CallBuilder(mesh, stream(seed, "traffic"), counter)
        rng = stream(seed, "load")
        self._rng = rng
        minutes = math.ceil((end_us - start_us) / MINUTE_US) + 1
        x, noise = 0.0, []
        for _ in range(minutes):
            x = 0.85 * x + rng.gauss(0.0, 0.06)
            noise.append(math.exp(x))
        self._noise = noise
        weights = [entry.weight for entry, _ in mesh.entries]
        self._entry_cum = list(_cumulative(weights))
        mean_size = sum(w * expected_tree_size(op) for w, (_, op)
                        in zip(weights, mesh.entries, strict=True)) / sum(weights)
        background = sum(len(wl.pods) / bg.interval_s * expected_tree_size(op)
                         for bg, wl, op in mesh.backgrounds)
        # User requests per second at the daily mean; pollers make the rest of ``rps``.
        self.root_rate = max(rps - background, 0.1 * rps) / mean_size
        self._clients = [(self._client_ip(i), BROWSER_AGENTS[rng.randrange(len(BROWSER_AGENTS))])
                         for i in range(CLIENTS)]
        self._client_cum = list(_cumulative(1 / (i + 1) ** 0.8 for i in range(CLIENTS)))
        self._phases = {(id(op), pod.name): rng.uniform(0, bg.interval_s) * US
                        for bg, wl, op in mesh.backgrounds for pod in wl.pods}
        self._tcp = self._pooled_connections(seed, counter)
        self._tcp_index = 0

    @staticmethod
    def _client_ip(i: int) -> str:
        nets = ("198.51.100", "203.0.113", "192.0.2")
        return f"{nets[i % 3]}.{1 + (i * 37) % 254}"

    def load(self, t_us: int) -> float:
        minute = max(0, min(len(self._noise) - 1, (t_us - self.start_us) // MINUTE_US))
        return diurnal(t_us) * self._noise[minute]

    # -- per window ---------------------------------------------------------------------------
    def calls_between(self, t0: int, t1: int) -> list[Call]:
        """Every benign call whose tree starts in [t0, t1), parents before children."""
        b = self.builder
        rng = b.rng
        b.sink = []
        # (time, tie-breaker, background job or None for a user request through the gateway)
        roots: list[tuple[int, int, tuple[Pod, Operation] | None]] = []
        t = t0
        while t < t1:
            minute_end = min(t1, t - (t - self.start_us) % MINUTE_US + MINUTE_US)
            rate = self.root_rate * self.load(t) / US
            while True:
                t += int(rng.expovariate(rate)) + 1
                if t >= minute_end:
                    t = minute_end
                    break
                roots.append((t, 0, None))
        for bg, wl, op in self.mesh.backgrounds:
            step = int(bg.interval_s * US)
            for pod in wl.pods:
                phase = self.start_us + int(self._phases[(id(op), pod.name)])
                k = max(0, math.ceil((t0 - phase) / step))
                while (at := phase + k * step) < t1:
                    if pod.alive(at):
                        roots.append((at + rng.randrange(0, 400_000), 1, (pod, op)))
                    k += 1
        roots.sort(key=lambda r: (r[0], r[1]))
        gateway_pods = self.mesh.gateway.workloads[0].pods
        for at, _kind, job in roots:
            if at >= self.end_us:
                continue
            if job is not None:
                b.benign(at, *job)
                continue
            entry, op = self.mesh.entries[bisect.bisect(self._entry_cum,
                                                        rng.random() * self._entry_cum[-1])]
            client_ip, agent = self._clients[bisect.bisect(
                self._client_cum, rng.random() * self._client_cum[-1])]
            gw = gateway_pods[rng.randrange(len(gateway_pods))]
            call = b.benign(at, gw, op, authority=entry.host, user_agent=agent, xff=client_ip)
            if call is not None:
                call.down_remote = f"{client_ip}:{b.eph()}"
                call.down_local = f"{gw.ip}:8080"
                call.route = None
        calls = b.sink
        while self._tcp_index < len(self._tcp) and self._tcp[self._tcp_index].start_us < t1:
            calls.append(self._tcp[self._tcp_index])
            self._tcp_index += 1
        b.sink = []
        return calls

    # -- long-lived TCP clients ----------------------------------------------------------------
    def _pooled_connections(self, seed: int, counter: Counter) -> list[Call]:
        """Database/cache connections: pooled, minutes long, logged once when they close."""
        b = CallBuilder(self.mesh, stream(seed, "tcp"), counter)
        rng = b.rng
        for wl, svc in self.mesh.pooled:
            for pod in wl.pods:
                t = max(self.start_us, pod.created_us) + rng.randrange(0, 90) * US
                stop = min(self.end_us, pod.deleted_us or self.end_us)
                while t < stop:
                    life = int(min(15 * 60, max(20, rng.expovariate(1 / 240))) * US)
                    if t + life > stop:
                        break  # still open at the end: not logged yet
                    self._connection(b, t, pod, svc, life)
                    t += life + rng.randrange(5_000, 2_000_000)
        calls = sorted(b.sink, key=lambda c: (c.start_us, c.seq))
        b.sink = []
        return calls

    def _connection(self, b: CallBuilder, t: int, pod: Pod, svc: Service, life: int) -> None:
        call = b.new_call(t, service=svc, src_pod=pod)
        if call is None:
            return
        seconds = life / US
        load = self.load(t)
        received = int(seconds * load * b.rng.uniform(80, 400))
        sent = int(received * b.rng.uniform(2.0, 12.0))
        b.tcp_session(call, life, sent=sent, received=received)


def _cumulative(weights: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for w in weights:
        total += w
        yield total
