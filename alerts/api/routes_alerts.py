"""`/api/v1/alerts`: the alert feed, one alert in context, analyst actions, the live stream.

Reads need the viewer role (applied where the app includes this router); actions need analyst.
Times accept RFC 3339 or ``-15m``-style relative times; bad input is a 422 with a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse

from alerts import alert_graph
from alerts.actions import ActionError, ActionResult, AlertActions
from alerts.api.auth import Analyst, Viewer
from alerts.api.deps import get_settings, get_store
from alerts.api.schemas import AlertList, AlertOut
from alerts.api.schemas_analyst import (
    ActionOut,
    AlertDetail,
    AssignIn,
    AuditOut,
    BulkIn,
    BulkOut,
    CommentIn,
    FeedbackIn,
    FeedbackRuleOut,
    SuppressIn,
)
from alerts.feed_query import AlertFilter, CursorError, list_page
from alerts.feedback import FeedbackStore
from alerts.live import AlertFeed, keepalive, sse_event
from meshwatch.graphs.timerange import TIME_HELP, RangeError, parse_time
from meshwatch.records import Alert
from meshwatch.settings import Settings, parse_duration
from meshwatch.store import Store, StoreError

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

Status = Literal["open", "acknowledged", "resolved", "suppressed"]
Severity = Literal["info", "low", "medium", "high", "critical"]
SortKey = Literal["last_seen", "first_seen", "severity", "count", "score"]
AlertId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
_Text = Annotated[str | None, Query(max_length=256)]
_Time = Annotated[str | None, Query(max_length=64, description=f"Time: {TIME_HELP}.")]


def get_actions(request: Request) -> AlertActions:
    return request.app.state.actions


def get_feed(request: Request) -> AlertFeed:
    return request.app.state.feed


def _time(value: str | None, name: str, now: datetime) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_time(value, now)
    except RangeError as exc:
        raise HTTPException(status_code=422, detail=f"{name}: {exc}") from None


def _duration(value: str, name: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=f"{name}: {exc}") from None
    if seconds <= 0:
        raise HTTPException(status_code=422, detail=f"{name}: must be positive")
    return seconds


@router.get("", response_model=AlertList, summary="List alerts (filters, sorting, cursor pages)")
def list_alerts(
    store: Annotated[Store, Depends(get_store)],
    status: Annotated[list[Status] | None, Query(description="Filter by status")] = None,
    severity: Annotated[list[Severity] | None, Query(description="Filter by severity")] = None,
    detector: Annotated[list[str] | None, Query(max_length=64)] = None,
    namespace: Annotated[str | None, Query(max_length=253, description=(
        "Source or destination namespace"))] = None,
    source: Annotated[str | None, Query(max_length=256, description=(
        "Substring of the caller's workload, principal, namespace or address"))] = None,
    destination: Annotated[str | None, Query(max_length=256, description=(
        "Substring of the callee's service, workload or namespace"))] = None,
    since: _Time = None,
    until: _Time = None,
    q: Annotated[str | None, Query(max_length=256, description=(
        "Free text over title and summary (or an alert id / fingerprint)"))] = None,
    assignee: _Text = None,
    sort: SortKey = "last_seen",
    order: Literal["desc", "asc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048, description=(
        "next_cursor of the previous page"))] = None,
) -> AlertList:
    now = datetime.now(UTC)
    start, end = _time(since, "since", now), _time(until, "until", now)
    if start is not None and end is not None and end <= start:
        raise HTTPException(status_code=422, detail="until: must be later than since")
    filters = AlertFilter(
        status=tuple(status or ()), severity=tuple(severity or ()), detector=tuple(detector or ()),
        namespace=namespace or None, source=source or None, destination=destination or None,
        since=start, until=end, q=q or None, assignee=assignee or None)
    try:
        page = list_page(store, filters, sort=sort, order=order, limit=limit, cursor=cursor)
    except CursorError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return AlertList(items=[AlertOut.from_alert(a) for a in page.alerts],
                     next_cursor=page.next_cursor)


@router.get("/stream", summary="Live alert changes (Server-Sent Events)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": (
                "`event: alert` with `{kind: opened|updated|status, alert}`; `: keep-alive` "
                "comments; `event: reset` when the client fell behind (reload the list).")}})
async def stream(
    request: Request,
    principal: Viewer,
    feed: Annotated[AlertFeed, Depends(get_feed)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> StreamingResponse:
    sub = feed.subscribe()
    if sub is None:
        raise HTTPException(status_code=503, detail="too many live streams; try again later")
    tokens = request.app.state.tokens
    interval = settings.api.stream_keepalive

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 3000\n: connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(sub.queue.get(), timeout=interval)
                except TimeoutError:
                    # Sessions and tokens can be revoked while a stream is open.
                    try:
                        active = await asyncio.to_thread(tokens.is_active, principal.token_id)
                    except StoreError:  # the store went away (shutdown): end the stream
                        return
                    if not active:
                        return
                    yield keepalive()
                    continue
                if event is None:
                    return
                yield sse_event(event)
        finally:
            feed.unsubscribe(sub)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/edges", summary="Edges with lateral-movement alerts in a range (graph marks)")
def lateral_edges(
    store: Annotated[Store, Depends(get_store)],
    since: _Time = "-24h",
    until: _Time = "now",
    detector: Annotated[list[str] | None, Query(max_length=64)] = None,
) -> dict[str, object]:
    now = datetime.now(UTC)
    start = _time(since, "since", now) or now
    end = _time(until, "until", now) or now
    if end <= start:
        raise HTTPException(status_code=422, detail="until: must be later than since")
    detectors = tuple(detector) if detector else alert_graph.LATERAL_DETECTORS
    return {"detectors": list(detectors),
            "edges": alert_graph.lateral_marks(store, start, end, detectors)}


def _alert(store: Store, alert_id: str) -> Alert:
    alert = store.get_alert(alert_id)
    if alert is None:
        raise HTTPException(status_code=404, detail=f"no alert with id {alert_id!r}")
    return alert


@router.get("/{alert_id}", response_model=AlertDetail,
            summary="One alert with evidence, runbook, edge series, neighbourhood and audit",
            responses={404: {"description": "No such alert"}})
def get_alert(
    alert_id: AlertId,
    store: Annotated[Store, Depends(get_store)],
    actions: Annotated[AlertActions, Depends(get_actions)],
) -> AlertDetail:
    alert = _alert(store, alert_id)
    return AlertDetail.model_validate({
        **alert.to_dict(),
        "assignee": alert.labels.get("assignee"),
        "audit": [e.to_dict() for e in actions.audit(alert.id)],
        "feedback": FeedbackStore(store).verdict(alert.id),
        "edge": alert_graph.edge_series(store, alert),
        "neighbourhood": alert_graph.neighbourhood(store, alert),
    })


@router.get("/{alert_id}/audit", response_model=list[AuditOut],
            summary="Who did what to the alert, oldest first")
def get_audit(
    alert_id: AlertId,
    store: Annotated[Store, Depends(get_store)],
    actions: Annotated[AlertActions, Depends(get_actions)],
) -> list[AuditOut]:
    _alert(store, alert_id)
    return [AuditOut.model_validate(e.to_dict()) for e in actions.audit(alert_id)]


def _out(result: ActionResult) -> ActionOut:
    rule = FeedbackRuleOut.model_validate(result.rule.to_dict()) if result.rule else None
    return ActionOut(alert=AlertOut.from_alert(result.alert),
                     audit=AuditOut.model_validate(result.audit.to_dict()),
                     silence_id=result.silence_id, rule=rule)


def _act(fn: object) -> ActionResult:
    try:
        return fn()  # type: ignore[operator]
    except ActionError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


_ACTION_RESPONSES: dict[int | str, dict[str, str]] = {
    404: {"description": "No such alert"},
    409: {"description": "The action does not apply to the alert's current status"},
}


@router.post("/{alert_id}/acknowledge", response_model=ActionOut, responses=_ACTION_RESPONSES)
def acknowledge(alert_id: AlertId, body: CommentIn, principal: Analyst,
                store: Annotated[Store, Depends(get_store)],
                actions: Annotated[AlertActions, Depends(get_actions)]) -> ActionOut:
    alert = _alert(store, alert_id)
    return _out(_act(lambda: actions.acknowledge(alert, principal.name, body.comment)))


@router.post("/{alert_id}/assign", response_model=ActionOut, responses=_ACTION_RESPONSES)
def assign(alert_id: AlertId, body: AssignIn, principal: Analyst,
           store: Annotated[Store, Depends(get_store)],
           actions: Annotated[AlertActions, Depends(get_actions)]) -> ActionOut:
    alert = _alert(store, alert_id)
    return _out(_act(lambda: actions.assign(alert, principal.name, body.assignee.strip(),
                                            body.comment)))


@router.post("/{alert_id}/resolve", response_model=ActionOut, responses=_ACTION_RESPONSES)
def resolve(alert_id: AlertId, body: CommentIn, principal: Analyst,
            store: Annotated[Store, Depends(get_store)],
            actions: Annotated[AlertActions, Depends(get_actions)]) -> ActionOut:
    alert = _alert(store, alert_id)
    return _out(_act(lambda: actions.resolve(alert, principal.name, body.comment)))


@router.post("/{alert_id}/reopen", response_model=ActionOut, responses=_ACTION_RESPONSES)
def reopen(alert_id: AlertId, body: CommentIn, principal: Analyst,
           store: Annotated[Store, Depends(get_store)],
           actions: Annotated[AlertActions, Depends(get_actions)]) -> ActionOut:
    alert = _alert(store, alert_id)
    return _out(_act(lambda: actions.reopen(alert, principal.name, body.comment)))


@router.post("/{alert_id}/suppress", response_model=ActionOut, responses=_ACTION_RESPONSES,
             summary="Suppress the alert with a silence on its fingerprint")
def suppress(alert_id: AlertId, body: SuppressIn, principal: Analyst,
             store: Annotated[Store, Depends(get_store)],
             actions: Annotated[AlertActions, Depends(get_actions)]) -> ActionOut:
    alert = _alert(store, alert_id)
    seconds = _duration(body.duration, "duration")
    return _out(_act(lambda: actions.suppress(alert, principal.name, seconds, body.comment)))


@router.post("/{alert_id}/feedback", response_model=ActionOut, responses=_ACTION_RESPONSES,
             summary="Label the alert; false positives lower the pattern's future score")
def feedback(alert_id: AlertId, body: FeedbackIn, principal: Analyst,
             store: Annotated[Store, Depends(get_store)],
             actions: Annotated[AlertActions, Depends(get_actions)]) -> ActionOut:
    alert = _alert(store, alert_id)
    ttl = _duration(body.expires_in, "expires_in") if body.expires_in else None
    return _out(_act(lambda: actions.feedback(alert, principal.name, body.verdict,
                                              body.comment, ttl=ttl,
                                              score_factor=body.score_factor,
                                              resolve=body.resolve)))


@router.post("/bulk", response_model=BulkOut, summary="Acknowledge/resolve/reopen many alerts")
def bulk(body: BulkIn, principal: Analyst,
         store: Annotated[Store, Depends(get_store)],
         actions: Annotated[AlertActions, Depends(get_actions)]) -> BulkOut:
    out = BulkOut(done=[])
    for alert_id in dict.fromkeys(body.ids):
        alert = store.get_alert(alert_id) if len(alert_id) <= 64 else None
        if alert is None:
            out.failed[alert_id[:64]] = "no such alert"
            continue
        fn = getattr(actions, body.action)
        try:
            fn(alert, principal.name, body.comment)
        except ValueError as exc:
            out.failed[alert_id] = str(exc)
            continue
        out.done.append(alert_id)
    return out
