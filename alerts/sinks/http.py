"""One HTTP POST attempt with the status mapping every HTTP sink shares.

2xx is delivered; 408, 425, 429 and 5xx are retryable (honouring ``Retry-After``); any other
4xx is permanent; redirects are not followed (a redirect could lead past the deny-list) and are
permanent. Transport errors and time-outs are retryable. Messages name the sink and the redacted
target (scheme, host, port), never a path, query, header value or body secret.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from alerts.sinks.base import (
    USER_AGENT,
    PermanentDelivery,
    RetryableDelivery,
    check_resolved_host,
    redact,
    safe_url,
)

RETRYABLE_STATUS = frozenset({408, 425, 429})


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    >>> parse_retry_after("120"), parse_retry_after(None), parse_retry_after("soon")
    (120.0, None, None)
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT",
    ...                   now=datetime(2015, 10, 21, 7, 28, tzinfo=UTC))
    10.0
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped.

    >>> one_line("oops\\n2026-01-01 CRITICAL forged\\x1b[31m")
    'oops\\\\n2026-01-01 CRITICAL forged\\\\x1b[31m'
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def quiet_http_logs() -> None:
    """httpx logs every request line at INFO, full URL included: a Slack webhook URL is the
    credential itself, so those loggers are held at WARNING once a sink sends."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


class HttpPoster:
    """An HTTP client for one sink: time-outs, no redirects, deny-list re-checked per send."""

    def __init__(self, what: str, timeout: float, networks: Sequence[
            ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
            secrets: Sequence[str] = ()) -> None:
        self.what = what
        self.timeout = timeout
        self.networks = tuple(networks)
        self.secrets = list(secrets)
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            quiet_http_logs()
            self._client = httpx.Client(timeout=self.timeout, follow_redirects=False,
                                        headers={"User-Agent": USER_AGENT}, trust_env=False)
        return self._client

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        target = f"{self.what} {safe_url(url)}"
        check_resolved_host(url, self.networks)
        try:
            response = self.client.post(url, content=body, headers=dict(headers))
        except httpx.TimeoutException:
            raise RetryableDelivery(f"{target}: timed out after {self.timeout:g} s") from None
        except (httpx.TransportError, OSError) as exc:
            detail = redact(str(exc) or type(exc).__name__, [*self.secrets, url])
            raise RetryableDelivery(f"{target}: {type(exc).__name__}: {detail}") from None
        self.check(response, target)
        return response

    def check(self, response: httpx.Response, target: str) -> None:
        code = response.status_code
        if 200 <= code < 300:
            return
        # The body is the receiver's text: one line, control characters escaped, so a hostile
        # or broken receiver cannot forge log lines or terminal escapes in our logs.
        body = one_line(redact(response.text[:200].strip(), self.secrets))
        suffix = f": {body}" if body else ""
        if code >= 500 or code in RETRYABLE_STATUS:
            raise RetryableDelivery(f"{target}: HTTP {code}{suffix}",
                                    retry_after=parse_retry_after(
                                        response.headers.get("retry-after")),
                                    status=code)
        if 300 <= code < 400:
            raise PermanentDelivery(f"{target}: HTTP {code} redirect (redirects are not "
                                    "followed; configure the final URL)", status=code)
        raise PermanentDelivery(f"{target}: HTTP {code}{suffix}", status=code)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
