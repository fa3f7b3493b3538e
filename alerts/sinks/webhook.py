"""Generic webhook: the notification as JSON, HMAC-signed, with an idempotency key.

Headers a receiver gets:

* ``X-Meshwatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`` (only
  with ``hmac_secret``). Signing the timestamp with the body makes a captured request useless
  later: `verify_signature` rejects one older than its tolerance (5 minutes by default).
* ``Idempotency-Key: <notification id>``: the same notification redelivered (after a crash
  between the POST and its bookkeeping) carries the same key, so a receiver can drop it.
* ``X-Meshwatch-Notification``, ``X-Meshwatch-Receiver``: routing context.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from alerts.sinks.base import (
    SINKS,
    Notification,
    Sink,
    SinkContext,
    safe_url,
    validate_url,
)
from alerts.sinks.http import HttpPoster

SIGNATURE_HEADER = "X-Meshwatch-Signature"
DEFAULT_TOLERANCE = 300.0


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``.

    >>> sign("s3cret", b'{"a":1}', 1700000000)[:16]
    't=1700000000,v1='
    """
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(secret: str, header: str, body: bytes, now: float | None = None,
                     tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Receiver side: the body is authentic and was signed within ``tolerance`` seconds.

    >>> h = sign("s3cret", b"{}", 1700000000)
    >>> verify_signature("s3cret", h, b"{}", now=1700000010)
    True
    >>> verify_signature("s3cret", h, b"{}", now=1700000000 + 3600)  # a replay, an hour later
    False
    >>> verify_signature("other", h, b"{}", now=1700000010)
    False
    """
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


@SINKS.register("webhook")
class WebhookSink(Sink):
    """POST the notification JSON (`Notification.to_dict`) to any HTTP endpoint.

    Config: ``url`` (required, http/https), ``hmac_secret`` (string or ``{secret: NAME}``),
    ``headers`` (extra headers, e.g. an Authorization; their values are treated as secrets),
    ``max_alerts`` (cap per POST, 0 = all).

    >>> sink = WebhookSink.from_config({"url": "http://127.0.0.1:9/hook",
    ...                                 "hmac_secret": "s3cret"}, SinkContext())
    >>> sink
    <WebhookSink webhook http://127.0.0.1:9>
    >>> "s3cret" in repr(sink) or "s3cret" in sink.describe()
    False
    """

    name = "webhook"
    keys: ClassVar[frozenset[str]] = frozenset({"url", "hmac_secret", "headers", "max_alerts"})
    required: ClassVar[frozenset[str]] = frozenset({"url"})

    def __init__(self, url: str, hmac_secret: str | None, headers: Mapping[str, str],
                 max_alerts: int, ctx: SinkContext,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self._secret = hmac_secret
        self.headers = dict(headers)
        self.max_alerts = max_alerts
        self.clock = clock
        self.http = HttpPoster("webhook", ctx.timeout, ctx.deny_networks, self.secrets())

    @classmethod
    def from_config(cls, config: Mapping[str, Any], ctx: SinkContext) -> WebhookSink:
        cls.check_keys(config)
        url = validate_url(config["url"], "url", ctx.deny_networks)
        secret = ctx.secret(config["hmac_secret"], "hmac_secret") \
            if config.get("hmac_secret") is not None else None
        headers = config.get("headers") or {}
        if not isinstance(headers, Mapping):
            raise ValueError("headers: must be a mapping of header name to value")
        resolved = {str(k): ctx.secret(v, f"headers.{k}") for k, v in headers.items()}
        max_alerts = config.get("max_alerts", 0)
        if not isinstance(max_alerts, int) or isinstance(max_alerts, bool) or max_alerts < 0:
            raise ValueError("max_alerts: must be a whole number >= 0")
        return cls(url, secret, resolved, max_alerts, ctx)

    def body(self, notification: Notification) -> bytes:
        payload = notification.to_dict()
        if self.max_alerts and len(payload["alerts"]) > self.max_alerts:
            payload["truncated_alerts"] = len(payload["alerts"]) - self.max_alerts
            payload["alerts"] = payload["alerts"][: self.max_alerts]
        return json.dumps(payload, separators=(",", ":"), default=str).encode()

    def request_headers(self, notification: Notification, body: bytes) -> dict[str, str]:
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": notification.id,
            "X-Meshwatch-Notification": notification.id,
            "X-Meshwatch-Receiver": notification.receiver,
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body, int(self.clock()))
        return headers

    def send(self, notification: Notification) -> None:
        body = self.body(notification)
        self.http.post(self.url, body, self.request_headers(notification, body))

    def secrets(self) -> list[str]:
        return [s for s in [self._secret, *self.headers.values()] if s]

    def describe(self) -> str:
        return f"webhook {safe_url(self.url)}"

    def close(self) -> None:
        self.http.close()
