"""The web UI in a real headless Chromium: log in with a token, see an alert arrive live,
acknowledge it, open the graph; hostile strings stay text; the CSP holds (no violations)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from alerts.lifecycle import alert_id
from meshwatch.records import Alert, Endpoint, fingerprint

HOSTILE = '<img src=x onerror="window.__pwned=1">'


def _login(page, live_app, next_path: str = "/ui/") -> None:
    page.goto(f"{live_app.url}{next_path}")
    page.wait_for_url("**/ui/login**")
    page.fill("#token", live_app.token)
    page.click("#login-submit")
    page.wait_for_url(f"{live_app.url}{next_path}")


def _csp_violations(page) -> list[str]:
    return [m for m in page.console_messages if "Content Security Policy" in m
            or m.startswith("pageerror")]


def _wait_eval(page, expression: str, timeout: float = 15.0) -> None:
    """Poll an expression (wait_for_function evaluates strings in the page, which our CSP
    rightly forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


def _new_alert(n: int) -> Alert:
    entity = f"10.9.9.{n}->db.pay.svc.cluster.local:5432"
    fp = fingerprint("plaintext_edge", entity)
    now = datetime.now(UTC).replace(microsecond=0)
    return Alert(
        id=alert_id(fp, now), fingerprint=fp, detector="plaintext_edge", severity="critical",
        title=f"Plaintext call {HOSTILE} -> db {n}", summary="live test " + HOSTILE,
        source=Endpoint(address=f"10.9.9.{n}", principal=HOSTILE),
        destination=Endpoint(service="db.pay.svc.cluster.local:5432", namespace="pay"),
        first_seen=now, last_seen=now, count=1, score=1.0, mitre=("T1040",),
        runbook_url="javascript:window.__pwned=2", status="open", labels={},
        evidence=({"path": "/<script>window.__pwned=3</script>", "user_agent": HOSTILE,
                   "request_id": "req-live"},))


def test_login_live_alert_acknowledge_and_graph(page, live_app):
    # Not logged in: the feed redirects to the login page; a wrong token is refused.
    page.goto(f"{live_app.url}/ui/")
    page.wait_for_url("**/ui/login**")
    page.fill("#token", "mwt_000000000000_" + "A" * 43)
    page.click("#login-submit")
    page.wait_for_selector("#login-error:has-text('invalid')")
    page.fill("#token", live_app.token)
    page.click("#login-submit")
    page.wait_for_url(f"{live_app.url}/ui/")
    page.wait_for_selector("#alert-rows tr")
    assert page.inner_text("#whoami") == "ana (analyst)"
    page.wait_for_selector("#live[data-state='open']")

    # An alert stored while the page is open (another writer: the feed polls the store).
    alert = _new_alert(1)
    live_app.store.upsert_alerts([alert])
    row = page.wait_for_selector(f"#alert-rows tr[data-id='{alert.id}']", timeout=10_000)
    assert HOSTILE in row.inner_text()  # shown as text
    assert page.evaluate("window.__pwned") is None

    # Open it, acknowledge it; the audit trail names the token.
    page.click(f"#alert-rows tr[data-id='{alert.id}'] a")
    page.wait_for_url(f"**/ui/alerts/{alert.id}")
    page.wait_for_selector("#facts dd")
    assert HOSTILE in page.inner_text("#title") and HOSTILE in page.inner_text("#evidence")
    # A javascript: runbook URL never becomes a link.
    assert page.query_selector("#runbook-link") is None
    assert "No runbook link" in page.inner_text("#runbook-link-box")
    page.fill("#comment", "on it")
    page.click("#act-acknowledge")
    page.wait_for_selector("#facts .status-acknowledged")
    page.wait_for_selector("#audit tbody td:has-text('acknowledge')")
    assert "ana" in page.inner_text("#audit") and "on it" in page.inner_text("#audit")
    assert live_app.store.get_alert(alert.id).status == "acknowledged"
    assert page.evaluate("window.__pwned") is None

    # The service graph renders the stored edges, plaintext ones in red.
    page.click("nav a:has-text('Service graph')")
    page.wait_for_selector("#graph[data-edges]")
    edges = page.evaluate("window.__meshwatch.graph.edges().length")
    assert edges == int(page.get_attribute("#graph", "data-edges")) >= 4
    colours = page.evaluate("window.__meshwatch.graph.edges().map(e => e.data('mtls'))")
    assert "plaintext" in colours and "all-mtls" in colours
    # Click an edge: its series shows.
    page.evaluate("window.__meshwatch.graph.edges()[0].emit('tap')")
    page.wait_for_selector("#series-table tbody tr")
    assert _csp_violations(page) == []


def test_bulk_acknowledge_and_alert_page_graph(page, live_app):
    alerts = [_new_alert(n) for n in (2, 3)]
    live_app.store.upsert_alerts(alerts)
    _login(page, live_app)
    for a in alerts:
        page.check(f"#alert-rows tr[data-id='{a.id}'] input[type=checkbox]")
    page.click("#bulk-ack")
    page.wait_for_selector("#toast:has-text('acknowledged 2')")
    assert {live_app.store.get_alert(a.id).status for a in alerts} == {"acknowledged"}
    # An alert from the pipeline: its neighbourhood mini-graph highlights the alerting edge.
    stored = [a for a in live_app.store.list_alerts(detector=["plaintext_edge"])
              if a.source.address == "10.244.3.77"]
    page.goto(f"{live_app.url}/ui/alerts/{stored[0].id}")
    _wait_eval(page, "Boolean(window.__meshwatch && window.__meshwatch.mini)")
    alerting = page.evaluate(
        "window.__meshwatch.mini.edges('[alerting = 1]').map(e => [e.source().id(), "
        "e.target().id()])")
    assert alerting == [["10.244.3.77", "ledger.pay.svc.cluster.local:8080"]]
    page.wait_for_selector("#series-table tbody tr")
    assert _csp_violations(page) == []


def test_docs_page_and_logout(page, live_app):
    _login(page, live_app, "/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    assert _csp_violations(page) == []
    page.goto(f"{live_app.url}/ui/")
    page.click("#logout")
    page.wait_for_url("**/ui/login")
    page.goto(f"{live_app.url}/ui/graph")
    page.wait_for_url("**/ui/login**")


def test_viewer_cannot_act(page, live_app):
    from alerts.tokens import TokenStore

    _, token = TokenStore(live_app.store).create("vic", "viewer")
    page.goto(f"{live_app.url}/ui/login")
    page.fill("#token", token)
    page.click("#login-submit")
    page.wait_for_selector("#alert-rows tr")
    assert page.is_disabled("#bulk-ack")
    first = page.get_attribute("#alert-rows tr", "data-id")
    page.goto(f"{live_app.url}/ui/alerts/{first}")
    page.wait_for_selector("#facts dd")
    assert page.is_disabled("#act-acknowledge") and page.is_disabled("#act-feedback")

