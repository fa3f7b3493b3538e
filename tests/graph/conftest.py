"""Stores holding the synthetic mesh of `tests.graph.mesh` (one per test module).

chdb opens one store directory per process, so a module's store is closed before the next
module opens its own; CLI tests get a closed store's path because the CLI opens it itself.
"""

from __future__ import annotations

import pytest

from meshwatch.settings import StoreSettings
from meshwatch.store import Store
from tests.graph.mesh import Truth, generate, populate


@pytest.fixture(scope="module")
def truth() -> Truth:
    return generate()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, truth):
    store = Store.open(StoreSettings(path=tmp_path_factory.mktemp("mesh") / "data"))
    try:
        populate(store, truth)
        yield store
    finally:
        store.close()


@pytest.fixture(scope="module")
def mesh_path(tmp_path_factory, truth):
    path = tmp_path_factory.mktemp("mesh-cli") / "data"
    store = Store.open(StoreSettings(path=path))
    try:
        populate(store, truth)
    finally:
        store.close()
    return path
