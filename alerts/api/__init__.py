"""The analyst-facing HTTP API and web UI (FastAPI), built by `create_app`."""

from alerts.api.app import create_app

__all__ = ["create_app"]
