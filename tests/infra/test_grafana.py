"""infra/grafana: the dashboard loads, and uses only the metrics of the metrics contract.

The contract is the table in infra/README.md ("Metrics contract"); the dashboard's PromQL may
use those names only, and meshwatch's telemetry must export exactly those families. The
ClickHouse panels' SQL is executed against real meshwatch data in test_clickhouse.py.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.infra.common import INFRA, yaml_doc

BOARD = json.loads((INFRA / "grafana" / "meshwatch-dashboard.json").read_text(encoding="utf-8"))
README = (INFRA / "README.md").read_text(encoding="utf-8")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "inf", "nan", "le"}


def contract() -> dict[str, str]:
    """Metric name -> type, from the README table rows ``| `name` | type | labels | ... |``."""
    section = README.split("## Metrics contract", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(meshwatch_[a-z_]+)` \| (counter|gauge|histogram) \|", section, re.M)
    return dict(rows)


CONTRACT = contract()


def test_contract_lists_the_agreed_metrics():
    assert CONTRACT == {
        "meshwatch_records_consumed_total": "counter",
        "meshwatch_records_parsed_total": "counter",
        "meshwatch_parse_failures_total": "counter",
        "meshwatch_consumer_lag": "gauge",
        "meshwatch_batch_seconds": "histogram",
        "meshwatch_store_write_seconds": "histogram",
        "meshwatch_alerts_raised_total": "counter",
        "meshwatch_notifications_total": "counter",
        "meshwatch_state_evictions_total": "counter",
    }


def allowed_series() -> set[str]:
    names = set()
    for name, kind in CONTRACT.items():
        names.add(name)
        if kind == "histogram":
            names |= {name + suffix for suffix in HISTOGRAM_SUFFIXES}
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (selectors, not functions, labels or keywords)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\$\w+|\$\{\w+\}", "", expr)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(?!\w)(\s*\()?", expr):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in PROMQL_WORDS or re.fullmatch(r"\d\w*", word):
            continue
        names.add(word)
    return names


def test_metric_name_extraction():
    expr = ('histogram_quantile(0.95, sum by (le, table) (rate('
            'meshwatch_store_write_seconds_bucket{topic=~"$topic"}[$__rate_interval])))')
    assert metric_names(expr) == {"meshwatch_store_write_seconds_bucket"}
    assert metric_names("sum(rate(a_total[5m])) / clamp_min(sum(up), 1e-9)") == {"a_total", "up"}


def _prometheus_exprs() -> list[tuple[str, str]]:
    exprs = []
    for panel in BOARD["panels"]:
        for target in panel.get("targets", []):
            if "expr" in target:
                exprs.append((panel["title"], target["expr"]))
    for variable in BOARD["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(<series selector>, <label>): the metric is the first argument.
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["definition"])
            assert match, variable["definition"]
            exprs.append((f"${variable['name']}", match.group(1)))
    return exprs


def test_promql_uses_only_contract_metrics():
    exprs = _prometheus_exprs()
    assert len(exprs) >= 10
    allowed = allowed_series()
    used = set()
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, f"{title}: no metric found in {expr!r}"
        unknown = names - allowed
        assert not unknown, f"{title}: {sorted(unknown)} not in the metrics contract"
        used |= names
    # Every metric of the contract is on the dashboard.
    bases = {re.sub(r"_(bucket|sum|count)$", "", n) if n not in CONTRACT else n for n in used}
    assert set(CONTRACT) <= bases


def test_dashboard_structure():
    assert BOARD["uid"] == "meshwatch-overview" and BOARD["title"]
    assert isinstance(BOARD["schemaVersion"], int)
    ids = [p["id"] for p in BOARD["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in BOARD["templating"]["list"]}
    assert variables["prometheus"]["query"] == "prometheus"
    assert variables["clickhouse"]["query"] == "grafana-clickhouse-datasource"
    for panel in BOARD["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
        uid = panel["datasource"]["uid"]
        assert uid in ("${prometheus}", "${clickhouse}"), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            if uid == "${clickhouse}":
                assert panel["datasource"]["type"] == "grafana-clickhouse-datasource"
                assert target["editorType"] == "sql" and target["rawSql"].strip()
                assert target["queryType"] in ("table", "timeSeries")
                assert "${database}." in target["rawSql"]
            else:
                assert target["expr"].strip()


def test_clickhouse_panels_cover_the_security_views():
    titles = {p["title"] for p in BOARD["panels"]
              if p.get("datasource", {}).get("uid") == "${clickhouse}"}
    assert {"Alerts per hour by detector", "mTLS share per destination namespace",
            "Top talkers", "Plaintext edges"} <= titles


def test_grafana_provisioning_matches_the_dashboard():
    datasources = yaml_doc(INFRA / "grafana" / "provisioning" / "datasources" / "meshwatch.yaml")
    by_type = {d["type"]: d for d in datasources["datasources"]}
    variables = {v["name"]: v for v in BOARD["templating"]["list"]}
    assert by_type["prometheus"]["uid"] == variables["prometheus"]["current"]["value"]
    clickhouse = by_type["grafana-clickhouse-datasource"]
    assert clickhouse["uid"] == variables["clickhouse"]["current"]["value"]
    assert clickhouse["jsonData"]["defaultDatabase"] == variables["database"]["query"]
    assert clickhouse["secureJsonData"]["password"].startswith("$")  # from the environment
    providers = yaml_doc(INFRA / "grafana" / "provisioning" / "dashboards" / "meshwatch.yaml")
    path = providers["providers"][0]["options"]["path"]
    compose = yaml_doc(INFRA / "docker-compose.yml")["services"]["grafana"]
    assert any(v.startswith("./grafana/meshwatch-dashboard.json:" + path)
               for v in compose["volumes"])


def test_meshwatch_telemetry_exports_exactly_the_contract():
    telemetry_module = pytest.importorskip("meshwatch.telemetry")
    from opentelemetry.metrics import Counter, Histogram

    telemetry = telemetry_module.Telemetry()
    try:
        for value in vars(telemetry).values():
            if isinstance(value, Counter):
                value.add(1, {"topic": "t", "format": "f", "reason": "r", "detector": "d",
                              "severity": "high", "sink": "s", "outcome": "ok"})
            elif isinstance(value, Histogram):
                value.record(0.01, {"table": "edge_events"})
        for kind in ("lag", "evictions"):
            telemetry.watch(kind, lambda: {(("map", "m"), ("partition", "0"), ("topic", "t")): 1})
        text = telemetry.prometheus_text().decode()
    finally:
        telemetry.shutdown()
    families = set(re.findall(r"^# TYPE (meshwatch_\w+) (\w+)", text, re.M))
    exported = {name: kind for name, kind in families}
    # prometheus_client names counter families without _total in # TYPE lines.
    normalized = {name + ("_total" if kind == "counter" and not name.endswith("_total") else ""):
                  kind for name, kind in exported.items()}
    assert normalized == CONTRACT
