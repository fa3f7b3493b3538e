"""The sink contract: one delivery attempt per call, a retryable or a permanent error.

A sink turns a `Notification` (the alerts of one notification group, for one receiver
integration) into one destination's wire format and sends it once. It never sleeps or retries:
the outbox's retry stage owns backoff, and the durable outbox owns delivery across restarts
(DESIGN.md "Sink"). Errors carry operator-facing messages that never contain secrets: sinks
build their messages from a redacted target description and pass everything through `redact`.

Every implementation registers in `SINKS`; a receiver's ``<name>_configs`` list in the routing
file selects it, and the conformance suite runs over every registered sink.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from meshwatch import __version__
from meshwatch.records import Alert, format_ts, parse_ts
from meshwatch.registry import Registry

USER_AGENT = f"meshwatch/{__version__}"

# Ranges `deny_private_webhooks` refuses: RFC 1918, loopback, link-local, CGNAT, ULA, unspecified.
PRIVATE_NETWORKS: tuple[str, ...] = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
    "100.64.0.0/10", "0.0.0.0/8", "::1/128", "fc00::/7", "fe80::/10", "::/128",
)


class DeliveryError(Exception):
    """A failed delivery attempt; the message is safe to log and show (no secrets)."""

    status: int | None = None


class RetryableDelivery(DeliveryError):
    """Try again later (receiver down, 5xx, 429, timeout); ``retry_after`` is the server's hint."""

    def __init__(self, message: str, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class PermanentDelivery(DeliveryError):
    """Retrying cannot help (4xx other than 408/425/429, refused target): list it as failed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Notification:
    """The alerts of one notification group for one integration of a receiver.

    ``id`` is deterministic (group, integration, alert ids and sequence number), so a replay or
    a restart rebuilds the same notification with the same id: it is the idempotency key
    receivers see, and the outbox's primary key.
    """

    id: str
    receiver: str
    integration: str
    group_key: str
    group_labels: dict[str, str]
    alerts: tuple[Alert, ...]
    created_at: datetime
    feed_url: str = "http://127.0.0.1:8080"

    @property
    def status(self) -> Literal["firing", "resolved"]:
        return "firing" if self.firing else "resolved"

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.status != "resolved"]

    @property
    def resolved(self) -> list[Alert]:
        return [a for a in self.alerts if a.status == "resolved"]

    def alert_url(self, alert: Alert) -> str:
        return f"{self.feed_url.rstrip('/')}/api/v1/alerts/{alert.id}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON body generic receivers get (and the form the outbox stores)."""
        return {
            "version": "1",
            "id": self.id,
            "receiver": self.receiver,
            "integration": self.integration,
            "status": self.status,
            "group_key": self.group_key,
            "group_labels": dict(self.group_labels),
            "created_at": format_ts(self.created_at),
            "feed_url": self.feed_url,
            "alerts": [a.to_dict() for a in self.alerts],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        return cls(
            id=data["id"], receiver=data["receiver"], integration=data["integration"],
            group_key=data["group_key"], group_labels=dict(data.get("group_labels") or {}),
            alerts=tuple(Alert.from_dict(a) for a in data["alerts"]),
            created_at=parse_ts(data["created_at"]), feed_url=data.get("feed_url") or "",
        )


def notification_id(integration: str, group_key: str, firing: Iterable[str],
                    resolved: Iterable[str], seq: int) -> str:
    """Deterministic id: same group, integration, alerts and sequence number, same id."""
    text = "|".join([integration, group_key, ",".join(sorted(firing)),
                     ",".join(sorted(resolved)), str(seq)])
    return "nt-" + hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class SinkContext:
    """What sinks need from the configuration besides their own keys."""

    secrets: Mapping[str, str] = field(default_factory=dict)
    deny_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    timeout: float = 10.0
    feed_url: str = "http://127.0.0.1:8080"

    def secret(self, value: Any, key: str) -> str:
        """A secret-bearing value: a literal string or ``{secret: NAME}`` (from settings)."""
        if isinstance(value, Mapping):
            if set(value) != {"secret"}:
                raise ValueError(f"{key}: use a string or {{secret: NAME}}")
            name = str(value["secret"])
            if name not in self.secrets:
                known = ", ".join(sorted(self.secrets)) or "none"
                raise ValueError(
                    f"{key}: unknown secret {name!r} (set alerts.secrets.{name} or the "
                    f"environment variable MESHWATCH_ALERTS__SECRETS__{name.upper()}; "
                    f"known: {known})"
                )
            return self.secrets[name]
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key}: must be a non-empty string or {{secret: NAME}}")
        return value


class Sink:
    """Base class: config parsing helpers, secret handling and the `send` contract."""

    name: ClassVar[str] = ""
    #: Keys `from_config` accepts (unknown keys are a configuration error naming the key).
    keys: ClassVar[frozenset[str]] = frozenset()
    #: Keys that must be present.
    required: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], ctx: SinkContext) -> Sink:
        """Validate one ``<name>_configs`` entry and build the sink (no I/O here)."""
        raise NotImplementedError

    @classmethod
    def check_keys(cls, config: Mapping[str, Any]) -> None:
        if not isinstance(config, Mapping):
            raise ValueError(f"must be a mapping of options, got {type(config).__name__}")
        unknown = sorted(set(config) - cls.keys)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown key (known: {', '.join(sorted(cls.keys))})")
        missing = sorted(cls.required - set(config))
        if missing:
            raise ValueError(f"{missing[0]}: required")

    def send(self, notification: Notification) -> None:
        """Deliver once; raise `RetryableDelivery` or `PermanentDelivery` on failure."""
        raise NotImplementedError

    def secrets(self) -> list[str]:
        """Strings that must never appear in logs or errors (scrubbed by `redact`)."""
        return []

    def describe(self) -> str:
        """A target description safe to log (no secrets, no URL paths or queries)."""
        return self.name

    def close(self) -> None:
        """Release connections; the sink is not used afterwards."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


SINKS: Registry[type[Sink]] = Registry("sink")


def redact(text: str, secrets: Sequence[str]) -> str:
    """Replace every secret in ``text`` with ``***`` (longest first, so parts cannot leak).

    >>> redact("POST https://hooks.slack.com/services/T0/B0/xyz failed", ["xyz"])
    'POST https://hooks.slack.com/services/T0/B0/*** failed'
    """
    for secret in sorted((s for s in secrets if s and len(s) >= 3), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def url_secrets(url: str) -> list[str]:
    """A secret URL and the parts of it a server may echo back (path, query).

    >>> url_secrets("https://hooks.slack.com/services/T0/B0/xyz")
    ['https://hooks.slack.com/services/T0/B0/xyz', '/services/T0/B0/xyz', 'services/T0/B0/xyz']
    """
    parts = urlsplit(url)
    out = [url]
    if parts.path and parts.path != "/":
        out += [parts.path, parts.path.lstrip("/")]
    if parts.query:
        out.append(parts.query)
    return out


def safe_url(url: str) -> str:
    """Scheme, host and port only: paths and queries of webhook URLs often carry tokens.

    >>> safe_url("https://user:pw@hooks.example.com:8443/services/abc?token=x")
    'https://hooks.example.com:8443'
    """
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def deny_networks(private: bool, extra: Iterable[str] = ()) -> tuple[
        ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The address ranges webhook targets may not be in."""
    names = list(PRIVATE_NETWORKS if private else ()) + list(extra)
    return tuple(ipaddress.ip_network(n, strict=False) for n in names)


