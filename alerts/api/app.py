"""The app factory: no work at import time; everything the app needs is passed in."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from alerts.api import (
    routes_alerts,
    routes_deliveries,
    routes_graph,
    routes_health,
    routes_integrations,
    routes_metrics,
    routes_runbooks,
    routes_silences,
)
from meshwatch import __version__
from meshwatch.settings import Settings
from meshwatch.store import Store, StoreError


def create_app(store: Store, settings: Settings) -> FastAPI:
    """Build the API/UI application over an open store."""
    app = FastAPI(
        title="meshwatch",
        version=__version__,
        description="Alert feed, service graph and runbooks for meshwatch.",
    )
    app.state.store = store
    app.state.settings = settings
    app.include_router(routes_health.router)
    app.include_router(routes_metrics.router)
    app.include_router(routes_alerts.router)
    app.include_router(routes_runbooks.router)
    app.include_router(routes_graph.router)
    app.include_router(routes_silences.router)
    app.include_router(routes_deliveries.router)
    app.include_router(routes_integrations.router)

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
