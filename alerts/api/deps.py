"""Request-scoped dependencies: the store and settings the app factory was given."""

from __future__ import annotations

from fastapi import Request

from meshwatch.settings import Settings
from meshwatch.store import Store


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings
