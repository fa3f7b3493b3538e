"""API payloads: pydantic models separate from the internal records (DESIGN.md habit 5)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from meshwatch.records import Alert


class EndpointOut(BaseModel):
    workload: str | None = None
    namespace: str | None = None
    principal: str | None = None
    service: str | None = None
    address: str | None = None


class AlertOut(BaseModel):
    """An alert in the contract's JSON shape."""

    id: str
    fingerprint: str
    detector: str
    severity: Literal["info", "low", "medium", "high", "critical"]
    title: str
    summary: str
    source: EndpointOut
    destination: EndpointOut
    first_seen: str = Field(description="RFC 3339 UTC")
    last_seen: str = Field(description="RFC 3339 UTC")
    count: int
    score: float
    mitre: list[str]
    runbook_url: str
    evidence: list[dict[str, Any]]
    status: Literal["open", "acknowledged", "resolved", "suppressed"]
    labels: dict[str, str]

    @classmethod
    def from_alert(cls, alert: Alert) -> AlertOut:
        return cls.model_validate(alert.to_dict())


class AlertList(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    store: str
    detail: str | None = None
