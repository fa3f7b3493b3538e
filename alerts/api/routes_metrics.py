"""`/metrics`: self-telemetry in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from meshwatch.telemetry import get_telemetry

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
def metrics() -> Response:
    return Response(get_telemetry().prometheus_text(), media_type=CONTENT_TYPE_LATEST)
