"""Exports: GraphML parses back with networkx, Cytoscape.js shape, DOT text."""

from __future__ import annotations

import io
import json

import networkx as nx

from meshwatch.graphs import service
from meshwatch.graphs.export import render, to_cytoscape, to_dot, to_graphml
from meshwatch.graphs.model import decode_ref
from meshwatch.graphs.timerange import TimeRange
from tests.graph.mesh import CART, INTRUDER, PAY, WEB, at

A = TimeRange(at(0), at(10))


def test_graphml_round_trips_through_networkx(mesh):
    snap = service.snapshot(mesh, A)
    graph = nx.read_graphml(io.BytesIO(to_graphml(snap).encode()))
    assert set(graph.nodes) == {n.id for n in snap.nodes}
    assert set(graph.edges) == {e.key for e in snap.edges}
    data = graph.edges[WEB, CART]
    edge = snap.edge_map()[(WEB, CART)]
    assert data["requests"] == edge.requests and data["mtls_status"] == "all-mtls"
    assert data["latency_p99"] == edge.latency_p99
    assert data["peer_principals"] == WEB
    assert graph.nodes[INTRUDER]["kind"] == "address"


def test_cytoscape_elements(mesh):
    snap = service.snapshot(mesh, A)
    data = json.loads(render(snap, "cytoscape"))
    assert data == json.loads(json.dumps(to_cytoscape(snap)))
    nodes, edges = data["elements"]["nodes"], data["elements"]["edges"]
    assert {n["data"]["id"] for n in nodes} == {n.id for n in snap.nodes}
    assert all(decode_ref(n["data"]["ref"]) == n["data"]["id"] for n in nodes)
    by_id = {e["data"]["id"]: e["data"] for e in edges}
    pay = by_id[f"{WEB} -> {PAY}"]
    assert (pay["source"], pay["target"], pay["mtls_status"]) == (WEB, PAY, "mixed")
    assert len(by_id) == len(snap.edges)


def test_dot_quotes_ids_and_colours_by_mtls(mesh):
    snap = service.snapshot(mesh, A)
    snap.nodes[0].id = 'odd "node" \\ id'
    text = to_dot(snap)
    assert text.startswith("digraph meshwatch {") and text.rstrip().endswith("}")
    assert f'"{INTRUDER}" -> "{CART}" [label="15 req, plaintext", color=red, style=dashed];' \
        in text
    assert f'"{WEB}" -> "{CART}" [label="202 req, all-mtls", color=darkgreen];' in text
    assert '"odd \\"node\\" \\\\ id"' in text
    assert text.count(" -> ") == len(snap.edges)


def test_json_export_is_the_snapshot(mesh):
    snap = service.snapshot(mesh, A)
    data = json.loads(render(snap, "json"))
    assert data["totals"]["edges"] == len(snap.edges) == len(data["edges"])
    assert data["range"] == {"start": "2026-03-01T12:00:00.000Z",
                             "end": "2026-03-01T12:10:00.000Z"}
