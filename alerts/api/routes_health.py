"""`/healthz`: liveness and store reachability."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from alerts.api.deps import get_store
from alerts.api.schemas import Health
from meshwatch.store import Store, StoreError

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(store: Annotated[Store, Depends(get_store)]) -> JSONResponse:
    try:
        store.query("SELECT 1 AS ok")
    except StoreError as exc:
        body = Health(status="degraded", store=store.description, detail=str(exc))
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Health(status="ok", store=store.description).model_dump())
