"""ClickHouse storage (embedded chdb or a server) behind one interface."""

from meshwatch.store.backend import StoreError, StoreUnavailable
from meshwatch.store.store import Store

__all__ = ["Store", "StoreError", "StoreUnavailable"]
