"""API payloads for the analyst feed: actions, audit, detail, feedback, tokens, sessions
(pydantic models, separate from the internal records: DESIGN.md habit 5)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from alerts.api.schemas import AlertOut

Comment = Field("", max_length=2000, description="Why (shown in the audit trail).")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CommentIn(_In):
    comment: str = Comment


class AssignIn(_In):
    assignee: str = Field(max_length=200, description="Who owns the alert ('' to unassign).")
    comment: str = Comment


class SuppressIn(_In):
    duration: str = Field("24h", max_length=32, description="How long: 30m, 2h, 7d ...")
    comment: str = Field(min_length=1, max_length=2000, description="Why (required).")


class FeedbackIn(_In):
    verdict: Literal["true_positive", "false_positive", "benign_by_design"]
    comment: str = Comment
    expires_in: str | None = Field(
        None, max_length=32,
        description="How long the rule a false-positive/benign verdict creates lasts "
                    "(default: api.feedback_rule_ttl, 30d).")
    score_factor: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Matching findings' score is multiplied by this (0: never alert).")
    resolve: bool = Field(True, description="Also resolve the alert (false-positive/benign).")


class BulkIn(_In):
    action: Literal["acknowledge", "resolve", "reopen"]
    ids: list[str] = Field(min_length=1, max_length=500)
    comment: str = Comment


class AuditOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    action_id: str
    alert_id: str
    ts: str
    actor: str
    action: str
    comment: str = ""


class FeedbackRuleOut(BaseModel):
    id: str
    detector: str
    source: str
    destination: str | None
    score_factor: float
    verdict: str
    alert_id: str
    created_by: str
    comment: str
    created_at: str
    expires_at: str
    state: Literal["active", "expired"]


class ActionOut(BaseModel):
    alert: AlertOut
    audit: AuditOut
    silence_id: str | None = None
    rule: FeedbackRuleOut | None = None


class BulkOut(BaseModel):
    done: list[str]
    failed: dict[str, str] = Field(default_factory=dict, description="id -> why")


class AlertDetail(AlertOut):
    """An alert with what an analyst needs to judge it."""

    assignee: str | None = None
    audit: list[AuditOut] = Field(default_factory=list)
    feedback: dict[str, Any] | None = None
    edge: dict[str, Any] | None = Field(None, description="The alerting edge and its series.")
    neighbourhood: dict[str, Any] = Field(default_factory=dict)


class PrecisionOut(BaseModel):
    detector: str
    true_positive: int
    false_positive: int
    benign_by_design: int
    labelled: int
    precision: float | None = Field(description="TP / (TP + FP + benign); None if unlabelled")


class PrecisionList(BaseModel):
    items: list[PrecisionOut]


class FeedbackRuleList(BaseModel):
    items: list[FeedbackRuleOut]


class TokenIn(_In):
    name: str = Field(min_length=1, max_length=64)
    role: Literal["viewer", "analyst", "admin", "integration"]
    expires_in: str | None = Field(None, max_length=32, description="e.g. 90d; none: never")


class TokenOut(BaseModel):
    id: str
    kind: Literal["api", "session"]
    name: str
    role: str
    created_at: str
    created_by: str
    expires_at: str | None
    revoked_at: str | None
    revoked_by: str | None
    state: Literal["active", "expired", "revoked"]


class TokenCreated(TokenOut):
    token: str = Field(description="The secret: shown once, store it now.")


class TokenList(BaseModel):
    items: list[TokenOut]


class LoginIn(_In):
    token: str = Field(min_length=1, max_length=200)


class SessionOut(BaseModel):
    name: str
    role: str
    via: Literal["bearer", "session"]
    expires_at: str | None = None
