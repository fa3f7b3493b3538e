"""The web UI (served by the API itself, no build step) and the OpenAPI docs.

Pages are static HTML + ES modules under ``alerts/web``: they fetch everything from the API and
insert it as text, never as HTML (paths, user agents, SNI and principals are attacker-chosen).
Without a valid session a page redirects to the login page; the login page and the two files
it needs are the only public parts (the ``/healthz`` probe aside). ``/docs`` is Swagger UI
from a vendored copy (no CDN), behind the same login.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials

from alerts.api.auth import Principal, Viewer, authenticate

router = APIRouter(include_in_schema=False)

PUBLIC_STATIC = frozenset({"style.css", "login.js"})
_MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".svg": "image/svg+xml", ".png": "image/png", ".txt": "text/plain; charset=utf-8"}


def web_root() -> Path:
    return Path(str(resources.files("alerts") / "web"))


def _principal(request: Request) -> Principal | None:
    """The caller if authenticated (bearer or session), None if not (401); 403/429 raise."""
    header = request.headers.get("authorization", "")
    creds = None
    if header[:7].lower() == "bearer ":
        creds = HTTPAuthorizationCredentials(scheme="Bearer", credentials=header[7:].strip())
    try:
        return authenticate(request, creds)
    except HTTPException as exc:
        if exc.status_code == 401:
            return None
        raise


def _page(request: Request, name: str) -> Response:
    if _principal(request) is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", status_code=303)
    return FileResponse(web_root() / name, media_type=_MEDIA[".html"])


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=303)


@router.get("/ui")
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=303)


@router.get("/ui/login")
def login_page() -> FileResponse:
    return FileResponse(web_root() / "login.html", media_type=_MEDIA[".html"])


@router.get("/ui/")
def feed_page(request: Request) -> Response:
    return _page(request, "feed.html")


@router.get("/ui/alerts/{alert_id}")
def alert_page(request: Request, alert_id: str) -> Response:
    return _page(request, "alert.html")


@router.get("/ui/graph")
def graph_page(request: Request) -> Response:
    return _page(request, "graph.html")


@router.get("/ui/static/{path:path}")
def static(request: Request, path: str) -> Response:
    root = (web_root() / "static").resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file() or target.suffix not in _MEDIA:
        raise HTTPException(status_code=404, detail="no such file")
    if path not in PUBLIC_STATIC and _principal(request) is None:
        raise HTTPException(status_code=401, detail="log in at /ui/login",
                            headers={"WWW-Authenticate": 'Bearer realm="meshwatch"'})
    return FileResponse(target, media_type=_MEDIA[target.suffix],
                        headers={"Cache-Control": "private, no-cache"})


@router.get("/docs")
def docs(request: Request) -> Response:
    return _page(request, "docs.html")


@router.get("/openapi.json")
def openapi(request: Request, _: Viewer) -> JSONResponse:
    return JSONResponse(request.app.openapi())

