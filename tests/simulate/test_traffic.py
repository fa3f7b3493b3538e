"""Benign load: a daily curve, low error rates, Envoy's retries, nested durations."""

from __future__ import annotations

from collections import Counter as Tally

from meshwatch.simulate.builder import CallBuilder, Counter
from meshwatch.simulate.seeding import stream
from meshwatch.simulate.topology import US, build_mesh
from meshwatch.simulate.traffic import BenignTraffic, diurnal
from tests.simulate.helpers import START_US

HOUR = 3600 * US
MIDNIGHT = START_US - 6 * HOUR  # START is 06:00 UTC


def test_load_follows_a_daily_curve_with_noise() -> None:
    assert diurnal(MIDNIGHT + 15 * HOUR) > 1.35 > 0.65 > diurnal(MIDNIGHT + 3 * HOUR)
    mean = sum(diurnal(MIDNIGHT + h * HOUR // 4) for h in range(96)) / 96
    assert abs(mean - 1) < 1e-9
    mesh = build_mesh(12, seed=1, start_us=MIDNIGHT)
    traffic = BenignTraffic(mesh, seed=1, start_us=MIDNIGHT, end_us=MIDNIGHT + 24 * HOUR,
                            rps=3, counter=Counter.new())
    night = len(traffic.calls_between(MIDNIGHT + 3 * HOUR, MIDNIGHT + 3 * HOUR + 600 * US))
    afternoon = len(traffic.calls_between(MIDNIGHT + 15 * HOUR,
                                          MIDNIGHT + 15 * HOUR + 600 * US))
    assert afternoon > 1.6 * night
    assert 0.5 * 3 * 600 < afternoon < 2.5 * 3 * 600  # ~rps calls per second


def test_benign_calls_fail_rarely_and_retry_like_envoy() -> None:
    mesh = build_mesh(20, seed=1, start_us=START_US)
    builder = CallBuilder(mesh, stream(1, "rates"), Counter.new())
    frontend = mesh.services["frontend"].workloads[0].pods[0]
    op = mesh.services["productcatalogservice"].ops["GetProduct"]
    calls = [builder.benign(START_US + i * 10_000, frontend, op) for i in range(20_000)]
    flags = Tally(c.flags for c in calls if c is not None)
    assert flags["-"] > 0.99 * len(calls)
    assert flags["UF,URX"] > 0 and flags["URX"] > 0
    retried = [c for c in calls if c is not None and len(c.attempts) > 1]
    assert retried  # each retry is one more inbound record at the callee
    for call in calls:
        assert call is not None
        for attempt in call.attempts:
            assert attempt.offset_us + attempt.duration_us <= call.duration_us
        if not call.attempts:
            assert call.flags == "UF,URX" and call.transport_failure


def test_a_parent_covers_its_children() -> None:
    mesh = build_mesh(20, seed=2, start_us=START_US)
    builder = CallBuilder(mesh, stream(2, "tree"), Counter.new())
    gateway = mesh.gateway.workloads[0].pods[0]
    op = mesh.services["frontend"].ops["checkout"]
    root = builder.benign(START_US, gateway, op)
    assert root is not None and len(builder.sink) > 8
    for call in builder.sink[1:]:
        parent = call.parent
        assert parent is not None
        serving = parent.serving
        assert serving is not None
        app_start = parent.start_us + serving.offset_us
        assert app_start <= call.start_us
        assert call.end_us <= app_start + serving.duration_us
        assert call.src_pod is serving.pod
