"""The ClickHouse *server* backend (clickhouse-connect): same schema, same SQL, same answers.

Opt-in: these tests need a running ClickHouse server and are SKIPPED (not passed) unless
``MESHWATCH_TEST_CLICKHOUSE_URL`` is set, credentials in the URL as the README shows::

    docker run -d --rm -p 8123:8123 -e CLICKHOUSE_PASSWORD=secret clickhouse/clickhouse-server
    MESHWATCH_TEST_CLICKHOUSE_URL=http://default:secret@127.0.0.1:8123 \\
        .venv/bin/pytest tests/core/test_clickhouse_server.py

(``MESHWATCH_TEST_CLICKHOUSE_USER`` / ``_PASSWORD`` override the URL's; the user defaults to
``default``.) Each run works in its own database and drops it afterwards. The
unreachable-server test needs no server and always runs.
"""

from __future__ import annotations

import socket
import uuid
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from meshwatch.graphs import service
from meshwatch.graphs.timerange import TimeRange
from meshwatch.policy import istio_principal, plan_policies, render_yaml
from meshwatch.settings import StoreSettings, env_flag
from meshwatch.store import Store, StoreError, StoreUnavailable
from meshwatch.store.schema import applied_versions, available_migrations
from tests.graph.mesh import BATCH, CART, CART_SA, DB, INTRUDER, PAY, WEB, at, build, generate

URL = env_flag("MESHWATCH_TEST_CLICKHOUSE_URL")
_PARTS = urlsplit(URL or "")
USER = env_flag("MESHWATCH_TEST_CLICKHOUSE_USER") or unquote(_PARTS.username or "") or "default"
PASSWORD = env_flag("MESHWATCH_TEST_CLICKHOUSE_PASSWORD") or unquote(_PARTS.password or "")
needs_server = pytest.mark.skipif(
    URL is None,
    reason="MESHWATCH_TEST_CLICKHOUSE_URL not set: ClickHouse server tests are opt-in "
           "(see the module docstring / README 'ClickHouse server')",
)
A = TimeRange(at(0), at(10))
B = TimeRange(at(20), at(30))


def _settings(**overrides: object) -> StoreSettings:
    values = {"url": URL, "user": USER, "password": PASSWORD,
              "database": f"meshwatch_test_{uuid.uuid4().hex[:10]}"}
    values.update(overrides)
    return StoreSettings(**values)


@pytest.fixture(scope="module")
def truth():
    return generate()


@pytest.fixture(scope="module")
def server(truth):
    if URL is None:
        pytest.skip("MESHWATCH_TEST_CLICKHOUSE_URL not set")
    store = Store.open(_settings())
    try:
        rows, events = build(truth)
        store.insert_windows(rows)
        store.insert_events(events)
        yield store
    finally:
        try:
            store.execute(f"DROP DATABASE IF EXISTS {store.db}")
        finally:
            store.close()


def test_unreachable_server_is_a_clear_unavailable_error():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StoreUnavailable, match=rf"cannot connect to ClickHouse server "
                                               rf"http://127.0.0.1:{port}"):
        Store.open(StoreSettings(url=f"http://127.0.0.1:{port}"))


@needs_server
def test_wrong_password_is_refused_clearly():
    with pytest.raises(StoreError) as caught:
        store = Store.open(_settings(password=PASSWORD + "-wrong"))
        store.close()
    text = str(caught.value)
    assert "ClickHouse server" in text
    assert any(word in text for word in ("Authentication", "AUTHENTICATION", "password", "516"))


@needs_server
def test_migrations_apply_once(server):
    assert applied_versions(server.backend, server.db) == {m.version for m in
                                                           available_migrations()}
    assert server.migrate() == []


@needs_server
def test_snapshot_matches_the_generated_calls(server, truth):
    snap = service.snapshot(server, A)
    assert {e.key: e.requests for e in snap.edges} == truth.requests(0, 10)
    edges = snap.edge_map()
    assert edges[(WEB, PAY)].mtls_status == "mixed"
    assert edges[(INTRUDER, CART)].mtls_status == "plaintext"
    assert edges[(CART_SA, DB)].mtls_status == "unknown"
    assert edges[(WEB, CART)].latency_p99 is not None and edges[(WEB, CART)].windows == 10


@needs_server
def test_replay_leaves_no_duplicates(server, truth):
    before = service.snapshot(server, A).to_dict()
    rows, _ = build(truth)
    server.insert_windows(rows)
    assert service.snapshot(server, A).to_dict() == before


@needs_server
def test_diff_coverage_series_and_policy(server):
    d = service.diff(server, A, B)
    assert [e.key for e in d.new_edges] == [(BATCH, CART)]
    assert [e.key for e in d.vanished_edges] == [(INTRUDER, CART)]
    cov = service.coverage(server, A, 300)
    assert {r.namespace for r in cov.totals} == {"shop", "pay"}
    assert len(service.series(server, WEB, CART, A)) == 10
    plan = plan_policies(service.snapshot(server, A, latency=False))
    docs = [d for d in yaml.safe_load_all(render_yaml(plan)) if d]
    cart = next(d for d in docs if d["metadata"]["name"] == "meshwatch-allow-cart")
    assert cart["spec"]["rules"][0]["from"][0]["source"]["principals"] == [
        istio_principal(WEB)]
