"""Routing tree and notification grouping: Alertmanager semantics, with an injected clock."""

from __future__ import annotations

import pytest

from alerts.grouping import Dispatcher
from alerts.matchers import Matcher, alert_labels
from alerts.routing import RoutingConfig
from alerts.sinks import SinkContext
from meshwatch.settings import ConfigError
from tests.alerts.factories import alert

CTX = SinkContext()


def tree(route: dict, receivers: list[str] | None = None, sink: str = "file") -> RoutingConfig:
    names = receivers or ["default", "pager", "siem", "slack"]
    return RoutingConfig.parse({
        "route": route,
        "receivers": [{"name": n, f"{sink}_configs": [{"path": "/dev/null"}]} for n in names],
    }, CTX)


def receivers_for(config: RoutingConfig, a) -> list[str]:
    return [r.receiver for r in config.match(alert_labels(a))]


@pytest.mark.parametrize(("text", "labels", "expected"), [
    ("detector=plaintext_edge", {"detector": "plaintext_edge"}, True),
    ('detector="plaintext_edge"', {"detector": "first_seen_edge"}, False),
    ("team!=payments", {}, True),  # a missing label reads as ""
    ("team!=payments", {"team": "payments"}, False),
    ('dst_namespace=~"pay.*"', {"dst_namespace": "payments"}, True),
    ('dst_namespace=~"pay"', {"dst_namespace": "payments"}, False),  # anchored
    ("severity!~high|critical", {"severity": "low"}, True),
    ("severity!~high|critical", {"severity": "critical"}, False),
    ('owner=""', {}, True),
])
def test_matcher_operators(text, labels, expected):
    assert Matcher.parse(text).matches(labels) is expected


@pytest.mark.parametrize("text", ["severity", "sev~high", "1abc=x", "a=~(", ""])
def test_bad_matchers_are_rejected(text):
    with pytest.raises(ValueError, match="invalid"):
        Matcher.parse(text)


def test_alert_labels_are_derived_and_win_over_own_labels():
    labels = alert_labels(alert(labels={"severity": "info", "team": "payments"}))
    assert labels["severity"] == "high" and labels["team"] == "payments"
    assert labels["alertname"] == labels["detector"] == "plaintext_edge"
    assert labels["src_namespace"] == "shop" and labels["dst_service"] == "db.pay:5432"
    assert labels["status"] == "open" and "T1040" in labels["mitre"]


def test_first_matching_child_wins_and_parent_takes_the_rest():
    config = tree({"receiver": "default", "routes": [
        {"matchers": ["severity=~high|critical"], "receiver": "pager"},
        {"matchers": ["detector=plaintext_edge"], "receiver": "slack"},
    ]})
    assert receivers_for(config, alert(severity="critical")) == ["pager"]
    assert receivers_for(config, alert(severity="low")) == ["slack"]
    assert receivers_for(config, alert(severity="low", detector="traffic_anomaly")) == [
        "default"]


def test_continue_sends_to_later_siblings_too():
    config = tree({"receiver": "default", "routes": [
        {"matchers": ["detector=~.+"], "receiver": "siem", "continue": True},
        {"matchers": ["dst_namespace=~pay.*"], "receiver": "pager"},
        {"matchers": ["severity=high"], "receiver": "slack"},
    ]})
    assert receivers_for(config, alert()) == ["siem", "pager"]  # stops at pager (no continue)
    assert receivers_for(config, alert(dst_namespace="shop")) == ["siem", "slack"]


def test_nested_routes_inherit_receiver_grouping_and_timings():
    config = tree({"receiver": "default", "group_by": ["detector"], "group_wait": "10s",
                   "routes": [{"matchers": ["dst_namespace=pay"], "receiver": "pager",
                               "group_interval": "1m",
                               "routes": [{"matchers": ["severity=critical"]}]}]})
    (route,) = config.match(alert_labels(alert(severity="critical")))
    assert route.path == "0.0.0" and route.receiver == "pager"
    assert (route.group_by, route.group_wait, route.group_interval, route.repeat_interval) == (
        ("detector",), 10.0, 60.0, 4 * 3600.0)


