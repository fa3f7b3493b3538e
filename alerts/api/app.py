"""The app factory: no work at import time; everything the app needs is passed in.

Authentication is applied here, where each router is included (`alerts.api.auth`): every route
but ``/healthz`` and the login page needs a token or a session, with the role each router
needs. CORS is off unless ``api.cors_origins`` lists origins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from alerts.actions import AlertActions, PipelineLink
from alerts.api import (
    auth,
    routes_alerts,
    routes_deliveries,
    routes_feedback,
    routes_graph,
    routes_health,
    routes_integrations,
    routes_metrics,
    routes_runbooks,
    routes_session,
    routes_silences,
    routes_tokens,
    routes_web,
)
from alerts.api.headers import SecureHeaders
from alerts.live import AlertFeed
from alerts.tokens import TokenStore
from meshwatch import __version__
from meshwatch.settings import Settings
from meshwatch.store import Store, StoreError


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    app.state.feed.stop()


def create_app(store: Store, settings: Settings, pipeline: PipelineLink | None = None) -> FastAPI:
    """Build the API/UI application over an open store.

    ``pipeline``: a pipeline running in this process (embedded mode), so analyst actions and
    feedback rules reach it at once; the live feed is ``app.state.feed`` (publish to it).
    """
    app = FastAPI(
        title="meshwatch",
        version=__version__,
        description="Alert feed, service graph and runbooks for meshwatch. Authenticate with "
                    "`Authorization: Bearer <token>` (`meshwatch token create`).",
        docs_url=None, redoc_url=None, openapi_url=None,  # served behind login (routes_web)
        lifespan=_lifespan,
    )
    api = settings.api
    app.state.store = store
    app.state.settings = settings
    app.state.tokens = TokenStore(store)
    app.state.auth_limiter = auth.FailureLimiter(api.auth_failure_limit, api.auth_failure_window)
    app.state.feed = AlertFeed(store, poll_interval=api.stream_poll_interval)
    app.state.actions = AlertActions(store, pipeline, publish=app.state.feed.publish,
                                     feedback_ttl=api.feedback_rule_ttl)
    viewer = [Depends(auth.viewer)]
    app.include_router(routes_health.router)  # public: probes
    app.include_router(routes_session.router)  # login public; the rest authenticate per route
    app.include_router(routes_web.router)  # pages redirect to the login page themselves
    app.include_router(routes_metrics.router, dependencies=viewer)
    app.include_router(routes_alerts.router, dependencies=viewer)  # actions: analyst
    app.include_router(routes_runbooks.router, dependencies=viewer)
    app.include_router(routes_graph.router, dependencies=viewer)
    app.include_router(routes_feedback.router, dependencies=viewer)  # expiring: analyst
    app.include_router(routes_silences.router,
                       dependencies=[Depends(auth.by_method(read="viewer", write="admin"))])
    app.include_router(routes_deliveries.router,
                       dependencies=[Depends(auth.by_method(read="viewer", write="admin"))])
    app.include_router(routes_integrations.router, dependencies=[Depends(auth.integration)])
    app.include_router(routes_tokens.router, dependencies=[Depends(auth.admin)])
    app.add_middleware(SecureHeaders)
    if api.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        # Bearer tokens only: cookies (the UI session) are never sent cross-origin.
        app.add_middleware(CORSMiddleware, allow_origins=list(api.cors_origins),
                           allow_credentials=False, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": f"store unavailable: {exc}"}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        ]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    return app
