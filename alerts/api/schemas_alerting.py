"""API payloads for silences, deliveries and the Alertmanager integration (pydantic models,
separate from the internal records: DESIGN.md habit 5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class MatcherIn(BaseModel):
    """Alertmanager's structured matcher (camelCase field names are Alertmanager's)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=200)
    value: str = Field(max_length=1000)
    isRegex: bool = False
    isEqual: bool = True


class SilenceIn(BaseModel):
    """A new silence: matchers, who and why, and an end (``duration`` or ``ends_at``)."""

    model_config = ConfigDict(extra="forbid")

    matchers: list[str | MatcherIn] = Field(
        min_length=1, max_length=50,
        description="e.g. ['detector=plaintext_edge', 'dst_namespace=~\"pay.*\"']",
    )
    created_by: str = Field(min_length=1, max_length=200)
    comment: str = Field(min_length=1, max_length=2000)
    duration: str | None = Field(None, description="e.g. 2h, 30m, 1d (or give ends_at)")
    starts_at: datetime | None = None
    ends_at: datetime | None = None


class SilenceOut(BaseModel):
    id: str
    matchers: list[str]
    starts_at: str
    ends_at: str
    created_by: str
    comment: str
    created_at: str
    state: Literal["pending", "active", "expired"]


class SilenceList(BaseModel):
    items: list[SilenceOut]


class DeliveryOut(BaseModel):
    """A notification in the outbox and how its delivery went."""

    notification_id: str
    receiver: str
    integration: str
    sink: str
    group_key: str
    alert_ids: list[str]
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: str
    next_attempt_at: str
    updated_at: str
    last_status: int | None = None
    last_error: str = ""


class DeliveryDetail(DeliveryOut):
    history: list[dict[str, Any]] = Field(default_factory=list, description="Attempts.")


class DeliveryList(BaseModel):
    items: list[DeliveryOut]


class AlertmanagerAlert(BaseModel):
    """One alert of Alertmanager's webhook payload (version 4)."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(max_length=200)
    annotations: dict[str, str] = Field(default_factory=dict, max_length=200)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = ""


class AlertmanagerWebhook(BaseModel):
    """Alertmanager's webhook body, version 4."""

    version: Literal["4"]
    groupKey: str = ""
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AlertmanagerAlert] = Field(max_length=5000)


class IngestResult(BaseModel):
    received: int
    alert_ids: list[str]
    suppressed: int = 0
