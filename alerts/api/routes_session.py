"""`/api/v1/session`: the web UI's login. An API token is exchanged for a session cookie.

The cookie (``mw_session``) holds a separate short-lived session token, never the API token:
HttpOnly (scripts cannot read it), SameSite=Strict (other sites cannot send it), Secure over
HTTPS (``api.cookie_secure``). EventSource sends it too, which is how the SSE stream is
authenticated without a token in a URL. Logging out revokes the session.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from alerts.api.auth import SESSION_COOKIE, Authenticated, FailureLimiter, client_address
from alerts.api.deps import get_settings
from alerts.api.schemas_analyst import LoginIn, SessionOut
from alerts.tokens import TokenStore
from meshwatch.records import format_ts
from meshwatch.settings import Settings

router = APIRouter(prefix="/api/v1/session", tags=["session"])


def _secure(request: Request, settings: Settings) -> bool:
    mode = settings.api.cookie_secure
    return request.url.scheme == "https" if mode == "auto" else mode == "always"


@router.post("", response_model=SessionOut, summary="Log in with an API token (sets a cookie)",
             responses={401: {"description": "Invalid token"}, 429: {"description": (
                 "Too many invalid tokens from this address")}})
def login(body: LoginIn, request: Request, response: Response,
          settings: Annotated[Settings, Depends(get_settings)]) -> SessionOut:
    tokens: TokenStore = request.app.state.tokens
    limiter: FailureLimiter = request.app.state.auth_limiter
    address = client_address(request)
    wait = limiter.retry_after(address)
    if wait is not None:
        raise HTTPException(status_code=429, detail="too many invalid tokens; try again later",
                            headers={"Retry-After": str(wait)})
    token = tokens.verify(body.token.strip(), kind="api")
    if token is None:
        limiter.fail(address)
        raise HTTPException(status_code=401, detail="invalid, expired or revoked API token",
                            headers={"WWW-Authenticate": 'Bearer realm="meshwatch", '
                                                         'error="invalid_token"'})
    session, secret = tokens.create_session(token, settings.api.session_ttl)
    response.set_cookie(SESSION_COOKIE, secret, max_age=int(settings.api.session_ttl),
                        httponly=True, samesite="strict", secure=_secure(request, settings),
                        path="/")
    return SessionOut(name=token.name, role=token.role, via="session",
                      expires_at=format_ts(session.expires_at) if session.expires_at else None)


@router.get("", response_model=SessionOut, summary="Who am I")
def whoami(principal: Authenticated) -> SessionOut:
    return SessionOut(name=principal.name, role=principal.role, via=principal.via)


@router.delete("", status_code=204, summary="Log out (revokes the session, clears the cookie)")
def logout(principal: Authenticated, request: Request, response: Response) -> Response:
    if principal.via == "session":
        request.app.state.tokens.revoke(principal.token_id, by=principal.name)
    response.status_code = 204
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