@pytest.mark.parametrize(("routing", "message"), [
    ({"route": {"receiver": "nope"}, "receivers": [{"name": "a"}]},
     "route.receiver: unknown receiver 'nope' (defined: a)"),
    ({"route": {"receiver": "a", "routes": [{"matchers": ["ok=1", "bad"]}]},
      "receivers": [{"name": "a"}]}, "route.routes[0].matchers[1]: invalid matcher 'bad'"),
    ({"route": {"receiver": "a", "routes": [{"match": {"a": "b"}}]},
      "receivers": [{"name": "a"}]}, "route.routes[0].match: unknown key"),
    ({"route": {"receiver": "a", "group_wait": "soon"}, "receivers": [{"name": "a"}]},
     "route.group_wait: not a duration"),
    ({"route": {"receiver": "a"}, "receivers": [{"name": "a"}, {"name": "a"}]},
     "receivers[1].name: receiver 'a' is defined twice"),
    ({"route": {"receiver": "a"}, "receivers": [{"name": "a", "email_configs": []}]},
     "receivers[0].email_configs: unknown key"),
    ({"route": {"receiver": "a"},
      "receivers": [{"name": "a", "webhook_configs": [{"url": "ftp://x"}]}]},
     "receivers[0].webhook_configs[0].url: scheme must be http or https"),
    ({"route": {"receiver": "a"},
      "receivers": [{"name": "a", "webhook_configs": [{"url": "http://x", "hmac": "s"}]}]},
     "receivers[0].webhook_configs[0].hmac: unknown key"),
    ({"route": {"receiver": "a"},
      "receivers": [{"name": "a", "pagerduty_configs": [{"routing_key": {"secret": "pd"}}]}]},
     "receivers[0].pagerduty_configs[0].routing_key: unknown secret 'pd'"),
    ({"route": {"receiver": "a", "matchers": ["a=b"]}, "receivers": [{"name": "a"}]},
     "route.matchers: the root route matches every alert"),
])
def test_invalid_routing_names_the_key(routing, message):
    with pytest.raises(ConfigError) as info:
        RoutingConfig.parse(routing, CTX)
    assert str(info.value).startswith("alerts.routing: ")
    assert message in str(info.value)


def test_routing_loads_from_settings_file(tmp_path):
    from alerts.notify import load_routing
    from meshwatch.settings import load_settings

    path = tmp_path / "routing.yaml"
    path.write_text("route: {receiver: hooks}\nreceivers:\n  - name: hooks\n"
                    "    webhook_configs: [{url: 'http://127.0.0.1:9/x', "
                    "hmac_secret: {secret: hook}}]\n")
    settings = load_settings(overrides={"alerts": {"routing_file": str(path),
                                                   "secrets": {"hook": "s3cret"}}})
    config = load_routing(settings)
    assert [i.id for i in config.integrations()] == ["hooks/webhook/0"]
    bad = load_settings(overrides={"alerts": {"routing_file": str(path)}})
    with pytest.raises(ConfigError, match=r"alerts.routing_file: .*unknown secret 'hook'"):
        load_routing(bad)


# -- grouping ---------------------------------------------------------------------------------

def dispatcher(route: dict | None = None, send_resolved: bool = True, muted=None) -> Dispatcher:
    routing = RoutingConfig.parse({
        "route": route or {"receiver": "oncall", "group_by": ["detector"], "group_wait": "30s",
                           "group_interval": "5m", "repeat_interval": "4h"},
        "receivers": [{"name": "oncall", "file_configs": [
            {"path": "/dev/null", "send_resolved": send_resolved}]}],
    }, CTX)
    return Dispatcher(routing, "http://feed.test", is_muted=muted)


def sent(d: Dispatcher, now: float) -> list[tuple[list[str], list[str]]]:
    """Flush and return, per notification, (firing alert ids, resolved alert ids)."""
    return [(sorted(a.id for a in n.firing), sorted(a.id for a in n.resolved))
            for _, n in d.flush(now).notifications]


