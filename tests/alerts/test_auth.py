"""Authentication and roles: every endpoint but /healthz needs a token; 401 vs 403 vs 429;
tokens stored hashed; sessions for the UI; secure headers and CORS; the token CLI and API."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from alerts.api import create_app
from alerts.api.auth import SESSION_COOKIE
from alerts.tokens import TokenStore, parse_token
from meshwatch.cli.main import app as cli
from meshwatch.settings import load_settings
from tests.alerts.api_client import bearer, client
from tests.alerts.factories import alert

PUBLIC = {("GET", "/healthz"), ("POST", "/api/v1/session"), ("GET", "/ui/login"),
          ("GET", "/"), ("GET", "/ui")}
PAGES = {"/ui/", "/ui/alerts/{alert_id}", "/ui/graph", "/docs"}


def _concrete(path: str) -> str:
    return (path.replace("{alert_id}", "al-x").replace("{path:path}", "feed.js")
            .replace("{rest:path}", "x").replace("{src}", "YQ").replace("{dst}", "Yg")
            .replace("{silence_id}", "sil-x").replace("{notification_id}", "nt-x")
            .replace("{token_id}", "0123456789ab").replace("{rule_id}", "fr-0123456789abcdef")
            .replace("{detector}", "plaintext_edge"))


def test_every_route_but_healthz_and_login_needs_a_token(store):
    app = create_app(store, load_settings())
    routes = [(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops]
    routes += [("GET", p) for p in (*PAGES, "/openapi.json", "/ui/static/{path:path}",
                                    "/api/v1/edges/{rest:path}")]
    assert len(routes) > 30
    with client(store, role=None) as c:
        for method, path in routes:
            if (method, path) in PUBLIC:
                continue
            response = c.request(method, _concrete(path), follow_redirects=False,
                                 json={} if method in ("POST", "PUT") else None)
            if path in PAGES:  # pages send the browser to the login page instead
                assert response.status_code == 303, (method, path)
                assert response.headers["location"].startswith("/ui/login?next=")
                continue
            assert response.status_code == 401, (method, path, response.status_code)
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/healthz").status_code == 200
        assert c.get("/ui/login").status_code == 200
        assert c.get("/ui/static/style.css").status_code == 200  # the login page's own files


@pytest.mark.parametrize("header", [
    "Bearer mwt_0123456789ab_" + "A" * 43,  # well-formed, unknown
    "Bearer not-a-token",
    "Basic dXNlcjpwYXNz",
])
def test_bad_credentials_are_401_with_a_challenge(store, header):
    with client(store, role=None) as c:
        response = c.get("/api/v1/alerts", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "token" in response.json()["detail"] or "authentication" in response.json()["detail"]


def test_roles_401_vs_403(store):
    store.upsert_alerts([alert()])
    a = store.list_alerts()[0].id
    silence = {"matchers": ["detector=x"], "created_by": "a", "comment": "c", "duration": "1h"}
    webhook = {"version": "4", "status": "firing", "alerts": []}
    matrix = [  # (method, path, body, expected status per role)
        ("GET", "/api/v1/alerts", None, {"viewer": 200, "analyst": 200, "admin": 200,
                                         "integration": 403}),
        ("GET", "/metrics", None, {"viewer": 200, "integration": 403}),
        ("GET", "/api/v1/graph", None, {"viewer": 200, "integration": 403}),
        ("POST", f"/api/v1/alerts/{a}/assign", {"assignee": "ana"},
         {"viewer": 403, "analyst": 200, "admin": 200, "integration": 403}),
        ("GET", "/api/v1/silences", None, {"viewer": 200, "analyst": 200}),
        ("POST", "/api/v1/silences", silence, {"viewer": 403, "analyst": 403, "admin": 201}),
        ("GET", "/api/v1/tokens", None, {"viewer": 403, "analyst": 403, "admin": 200}),
        ("GET", "/api/v1/deliveries", None, {"viewer": 200}),
        ("POST", "/api/v1/deliveries/nt-x/retry", None, {"analyst": 403, "admin": 404}),
        ("POST", "/api/v1/integrations/alertmanager", webhook,
         {"viewer": 403, "integration": 200, "analyst": 200}),
    ]
    headers = {role: bearer(store, role) for role in ("viewer", "analyst", "admin",
                                                       "integration")}
    with client(store, role=None) as c:
        for method, path, body, expected in matrix:
            for role, status in expected.items():
                response = c.request(method, path, json=body, headers=headers[role])
                assert response.status_code == status, (method, path, role, response.text)
                if status == 403:
                    assert "role" in response.json()["detail"]


def test_tokens_are_stored_hashed_and_revocation_takes_effect(store):
    tokens = TokenStore(store)
    token, secret = tokens.create("ana", "analyst")
    token_id, raw_secret = parse_token(secret)
    assert token_id == token.id
    rows = store.query("SELECT * FROM {db}.api_tokens")
    dump = json.dumps(rows)
    assert raw_secret not in dump and secret not in dump
    assert len(rows[0]["hash"]) == 64 and rows[0]["salt"]
    with client(store, role=None) as c:
        auth = {"Authorization": f"Bearer {secret}"}
        assert c.get("/api/v1/alerts", headers=auth).status_code == 200
        wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        assert c.get("/api/v1/alerts", headers={"Authorization": f"Bearer {wrong}"}
                     ).status_code == 401
        admin = bearer(store, "admin")
        listed = c.get("/api/v1/tokens", headers=admin).json()["items"]
        assert {t["name"] for t in listed} >= {"ana"} and "hash" not in listed[0]
        assert c.delete(f"/api/v1/tokens/{token.id}", headers=admin).json()["state"] == "revoked"
        assert c.get("/api/v1/alerts", headers=auth).status_code == 401


def test_expired_tokens_fail(store):
    now = [datetime(2026, 3, 1, tzinfo=UTC)]
    tokens = TokenStore(store, clock=lambda: now[0])
    _, secret = tokens.create("short", "viewer", ttl=60)
    assert tokens.verify(secret) is not None
    now[0] += timedelta(seconds=61)
    assert tokens.verify(secret) is None


def test_repeated_failures_from_one_address_are_rate_limited(store):
    settings = load_settings(overrides={"api": {"auth_failure_limit": 3}})
    with client(store, role=None, settings=settings) as c:
        good = bearer(store, "viewer")
        bad = {"Authorization": "Bearer mwt_0123456789ab_" + "B" * 43}
        assert [c.get("/api/v1/alerts", headers=bad).status_code for _ in range(3)] == [401] * 3
        limited = c.get("/api/v1/alerts", headers=bad)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        # While limited, the address is refused whatever it sends (no oracle for guessing).
        assert c.get("/api/v1/alerts", headers=good).status_code == 429
        assert c.post("/api/v1/session", json={"token": "x"}).status_code == 429


def test_login_session_cookie_csrf_and_logout(store):
    store.upsert_alerts([alert()])
    alert_id = store.list_alerts()[0].id
    _, secret = TokenStore(store).create("ana", "analyst")
    with client(store, role=None) as c:
        assert c.post("/api/v1/session", json={"token": "nope"}).status_code == 401
        login = c.post("/api/v1/session", json={"token": secret})
        assert login.status_code == 200 and login.json()["role"] == "analyst"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert secret not in cookie  # a session token, not the API token
        assert c.get("/api/v1/session").json() == {"name": "ana", "role": "analyst",
                                                   "via": "session", "expires_at": None}
        assert c.get("/api/v1/alerts").status_code == 200
        # A write carried by the cookie must come from our own pages.
        url = f"/api/v1/alerts/{alert_id}/acknowledge"
        assert c.post(url, json={}).status_code == 403
        assert c.post(url, json={}, headers={"Origin": "https://evil.example"}).status_code == 403
        assert c.post(url, json={}, headers={"Origin": "http://testserver"}).status_code == 200
        assert c.delete("/api/v1/session",
                        headers={"Origin": "http://testserver"}).status_code == 204
        c.cookies.set(SESSION_COOKIE, login.cookies[SESSION_COOKIE])  # replay the old cookie
        assert c.get("/api/v1/alerts").status_code == 401


def test_secure_headers_and_cors(store):
    with client(store, role="viewer") as c:
        response = c.get("/api/v1/alerts", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in response.headers  # CORS off by default
        for name in ("content-security-policy", "x-content-type-options", "x-frame-options",
                     "referrer-policy"):
            assert name in response.headers
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert "unsafe-inline" not in response.headers["content-security-policy"]
        page = c.get("/ui/login")
        assert page.headers["content-security-policy"] and "<script" in page.text
        assert "<script>" not in page.text  # no inline script anywhere
    settings = load_settings(overrides={"api": {"cors_origins": ["https://soc.example"]}})
    with client(store, role="viewer", settings=settings) as c:
        response = c.get("/api/v1/alerts", headers={"Origin": "https://soc.example"})
        assert response.headers["access-control-allow-origin"] == "https://soc.example"
        other = c.get("/api/v1/alerts", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_token_api_validation_is_422(store):
    with client(store, role="admin") as c:
        assert c.post("/api/v1/tokens", json={"name": "x", "role": "root"}).status_code == 422
        assert c.post("/api/v1/tokens", json={"name": "bad name!", "role": "viewer"}
                      ).status_code == 422
        assert c.post("/api/v1/tokens", json={"name": "x", "role": "viewer",
                                              "expires_in": "soon"}).status_code == 422
        assert c.delete("/api/v1/tokens/nothex").status_code == 422
        assert c.delete("/api/v1/tokens/0123456789ab").status_code == 404
        created = c.post("/api/v1/tokens", json={"name": "bot", "role": "viewer",
                                                 "expires_in": "90d"})
        assert created.status_code == 201 and created.json()["token"].startswith("mwt_")
        assert created.json()["expires_at"] is not None


def test_token_cli_create_list_revoke(tmp_path):
    runner = CliRunner()
    path = str(tmp_path / "store")
    created = runner.invoke(cli, ["token", "create", "--role", "analyst", "--name", "ana",
                                  "--store", path, "--json"])
    assert created.exit_code == 0, created.output
    body = json.loads(created.stdout)
    assert body["token"].startswith("mwt_") and body["role"] == "analyst"
    listed = runner.invoke(cli, ["token", "list", "--store", path, "--json"])
    assert [t["name"] for t in json.loads(listed.stdout)] == ["ana"]
    assert "mwt_" not in listed.stdout
    revoked = runner.invoke(cli, ["token", "revoke", body["id"], "--store", path])
    assert revoked.exit_code == 0
    listed = runner.invoke(cli, ["token", "list", "--store", path, "--json", "--all"])
    assert json.loads(listed.stdout)[0]["state"] == "revoked"
    bad = runner.invoke(cli, ["token", "create", "--role", "root", "--name", "x",
                              "--store", path])
    assert bad.exit_code == 2 and "role" in bad.output
