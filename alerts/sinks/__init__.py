"""Alert sinks: importing this package registers every built-in sink in `SINKS`."""

from alerts.sinks import alertmanager, file, ocsf, pagerduty, slack, webhook  # noqa: F401
from alerts.sinks.base import (
    SINKS,
    DeliveryError,
    Notification,
    PermanentDelivery,
    RetryableDelivery,
    Sink,
    SinkContext,
)

__all__ = [
    "SINKS", "DeliveryError", "Notification", "PermanentDelivery", "RetryableDelivery", "Sink",
    "SinkContext",
]
