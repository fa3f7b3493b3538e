"""`/runbooks/{detector}`: the built-in runbooks as HTML."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse

from alerts import runbooks

router = APIRouter(tags=["runbooks"])


@router.get("/runbooks", summary="Detectors with a built-in runbook")
def list_runbooks() -> dict[str, list[str]]:
    return {"runbooks": runbooks.available()}


@router.get("/runbooks/{detector}", response_class=HTMLResponse,
            responses={404: {"description": "No runbook for that detector"}})
def get_runbook(detector: str) -> HTMLResponse:
    page = runbooks.html(detector)
    if page is None:
        raise HTTPException(status_code=404, detail=f"no runbook for detector {detector!r}")
    return HTMLResponse(page)
