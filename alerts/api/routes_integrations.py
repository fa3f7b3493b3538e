"""`/api/v1/integrations/alertmanager`: accept Alertmanager's webhook (payload version 4)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends

from alerts import alertmanager_in
from alerts.api.deps import get_settings, get_store
from alerts.api.schemas_alerting import AlertmanagerWebhook, IngestResult
from alerts.runbooks import RunbookLinks
from alerts.silences import SilenceStore
from meshwatch.settings import Settings
from meshwatch.store import Store

router = APIRouter(prefix="/api/v1/integrations", tags=["integrations"])


@router.post("/alertmanager", response_model=IngestResult,
             summary="Receive Alertmanager webhook notifications as meshwatch alerts",
             description=(
                 "Point an Alertmanager `webhook_configs` receiver here. Each alert becomes "
                 "a meshwatch alert with detector `alertmanager` (firing: open, resolved: "
                 "resolved), stored and shown in the feed; silences apply; nothing is "
                 "re-notified."))
def receive_alertmanager(
    payload: AlertmanagerWebhook,
    store: Annotated[Store, Depends(get_store)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> IngestResult:
    runbooks = RunbookLinks(settings.alerts.public_url, settings.alerts.runbook_base_url)
    now = datetime.now(UTC)
    raw = payload.model_dump()
    alerts = [alertmanager_in.to_alert(item, raw, runbooks, now) for item in raw["alerts"]]
    latest = {a.id: a for a in alerts}
    stored = store.alert_states(list(latest))
    merged = alertmanager_in.merge(latest.values(), stored, SilenceStore(store).active())
    store.upsert_alerts(merged)
    return IngestResult(received=len(payload.alerts), alert_ids=[a.id for a in merged],
                        suppressed=sum(a.status == "suppressed" for a in merged))
