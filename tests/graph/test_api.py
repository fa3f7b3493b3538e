"""The graph API over a real store: shapes, base64url edge refs, and 4xx (never 5xx) errors."""

from __future__ import annotations

import io

import networkx as nx
import pytest
from fastapi.testclient import TestClient

from alerts.api import create_app
from alerts.api.routes_graph import GraphOut
from alerts.tokens import TokenStore
from meshwatch.graphs.model import encode_ref
from meshwatch.settings import load_settings
from tests.graph.mesh import BATCH, CART, INTRUDER, PAY, WEB

A = {"at": "2026-03-01T12:10:00Z", "window": "10m"}


@pytest.fixture(scope="module")
def client(mesh):
    _, secret = TokenStore(mesh).create("graph-tests", "viewer")  # the API's own tokens
    with TestClient(create_app(mesh, load_settings()), raise_server_exceptions=False,
                    headers={"Authorization": f"Bearer {secret}"}) as c:
        yield c


def test_the_graph_needs_a_token(client):
    for path in ("/api/v1/graph", "/api/v1/coverage", "/api/v1/edges"):
        assert client.get(path, headers={"Authorization": ""}).status_code == 401


def test_graph_json_matches_the_documented_model(client):
    r = client.get("/api/v1/graph", params=A)
    assert r.status_code == 200
    body = GraphOut.model_validate(r.json())
    edges = {(e.src, e.dst): e for e in body.edges}
    assert edges[(WEB, CART)].requests == 202 and edges[(WEB, PAY)].mtls_status == "mixed"
    assert body.note is None and body.totals["edges"] == 4


def test_graph_formats_and_time_travel(client):
    later = client.get("/api/v1/graph", params={"at": "latest", "window": "10m",
                                                "namespace": "pay"}).json()
    assert {(e["src"], e["dst"]) for e in later["edges"]} >= {(BATCH, CART), (WEB, PAY)}
    graphml = client.get("/api/v1/graph", params={**A, "format": "graphml"})
    assert graphml.headers["content-type"].startswith("application/graphml+xml")
    assert len(nx.read_graphml(io.BytesIO(graphml.content)).edges) == 4
    dot = client.get("/api/v1/graph", params={**A, "format": "dot"})
    assert dot.text.startswith("digraph")
    cy = client.get("/api/v1/graph", params={**A, "format": "cytoscape"}).json()
    assert len(cy["elements"]["edges"]) == 4


def test_empty_graph_is_200_with_a_note(client):
    r = client.get("/api/v1/graph", params={"at": "2030-01-01T00:00:00Z"})
    assert r.status_code == 200 and r.json()["edges"] == []
    assert "the store holds windows from" in r.json()["note"]


def test_series_by_base64url_refs(client):
    nodes = {n["id"]: n for n in client.get("/api/v1/graph", params=A).json()["nodes"]}
    src, dst = nodes[WEB]["ref"], nodes[CART]["ref"]
    assert (src, dst) == (encode_ref(WEB), encode_ref(CART))
    r = client.get(f"/api/v1/edges/{src}/{dst}/series",
                   params={"since": "2026-03-01T12:00:00Z", "until": A["at"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["src"], body["dst"]) == (WEB, CART)
    assert len(body["points"]) == 10 and sum(p["requests"] for p in body["points"]) == 202
    padded = encode_ref(WEB) + "=" * (-len(encode_ref(WEB)) % 4)
    assert client.get(f"/api/v1/edges/{padded}/{dst}/series",
                      params={"since": "-3650d"}).status_code == 200


def test_diff_edges_and_coverage(client):
    d = client.get("/api/v1/graph/diff", params={"from": A["at"], "to": "2026-03-01T12:30:00Z",
                                                  "window": "10m"}).json()
    assert [e["src"] for e in d["new_edges"]] == [BATCH]
    assert [e["src"] for e in d["vanished_edges"]] == [INTRUDER]
    plain = client.get("/api/v1/edges", params={**A, "plaintext": "true"}).json()
    assert {(e["src"], e["dst"]) for e in plain["edges"]} == {(INTRUDER, CART), (WEB, PAY)}
    everything = client.get("/api/v1/edges", params={**A, "limit": 1}).json()
    assert everything["total"] == 4 and len(everything["edges"]) == 1
    cov = client.get("/api/v1/coverage", params={"since": "2026-03-01T12:00:00Z",
                                                 "until": A["at"], "bucket": "5m"}).json()
    assert {r["namespace"] for r in cov["totals"]} == {"pay", "shop"}


@pytest.mark.parametrize(("path", "params", "status", "message"), [
    ("/api/v1/graph", {"at": "yesterday"}, 400, "at: cannot read time 'yesterday'"),
    ("/api/v1/graph", {"window": "0"}, 400, "window must be longer than zero"),
    ("/api/v1/graph", {"window": "forever"}, 400, "window: not a duration"),
    ("/api/v1/graph", {"format": "svg"}, 422, "format"),
    ("/api/v1/graph/diff", {"from": "now", "to": "-1h"}, 400, "reversed comparison"),
    ("/api/v1/graph/diff", {"from": "now", "to": "now"}, 400, "empty comparison"),
    ("/api/v1/graph/diff", {}, 422, "from"),
    ("/api/v1/graph/diff", {"from": "-1h", "min_ratio": "1"}, 422, "min_ratio"),
    ("/api/v1/coverage", {"since": "now", "until": "-1d"}, 400, "reversed time range"),
    ("/api/v1/coverage", {"since": "2026-03-01", "until": "2026-03-01T00:00:00Z"}, 400,
     "empty time range"),
    ("/api/v1/coverage", {"since": "-3650d", "bucket": "1s"}, 400, "larger bucket"),
    (f"/api/v1/edges/{encode_ref(WEB)}/{encode_ref(CART)}/series",
     {"since": "now", "until": "-1h"}, 400, "reversed time range"),
    (f"/api/v1/edges/{encode_ref(WEB)}/not%2Fbase64/series", {}, 400, "base64url segment"),
    ("/api/v1/edges/spiffe://cluster.local/ns/a/sa/b/x:1/series", {}, 400, "%2F"),
    (f"/api/v1/edges/{encode_ref(WEB)}/$$$/series", {}, 400, "dst: not a base64url"),
    (f"/api/v1/edges/{encode_ref(WEB)}/_w/series", {}, 400, "UTF-8"),
    (f"/api/v1/edges/{encode_ref(WEB)}/{encode_ref('nowhere:1')}/series", {}, 404,
     "no edge"),
])
def test_bad_input_is_a_4xx_with_a_message(client, path, params, status, message):
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    assert message in r.text
