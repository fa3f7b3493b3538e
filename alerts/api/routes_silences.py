"""`/api/v1/silences`: create, list and expire silences."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from alerts.api.deps import get_store
from alerts.api.schemas_alerting import MatcherIn, SilenceIn, SilenceList, SilenceOut
from alerts.matchers import Matcher
from alerts.silences import SilenceStore
from meshwatch.records import parse_ts
from meshwatch.settings import parse_duration
from meshwatch.store import Store

router = APIRouter(prefix="/api/v1/silences", tags=["silences"])


def get_silences(store: Annotated[Store, Depends(get_store)]) -> SilenceStore:
    return SilenceStore(store)


@router.get("", response_model=SilenceList, summary="List silences, newest first")
def list_silences(
    silences: Annotated[SilenceStore, Depends(get_silences)],
    state: Annotated[Literal["pending", "active", "expired"] | None,
                     Query(description="Only silences in this state")] = None,
) -> SilenceList:
    return SilenceList(items=[SilenceOut.model_validate(s.to_dict())
                              for s in silences.list(state)])


@router.post("", response_model=SilenceOut, status_code=201,
             summary="Create a silence (matching alerts are suppressed, not dropped)",
             responses={422: {"description": "Invalid matchers, times or missing fields"}})
def create_silence(
    body: SilenceIn,
    silences: Annotated[SilenceStore, Depends(get_silences)],
) -> SilenceOut:
    matchers = [Matcher.from_dict(m.model_dump()) if isinstance(m, MatcherIn) else m
                for m in _checked(body.matchers)]
    try:
        duration = parse_duration(body.duration) if body.duration is not None else None
        silence = silences.create(
            matchers, created_by=body.created_by, comment=body.comment, duration=duration,
            starts_at=parse_ts(body.starts_at) if body.starts_at else None,
            ends_at=parse_ts(body.ends_at) if body.ends_at else None,
        )
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return SilenceOut.model_validate(silence.to_dict())


def _checked(items: list[str | MatcherIn]) -> list[str | MatcherIn]:
    for i, item in enumerate(items):
        if isinstance(item, MatcherIn):
            try:
                Matcher.from_dict(item.model_dump())
            except ValueError as exc:
                raise HTTPException(status_code=422, detail=f"matchers[{i}]: {exc}") from None
    return items


@router.get("/{silence_id}", response_model=SilenceOut,
            responses={404: {"description": "No such silence"}})
def get_silence(
    silence_id: Annotated[str, Path(max_length=64)],
    silences: Annotated[SilenceStore, Depends(get_silences)],
) -> SilenceOut:
    silence = silences.get(silence_id)
    if silence is None:
        raise HTTPException(status_code=404, detail=f"no silence with id {silence_id!r}")
    return SilenceOut.model_validate(silence.to_dict())


@router.delete("/{silence_id}", response_model=SilenceOut,
               summary="Expire a silence now (the alerts it suppressed open again)",
               responses={404: {"description": "No such silence"}})
def expire_silence(
    silence_id: Annotated[str, Path(max_length=64)],
    silences: Annotated[SilenceStore, Depends(get_silences)],
) -> SilenceOut:
    silence = silences.expire(silence_id)
    if silence is None:
        raise HTTPException(status_code=404, detail=f"no silence with id {silence_id!r}")
    return SilenceOut.model_validate(silence.to_dict())
