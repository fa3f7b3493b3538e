"""The routing tree: which receivers get an alert, grouped how, and how often (Alertmanager).

The YAML (``alerts.routing`` inline, or the file ``alerts.routing_file``) has Alertmanager's
shape and semantics::

    route:                          # the root: matches every alert, must name a receiver
      receiver: oncall
      group_by: [detector, dst_namespace]   # ['...'] = every label (one group per alert)
      group_wait: 30s               # wait this long after a group's first alert
      group_interval: 5m            # then at most one notification per interval per group
      repeat_interval: 4h           # re-send an unchanged, still-firing group this often
      routes:                       # children: first match wins unless `continue: true`
        - matchers: ['severity=~"high|critical"', 'dst_namespace=~"pay.*"']
          receiver: payments-pager
          continue: true            # ...and keep looking for further matching siblings
        - matchers: [detector=traffic_anomaly]
          receiver: siem
          group_wait: 0s
    receivers:
      - name: oncall
        webhook_configs:
          - url: https://hooks.example.com/meshwatch
            hmac_secret: {secret: webhook_hmac}    # alerts.secrets.webhook_hmac / env
        slack_configs:
          - url: {secret: slack_url}
            send_resolved: false
      - name: payments-pager
        pagerduty_configs: [{routing_key: {secret: pd_payments}}]
      - name: siem
        ocsf_configs: [{topic: security.findings, bootstrap_servers: [kafka:9092]}]
        alertmanager_configs: [{url: http://alertmanager:9093}]
        file_configs: [{path: /var/log/meshwatch/alerts.jsonl}]

A node matches when all its ``matchers`` match the alert's labels (`alerts.matchers`); then its
children are tried in order, and the alert goes to every matching child up to the first one
without ``continue``; a node none of whose children match takes the alert itself. Children
inherit ``receiver``, ``group_by`` and the three timings from their parent. Every receiver key
``<sink>_configs`` names a registered sink (`alerts.sinks.SINKS`); each entry may also set
``send_resolved`` (default true). Everything is validated at start-up; errors name the key, e.g.
``alerts.routing: route.routes[0].matchers[1]: invalid matcher ...``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alerts.matchers import LABEL_NAME, Matcher, matches_all, parse_matchers
from alerts.sinks import SINKS, Sink, SinkContext
from meshwatch.settings import ConfigError, parse_duration

DEFAULT_GROUP_WAIT = 30.0
DEFAULT_GROUP_INTERVAL = 300.0
DEFAULT_REPEAT_INTERVAL = 4 * 3600.0
GROUP_BY_ALL = "..."
#: Labels left out of ``group_by: ['...']``: they change during an alert's life.
VOLATILE_LABELS = frozenset({"status", "silenced_by"})

_ROUTE_KEYS = frozenset({"receiver", "matchers", "group_by", "group_wait", "group_interval",
                         "repeat_interval", "continue", "routes"})


@dataclass(frozen=True)
class Integration:
    """One configured sink of a receiver, e.g. ``oncall/webhook/0``."""

    id: str
    receiver: str
    sink_name: str
    sink: Sink = field(compare=False)
    send_resolved: bool = True


@dataclass(frozen=True)
class Receiver:
    name: str
    integrations: tuple[Integration, ...] = ()


@dataclass(frozen=True)
class Route:
    """A node of the routing tree, with inherited settings already filled in."""

    path: str
    receiver: str
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] | None = ()
    group_wait: float = DEFAULT_GROUP_WAIT
    group_interval: float = DEFAULT_GROUP_INTERVAL
    repeat_interval: float = DEFAULT_REPEAT_INTERVAL
    continue_: bool = False
    routes: tuple[Route, ...] = ()

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes (this node or descendants) that take an alert with these labels."""
        if not matches_all(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            matched = child.match(labels)
            found.extend(matched)
            if matched and not child.continue_:
                break
        return found or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The labels that identify an alert's group on this route."""
        if self.group_by is None:
            return {k: v for k, v in labels.items() if k not in VOLATILE_LABELS}
        return {k: labels.get(k, "") for k in self.group_by}

    def group_key(self, group_labels: Mapping[str, str]) -> str:
        text = self.path + "|" + ",".join(f"{k}={v}" for k, v in sorted(group_labels.items()))
        return "g-" + hashlib.sha256(text.encode()).hexdigest()[:20]

    def walk(self) -> list[Route]:
        out = [self]
        for child in self.routes:
            out.extend(child.walk())
        return out


@dataclass(frozen=True)
class RoutingConfig:
    """A validated routing tree and its receivers (with their sinks built)."""

    route: Route
    receivers: dict[str, Receiver]

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        return self.route.match(labels)

    def routes(self) -> dict[str, Route]:
        return {r.path: r for r in self.route.walk()}

    def integrations(self) -> list[Integration]:
        return [i for r in self.receivers.values() for i in r.integrations]

    def close(self) -> None:
        for integration in self.integrations():
            integration.sink.close()

    @classmethod
    def parse(cls, data: Any, ctx: SinkContext, where: str = "alerts.routing") -> RoutingConfig:
        """Validate the YAML mapping; raise `ConfigError` naming the offending key."""
        try:
            return _parse(data, ctx)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _duration(value: Any, key: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _parse(data: Any, ctx: SinkContext) -> RoutingConfig:
    if not isinstance(data, Mapping):
        raise ValueError("must be a mapping with 'route' and 'receivers'")
    unknown = sorted(set(data) - {"route", "receivers"})
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown key (known: receivers, route)")
    if "route" not in data:
        raise ValueError("route: required (the root of the routing tree)")
    receivers = _parse_receivers(data.get("receivers") or [], ctx)
    root_data = data["route"]
    if not isinstance(root_data, Mapping):
        raise ValueError("route: must be a mapping")
    if root_data.get("matchers"):
        raise ValueError("route.matchers: the root route matches every alert; "
                         "put matchers on child routes")
    if root_data.get("continue"):
        raise ValueError("route.continue: not allowed on the root route")
    if not root_data.get("receiver"):
        raise ValueError("route.receiver: required on the root route")
    parent = Route(path="", receiver="")
    route = _parse_route(root_data, parent, "route", "0", receivers)
    return RoutingConfig(route, receivers)


def _parse_receivers(items: Any, ctx: SinkContext) -> dict[str, Receiver]:
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ValueError("receivers: must be a list")
    receivers: dict[str, Receiver] = {}
    sink_keys = {f"{name}_configs": name for name in SINKS.names()}
    for i, item in enumerate(items):
        key = f"receivers[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{key}: must be a mapping with a name")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{key}.name: required")
        if name in receivers:
            raise ValueError(f"{key}.name: receiver {name!r} is defined twice")
        unknown = sorted(set(item) - {"name"} - set(sink_keys))
        if unknown:
            raise ValueError(f"{key}.{unknown[0]}: unknown key (known: name, "
                             f"{', '.join(sorted(sink_keys))})")
        integrations: list[Integration] = []
        for config_key, sink_name in sink_keys.items():
            configs = item.get(config_key) or []
            if not isinstance(configs, Sequence) or isinstance(configs, str):
                raise ValueError(f"{key}.{config_key}: must be a list")
            for j, config in enumerate(configs):
                where = f"{key}.{config_key}[{j}]"
                if not isinstance(config, Mapping):
                    raise ValueError(f"{where}: must be a mapping of options")
                options = dict(config)
                send_resolved = options.pop("send_resolved", True)
                if not isinstance(send_resolved, bool):
                    raise ValueError(f"{where}.send_resolved: must be true or false")
                try:
                    sink = SINKS.get(sink_name).from_config(options, ctx)
                except ValueError as exc:
                    raise ValueError(f"{where}.{exc}") from None
                integrations.append(Integration(f"{name}/{sink_name}/{j}", name, sink_name,
                                                sink, send_resolved))
        receivers[name] = Receiver(name, tuple(integrations))
    return receivers


def _parse_route(data: Any, parent: Route, key: str, path: str,
                 receivers: Mapping[str, Receiver]) -> Route:
    if not isinstance(data, Mapping):
        raise ValueError(f"{key}: must be a mapping")
    unknown = sorted(set(data) - _ROUTE_KEYS)
    if unknown:
        hint = " (use matchers: ['name=value'])" if unknown[0] in ("match", "match_re") else ""
        raise ValueError(f"{key}.{unknown[0]}: unknown key{hint} "
                         f"(known: {', '.join(sorted(_ROUTE_KEYS))})")
    receiver = data.get("receiver", parent.receiver)
    if not isinstance(receiver, str) or receiver not in receivers:
        defined = ", ".join(sorted(receivers)) or "none"
        raise ValueError(f"{key}.receiver: unknown receiver {receiver!r} (defined: {defined})")
    raw_matchers = data.get("matchers") or []
    if isinstance(raw_matchers, str) or not isinstance(raw_matchers, Sequence):
        raise ValueError(f"{key}.matchers: must be a list of 'name=value' strings")
    try:
        matchers = parse_matchers(raw_matchers)
    except ValueError as exc:
        raise ValueError(f"{key}.matchers{exc}") from None
    group_by: tuple[str, ...] | None = parent.group_by
    if "group_by" in data:
        raw = data["group_by"] or []
        if isinstance(raw, str) or not isinstance(raw, Sequence):
            raise ValueError(f"{key}.group_by: must be a list of label names")
        if GROUP_BY_ALL in raw:
            if len(raw) > 1:
                raise ValueError(f"{key}.group_by: '...' cannot be combined with other labels")
            group_by = None
        else:
            for j, name in enumerate(raw):
                if not isinstance(name, str) or not LABEL_NAME.match(name):
                    raise ValueError(f"{key}.group_by[{j}]: invalid label name {name!r}")
            group_by = tuple(dict.fromkeys(raw))
    timings = {}
    for name in ("group_wait", "group_interval", "repeat_interval"):
        timings[name] = _duration(data[name], f"{key}.{name}") if name in data \
            else getattr(parent, name)
    if timings["group_interval"] <= 0:
        raise ValueError(f"{key}.group_interval: must be positive")
    if timings["repeat_interval"] <= 0:
        raise ValueError(f"{key}.repeat_interval: must be positive")
    cont = data.get("continue", False)
    if not isinstance(cont, bool):
        raise ValueError(f"{key}.continue: must be true or false")
    node = Route(path=path, receiver=receiver, matchers=matchers, group_by=group_by,
                 group_wait=timings["group_wait"], group_interval=timings["group_interval"],
                 repeat_interval=timings["repeat_interval"], continue_=cont)
    children = data.get("routes") or []
    if isinstance(children, str) or not isinstance(children, Sequence):
        raise ValueError(f"{key}.routes: must be a list of routes")
    parsed = tuple(_parse_route(child, node, f"{key}.routes[{i}]", f"{path}.{i}", receivers)
                   for i, child in enumerate(children))
    return Route(path=node.path, receiver=node.receiver, matchers=node.matchers,
                 group_by=node.group_by, group_wait=node.group_wait,
                 group_interval=node.group_interval, repeat_interval=node.repeat_interval,
                 continue_=node.continue_, routes=parsed)
