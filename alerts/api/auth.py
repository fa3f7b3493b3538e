"""Who is calling, and may they: bearer tokens and session cookies, roles, failure limits.

Every route but ``/healthz`` (and the login page) depends on `authenticate`, added where the
app factory includes the routers. Credentials are an ``Authorization: Bearer mwt_...`` header
(API clients) or the ``mw_session`` cookie a login sets (the web UI, and EventSource, which
cannot send headers). Answers: no or bad credentials 401 with ``WWW-Authenticate: Bearer``;
a role too low 403; too many bad credentials from one address 429. Tokens are never logged.

Roles: ``viewer`` reads everything but tokens; ``analyst`` also acts on alerts and gives
feedback; ``admin`` also manages silences, tokens and deliveries. ``integration`` may only
post to ``/api/v1/integrations/*`` (the Alertmanager webhook), as may analysts and admins.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlparse

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from alerts.tokens import Token, TokenStore

SESSION_COOKIE = "mw_session"
RANK = {"viewer": 1, "analyst": 2, "admin": 3}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_bearer = HTTPBearer(auto_error=False, description="An API token: `meshwatch token create`.")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: the token's id, name (the audit trail's "who") and role."""

    token_id: str
    name: str
    role: str
    via: Literal["bearer", "session"]

    def may(self, needed: str) -> bool:
        """Whether this role covers ``needed`` (integration covers only itself).

        >>> Principal("t", "ana", "analyst", "bearer").may("viewer")
        True
        >>> Principal("t", "am", "integration", "bearer").may("viewer")
        False
        """
        if needed == "integration":
            return self.role in ("integration", "analyst", "admin")
        return RANK.get(self.role, 0) >= RANK[needed]


class FailureLimiter:
    """At most ``limit`` bad credentials per client address per ``window`` seconds.

    Bounded: at most ``max_addresses`` addresses are tracked (the oldest are forgotten).

    >>> lim = FailureLimiter(limit=2, window=60)
    >>> lim.fail("a", now=0); lim.fail("a", now=1); lim.retry_after("a", now=2)
    58
    >>> lim.retry_after("a", now=61), lim.retry_after("b", now=2)
    (None, None)
    """

    def __init__(self, limit: int = 20, window: float = 60.0, max_addresses: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def fail(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._failures.pop(address, None) or deque(maxlen=self.limit)
            times.append(now)
            self._failures[address] = times  # re-inserted: dict order is recency
            while len(self._failures) > self.max_addresses:
                self._failures.pop(next(iter(self._failures)))

    def retry_after(self, address: str, now: float | None = None) -> int | None:
        """Seconds until ``address`` may try again, or None if it is not limited."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._failures.get(address)
            if not times or len(times) < self.limit:
                return None
            wait = times[0] + self.window - now
        return math.ceil(wait) if wait > 0 else None


def _unauthorized(detail: str, invalid: bool) -> HTTPException:
    challenge = 'Bearer realm="meshwatch"'
    if invalid:
        challenge += ', error="invalid_token"'
    return HTTPException(status_code=401, detail=detail,
                         headers={"WWW-Authenticate": challenge})


def _same_origin(request: Request) -> bool:
    """Whether a cookie-carrying write comes from our own pages (CSRF defence in depth on top
    of SameSite=Strict): its Origin, else Referer, must name this host."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return False
    return urlparse(source).netloc == request.headers.get("host", "")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from the bearer token or else the session cookie; 401/429 otherwise."""
    tokens: TokenStore = request.app.state.tokens
    limiter: FailureLimiter = request.app.state.auth_limiter
    address = client_address(request)
    wait = limiter.retry_after(address)
    if wait is not None:
        raise HTTPException(status_code=429, detail=(
            "too many invalid credentials from this address; try again later"),
            headers={"Retry-After": str(wait)})
    token: Token | None
    if credentials is not None:
        token = tokens.verify(credentials.credentials, kind="api")
        via: Literal["bearer", "session"] = "bearer"
        if token is None:
            limiter.fail(address)
            raise _unauthorized("invalid, expired or revoked API token", invalid=True)
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            raise _unauthorized("authentication required: send 'Authorization: Bearer <token>' "
                                "(meshwatch token create) or log in at /ui/login",
                                invalid=False)
        token = tokens.verify(cookie, kind="session")
        via = "session"
        if token is None:
            limiter.fail(address)
            raise _unauthorized("session expired or revoked; log in again", invalid=True)
        if request.method not in SAFE_METHODS and not _same_origin(request):
            raise HTTPException(status_code=403, detail=(
                "cross-site request refused: a session may only write from this site's pages"))
    principal = Principal(token.id, token.name, token.role, via)
    request.state.principal = principal
    return principal


Authenticated = Annotated[Principal, Depends(authenticate)]


def require(role: str) -> Callable[[Principal], Principal]:
    """A dependency that lets ``role`` (or a higher one) through and answers 403 otherwise."""

    def check(principal: Authenticated) -> Principal:
        if not principal.may(role):
            raise HTTPException(status_code=403, detail=(
                f"this needs the {role} role; token {principal.name!r} has {principal.role}"))
        return principal

    check.__name__ = f"require_{role}"
    return check


def by_method(read: str, write: str) -> Callable[[Request, Principal], Principal]:
    """``read`` for GET/HEAD, ``write`` for everything else: one dependency for a router whose
    reads and writes need different roles (silences, deliveries)."""

    def check(request: Request, principal: Authenticated) -> Principal:
        needed = read if request.method in SAFE_METHODS else write
        if not principal.may(needed):
            raise HTTPException(status_code=403, detail=(
                f"this needs the {needed} role; token {principal.name!r} has {principal.role}"))
        return principal

    check.__name__ = f"require_{read}_or_{write}"
    return check


viewer = require("viewer")
analyst = require("analyst")
admin = require("admin")
integration = require("integration")
Viewer = Annotated[Principal, Depends(viewer)]
Analyst = Annotated[Principal, Depends(analyst)]
Admin = Annotated[Principal, Depends(admin)]
