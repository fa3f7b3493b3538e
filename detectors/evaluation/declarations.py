"""What a mesh operator would declare, derived from the simulator's ``mesh.json``.

Several detectors only speak when told what the mesh *should* look like: Istio policy files
(``policy_violation``, ``plaintext_permissive``, STRICT severity in ``plaintext_edge``), crown
jewels (``crown_jewel_access``), service accounts (``identity_misuse``). `meshwatch eval
--declare-from-mesh` writes those declarations from the simulated topology so the evaluation
covers these detectors as a configured deployment would run them:

* one namespace-wide ``PeerAuthentication`` per namespace with its mode;
* one ``AuthorizationPolicy`` (ALLOW) per service that has one, selecting ``app: <service>``
  and allowing the listed principals;
* the services marked ``sensitive`` as crown jewels and sensitive services;
* each workload's service account.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


def _principal(p: str) -> str:
    return p[len("spiffe://"):] if p.startswith("spiffe://") else p


def istio_policies(mesh: Mapping[str, Any]) -> list[dict[str, Any]]:
    """PeerAuthentication + AuthorizationPolicy documents for the mesh.

    >>> docs = istio_policies({"namespaces": [{"name": "shop", "peer_authentication": "STRICT"}],
    ...     "services": [{"name": "db", "namespace": "shop",
    ...                   "authorization_policy": ["spiffe://cluster.local/ns/shop/sa/api"]}]})
    >>> [d["kind"] for d in docs]
    ['PeerAuthentication', 'AuthorizationPolicy']
    >>> docs[1]["spec"]["rules"][0]["from"][0]["source"]
    {'principals': ['cluster.local/ns/shop/sa/api']}
    """
    docs: list[dict[str, Any]] = []
    for ns in mesh.get("namespaces", ()):
        mode = ns.get("peer_authentication")
        if mode:
            docs.append({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                         "metadata": {"name": "default", "namespace": ns["name"]},
                         "spec": {"mtls": {"mode": mode}}})
    for svc in mesh.get("services", ()):
        allowed = svc.get("authorization_policy")
        if allowed is None:
            continue
        docs.append({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": f"{svc['name']}-allow", "namespace": svc["namespace"]},
            "spec": {"selector": {"matchLabels": {"app": svc["name"]}}, "action": "ALLOW",
                     "rules": [{"from": [{"source": {
                         "principals": [_principal(p) for p in allowed]}}]}]},
        })
    return docs


def detector_config(mesh: Mapping[str, Any], policy_file: Path) -> dict[str, Any]:
    """Detector overrides (the ``detectors:`` section) declaring what ``mesh`` says; the
    declaration-only detectors are enabled with their declarations."""
    sensitive = sorted({f"{s['name']}.{s['namespace']}.*" for s in mesh.get("services", ())
                        if s.get("sensitive")})
    accounts = {f"{w['namespace']}/{w['name']}": w["service_account"]
                for w in mesh.get("workloads", ()) if w.get("service_account")
                and w.get("principal")}
    files = [str(policy_file)]
    return {
        "plaintext_edge": {"params": {"policy_files": files, "sensitive_services": sensitive}},
        "plaintext_permissive": {"enabled": True, "params": {"policy_files": files}},
        "policy_violation": {"enabled": True, "params": {"policy_files": files}},
        "mtls_downgrade": {"params": {"sensitive_services": sensitive}},
        "crown_jewel_access": {"enabled": True, "params": {"services": sensitive}},
        "identity_misuse": {"params": {"service_accounts": accounts}},
    }


def write_declarations(mesh_json: Path, out_dir: Path) -> dict[str, Any]:
    """Write the policy file for ``mesh_json`` into ``out_dir``; returns detector overrides."""
    import json

    mesh = json.loads(mesh_json.read_text("utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "istio-policies.yaml"
    path.write_text(yaml.safe_dump_all(istio_policies(mesh), sort_keys=False), "utf-8")
    return detector_config(mesh, path)
