"""`/api/v1/deliveries`: the outbox: failed (and pending) notifications, and re-queueing."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from alerts.api.deps import get_store
from alerts.api.schemas_alerting import DeliveryDetail, DeliveryList, DeliveryOut
from alerts.outbox import FAILED, Outbox
from meshwatch.store import Store

router = APIRouter(prefix="/api/v1/deliveries", tags=["deliveries"])


def get_outbox(store: Annotated[Store, Depends(get_store)]) -> Outbox:
    return Outbox(store)


def _out(row: dict[str, Any]) -> DeliveryOut:
    return DeliveryOut.model_validate(row)


@router.get("/failed", response_model=DeliveryList,
            summary="Notifications that failed permanently (4xx) or were given up on")
def list_failed(
    outbox: Annotated[Outbox, Depends(get_outbox)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryList:
    return DeliveryList(items=[_out(r) for r in outbox.list(FAILED, limit)])


@router.get("", response_model=DeliveryList, summary="Notifications in the outbox")
def list_deliveries(
    outbox: Annotated[Outbox, Depends(get_outbox)],
    state: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryList:
    return DeliveryList(items=[_out(r) for r in outbox.list(state, limit)])


@router.get("/{notification_id}", response_model=DeliveryDetail,
            summary="One notification with its delivery attempts",
            responses={404: {"description": "No such notification"}})
def get_delivery(
    notification_id: Annotated[str, Path(max_length=64)],
    outbox: Annotated[Outbox, Depends(get_outbox)],
) -> DeliveryDetail:
    row = _one(outbox, notification_id)
    return DeliveryDetail.model_validate({**row, "history": outbox.attempts(notification_id)})


def _one(outbox: Outbox, notification_id: str) -> dict[str, Any]:
    row = outbox.row(notification_id)
    if row is None:
        raise HTTPException(status_code=404,
                            detail=f"no notification with id {notification_id!r}")
    return row


@router.post("/{notification_id}/retry", response_model=DeliveryOut,
             summary="Re-queue a failed notification (the delivery worker picks it up "
                     "within seconds)",
             responses={404: {"description": "No such notification"},
                        409: {"description": "The notification has not failed"}})
def retry_delivery(
    notification_id: Annotated[str, Path(max_length=64)],
    outbox: Annotated[Outbox, Depends(get_outbox)],
) -> DeliveryOut:
    current = _one(outbox, notification_id)
    if current["state"] != FAILED:
        raise HTTPException(status_code=409, detail=(
            f"notification {notification_id!r} is {current['state']}, not failed"))
    outbox.retry(notification_id)
    return _out(_one(outbox, notification_id))