def _denied(ip: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == n.version and addr in n for n in networks)


def validate_url(url: Any, key: str, networks: Sequence[
        ipaddress.IPv4Network | ipaddress.IPv6Network] = ()) -> str:
    """Check a webhook URL at start-up: http(s), a host, and not a literal denied address.

    The message names the key but never echoes the URL (it may be a secret, as Slack's is).

    >>> validate_url("ftp://x", "url")
    Traceback (most recent call last):
    ...
    ValueError: url: scheme must be http or https, not 'ftp'
    >>> validate_url("http://10.1.2.3/hook", "url", deny_networks(private=True))
    Traceback (most recent call last):
    ...
    ValueError: url: host 10.1.2.3 is in a denied network (alerts.deny_private_webhooks)
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{key}: must be a URL")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{key}: not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{key}: scheme must be http or https, not {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError(f"{key}: URL has no host")
    if networks and _denied(parts.hostname, networks):
        raise ValueError(f"{key}: host {parts.hostname} is in a denied network "
                         "(alerts.deny_private_webhooks)")
    return url.strip()


def check_resolved_host(url: str, networks: Sequence[
        ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
    """At send time, refuse a host name that resolves into a denied network."""
    if not networks:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise RetryableDelivery(f"cannot resolve {host}: {exc.strerror or exc}") from None
    for info in infos:
        if _denied(str(info[4][0]), networks):
            raise PermanentDelivery(f"{host} resolves to {info[4][0]}, which is in a denied "
                                    "network (alerts.deny_private_webhooks)")


def now_utc() -> datetime:
    return datetime.now(UTC)


def endpoint_text(alert: Alert, side: Literal["source", "destination"]) -> str:
    """A short human name for one end of the alert's edge."""
    end = alert.source if side == "source" else alert.destination
    if end.workload and end.namespace and side == "source":
        return f"{end.namespace}/{end.workload}"
    return (end.service or (f"{end.namespace}/{end.workload}" if end.workload else None)
            or end.principal or end.address or "unknown")


def edge_text(alert: Alert) -> str:
    """``caller -> callee`` as on-call reads it."""
    return f"{endpoint_text(alert, 'source')} -> {endpoint_text(alert, 'destination')}"