def test_group_wait_collects_an_incident_into_one_notification():
    d = dispatcher()
    a, b = alert("x->y"), alert("z->y")
    d.add(a, now=0)
    d.add(b, now=10)
    assert sent(d, 29) == []
    assert sent(d, 30) == [(sorted([a.id, b.id]), [])]


def test_group_interval_and_repeat_interval():
    d = dispatcher()
    a, b = alert("x->y"), alert("z->y", minutes=1)
    d.add(a, now=0)
    assert sent(d, 30) == [([a.id], [])]
    d.add(a, now=40)  # a repeat finding (count/last_seen) is no news
    d.add(b, now=60)  # a new alert is: sent at the next group_interval, not before
    assert d.next_due() == 330
    assert sent(d, 329) == []
    assert sent(d, 330) == [(sorted([a.id, b.id]), [])]
    assert sent(d, 331 + 3600) == []  # nothing new, repeat not due
    assert sent(d, 330 + 4 * 3600) == [(sorted([a.id, b.id]), [])]


def test_resolution_is_sent_once_then_the_group_empties():
    d = dispatcher()
    a = alert()
    d.add(a, now=0)
    assert sent(d, 30) == [([a.id], [])]
    d.add(alert(status="resolved"), now=100)
    assert sent(d, 330) == [([], [a.id])]
    assert d.groups == {} and sent(d, 10_000) == []


def test_resolved_before_anyone_was_told_is_not_news():
    d = dispatcher()
    d.add(alert(), now=0)
    d.add(alert(status="resolved"), now=5)
    assert sent(d, 30) == [] and d.groups == {}


def test_send_resolved_false_skips_resolutions():
    d = dispatcher(send_resolved=False)
    a, b = alert("x->y"), alert("z->y")
    d.add(a, now=0)
    d.add(b, now=0)
    assert sent(d, 30) == [(sorted([a.id, b.id]), [])]
    d.add(alert("x->y", status="resolved"), now=40)
    assert sent(d, 330) == []


def test_group_by_splits_groups_and_all_labels_means_one_group_per_alert():
    d = dispatcher({"receiver": "oncall", "group_by": ["dst_namespace"], "group_wait": "0s"})
    d.add(alert("a->b", dst_namespace="pay"), now=0)
    d.add(alert("c->d", dst_namespace="pay"), now=0)
    d.add(alert("e->f", dst_namespace="shop"), now=0)
    batches = sorted(len(n.alerts) for _, n in d.flush(0).notifications)
    assert batches == [1, 2]
    d = dispatcher({"receiver": "oncall", "group_by": ["..."], "group_wait": "0s"})
    d.add(alert("a->b"), now=0)
    d.add(alert("c->d"), now=0)
    assert len(d.flush(0).notifications) == 2


def test_notification_ids_are_deterministic_and_distinct():
    def run() -> list[str]:
        d = dispatcher()
        d.add(alert("x->y"), now=0)
        first = [n.id for _, n in d.flush(30).notifications]
        d.add(alert("z->y"), now=31)
        return first + [n.id for _, n in d.flush(330).notifications] + [
            n.id for _, n in d.flush(330 + 4 * 3600).notifications]
    ids = run()
    assert len(ids) == 3 and len(set(ids)) == 3
    assert run() == ids  # the same history rebuilds the same ids (restart-safe)


def test_muted_alerts_are_held_back_until_the_silence_ends():
    silenced: set[str] = {"shop"}
    d = dispatcher(muted=lambda labels: labels.get("src_namespace") in silenced)
    a = alert("shop/web->db.pay:5432")
    d.add(a, now=0)
    assert sent(d, 30) == []
    silenced.clear()
    assert d.next_due() == 30 + 300  # a muted group is looked at again every group_interval
    assert sent(d, 330) == [([a.id], [])]


def test_restore_rebuilds_groups_and_does_not_resend():
    d = dispatcher()
    members = d.add(alert(), now=0)
    result = d.flush(30)
    assert len(result.notifications) == 1
    again = dispatcher()
    assert again.restore(members, result.logs, now=100) == []
    assert again.flush(130).notifications == []  # restored log: nothing new to say
    assert len(again.flush(30 + 4 * 3600).notifications) == 1  # but the repeat still comes
