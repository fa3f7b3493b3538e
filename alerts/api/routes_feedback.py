"""`/api/v1/detectors/precision` and `/api/v1/feedback/rules`: what analysts' verdicts say
about each detector, and the rules false positives created (visible, and expirable early)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request

from alerts.api.auth import Analyst
from alerts.api.deps import get_store
from alerts.api.schemas_analyst import (
    FeedbackRuleList,
    FeedbackRuleOut,
    PrecisionList,
    PrecisionOut,
)
from alerts.feedback import FeedbackStore
from meshwatch.store import Store

router = APIRouter(prefix="/api/v1", tags=["feedback"])


def get_feedback(store: Annotated[Store, Depends(get_store)]) -> FeedbackStore:
    return FeedbackStore(store)


@router.get("/detectors/precision", response_model=PrecisionList,
            summary="Per-detector precision over alerts with analyst feedback")
def precision(feedback: Annotated[FeedbackStore, Depends(get_feedback)]) -> PrecisionList:
    return PrecisionList(items=[PrecisionOut.model_validate(r) for r in feedback.precision()])


@router.get("/feedback/rules", response_model=FeedbackRuleList,
            summary="Rules created by false-positive / benign verdicts")
def list_rules(feedback: Annotated[FeedbackStore, Depends(get_feedback)],
               state: Literal["active", "expired"] | None = None) -> FeedbackRuleList:
    return FeedbackRuleList(items=[FeedbackRuleOut.model_validate(r.to_dict())
                                   for r in feedback.rules(state)])


@router.delete("/feedback/rules/{rule_id}", response_model=FeedbackRuleOut,
               summary="Expire a rule now (matching findings alert again)",
               responses={404: {"description": "No such rule"}})
def expire_rule(rule_id: Annotated[str, Path(pattern=r"^fr-[0-9a-f]{16}$")], _: Analyst,
                request: Request,
                feedback: Annotated[FeedbackStore, Depends(get_feedback)]) -> FeedbackRuleOut:
    rule = feedback.expire(rule_id)
    if rule is None:
        raise HTTPException(status_code=404, detail=f"no feedback rule with id {rule_id!r}")
    pipeline = request.app.state.actions.pipeline
    if pipeline is not None:
        pipeline.feedback_rules.add(rule)
    return FeedbackRuleOut.model_validate(rule.to_dict())
