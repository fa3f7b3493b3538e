"""`/api/v1/alerts`: the alert feed."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from alerts.api.deps import get_store
from alerts.api.schemas import AlertList, AlertOut
from meshwatch.store import Store

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

Status = Literal["open", "acknowledged", "resolved", "suppressed"]
Severity = Literal["info", "low", "medium", "high", "critical"]


@router.get("", response_model=AlertList, summary="List alerts, newest first")
def list_alerts(
    store: Annotated[Store, Depends(get_store)],
    status: Annotated[list[Status] | None, Query(description="Filter by status")] = None,
    severity: Annotated[list[Severity] | None, Query(description="Filter by severity")] = None,
    detector: Annotated[list[str] | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertList:
    alerts = store.list_alerts(limit=limit, status=status, severity=severity, detector=detector)
    return AlertList(items=[AlertOut.from_alert(a) for a in alerts], next_cursor=None)


@router.get("/{alert_id}", response_model=AlertOut, summary="One alert with its evidence",
            responses={404: {"description": "No such alert"}})
def get_alert(
    alert_id: Annotated[str, Path(max_length=64)],
    store: Annotated[Store, Depends(get_store)],
) -> AlertOut:
    alert = store.get_alert(alert_id)
    if alert is None:
        raise HTTPException(status_code=404, detail=f"no alert with id {alert_id!r}")
    return AlertOut.from_alert(alert)
